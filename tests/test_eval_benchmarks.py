"""Benchmark loaders: every offline copy loads with the README's row count and non-empty golds;
hub fallback and its errors; deterministic, nested subsets under eval.limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from acm_exp.config import register_configs
from acm_exp.errors import ConfigError
from acm_exp.eval.benchmarks import load_benchmark, read_rows, subset_indices

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
README_COUNTS = {
    "gsm8k": 1319,
    "math500": 500,
    "aime24": 30,
    "minerva_math": 272,
    "olympiadbench": 675,
    "college_math": 2818,
    "humaneval_pro": 164,
}


@pytest.fixture(scope="module")
def benchmarks():
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("config", overrides=["eval=paper"]).eval.benchmarks


@pytest.mark.parametrize("name, count", sorted(README_COUNTS.items()))
def test_offline_copies_load_completely(name, count, benchmarks, shared_data_dir):
    examples = load_benchmark(benchmarks[name], shared_data_dir)
    assert len(examples) == count
    assert len({ex.id for ex in examples}) == count, "ids must be unique"
    assert all(ex.question.strip() for ex in examples)
    if benchmarks[name].kind == "math":
        assert all(ex.gold and ex.gold.strip() for ex in examples)
    else:
        assert all(ex.gold is None for ex in examples)


def test_gold_parsing_examples(benchmarks, shared_data_dir):
    first = {
        name: load_benchmark(benchmarks[name], shared_data_dir, limit=None)[0]
        for name in ("gsm8k", "aime24", "olympiadbench", "minerva_math")
    }
    assert first["gsm8k"].gold == "18"
    assert first["aime24"].gold == "204"
    assert first["olympiadbench"].gold == "2"
    assert first["minerva_math"].gold == "1.6"


def test_ids_come_from_the_id_field_or_the_row_position(benchmarks, shared_data_dir):
    math500 = load_benchmark(benchmarks.math500, shared_data_dir, limit=3)
    assert all(ex.id.startswith("test/") for ex in math500)
    college = load_benchmark(benchmarks.college_math, shared_data_dir)
    assert [ex.id for ex in college[:3]] == ["0", "1", "2"]


def test_limit_is_deterministic_nested_and_in_file_order(benchmarks, shared_data_dir):
    first = [ex.id for ex in load_benchmark(benchmarks.gsm8k, shared_data_dir, limit=20)]
    again = [ex.id for ex in load_benchmark(benchmarks.gsm8k, shared_data_dir, limit=20)]
    smaller = [ex.id for ex in load_benchmark(benchmarks.gsm8k, shared_data_dir, limit=5)]
    assert first == again and len(first) == 20
    assert set(smaller) <= set(first)
    assert [int(i) for i in first] == sorted(int(i) for i in first)
    # A permutation, not the first rows: the subset spreads over the file.
    assert max(int(i) for i in first) > 100


def test_subset_indices():
    assert subset_indices(5, None) == [0, 1, 2, 3, 4]
    assert subset_indices(5, 10) == [0, 1, 2, 3, 4]
    assert subset_indices(1000, 7) == subset_indices(1000, 7)
    assert set(subset_indices(1000, 7)) <= set(subset_indices(1000, 50))
    with pytest.raises(ConfigError, match="eval.limit=0"):
        subset_indices(10, 0)


def test_hub_fallback_uses_hub_overrides(benchmarks, monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake_load_dataset(source, subset=None, split=None):
        calls.append((source, subset, split))
        return [{"question": "What is 3+4?", "answer": "7"}, {"question": "What is 2*5?", "answer": "10"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_benchmark(benchmarks.minerva_math, tmp_path)  # no local copy under tmp_path
    assert calls == [("math-ai/minervamath", None, "test")]
    assert [(ex.id, ex.question, ex.gold) for ex in examples] == [
        ("0", "What is 3+4?", "7"),
        ("1", "What is 2*5?", "10"),
    ]


def test_offline_hub_load_is_a_config_error(benchmarks, monkeypatch, tmp_path):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConfigError, match="cannot load hub dataset 'openai/gsm8k'.*ConnectionError"):
        load_benchmark(benchmarks.gsm8k, tmp_path)


def test_missing_column_is_a_config_error(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"question": "q", "answer": "1"}\n')
    cfg = {
        "name": "b",
        "kind": "math",
        "local_path": "b.jsonl",
        "question_field": "problem",
        "answer_field": "answer",
        "answer_format": "plain",
        "grader": "math",
    }
    with pytest.raises(ConfigError, match="column 'problem' not in row 0"):
        load_benchmark(cfg, tmp_path)


def test_read_rows_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n\n{"x": 2}\n')
    (tmp_path / "b.json").write_text('[{"x": 1}]')
    (tmp_path / "c.json").write_text('{"data": [{"x": 3}]}')
    assert read_rows(tmp_path / "a.jsonl") == [{"x": 1}, {"x": 2}]
    assert read_rows(tmp_path / "b.json") == [{"x": 1}]
    assert read_rows(tmp_path / "c.json") == [{"x": 3}]
    with pytest.raises(ConfigError, match="unsupported file type"):
        (tmp_path / "d.csv").write_text("x\n1\n")
        read_rows(tmp_path / "d.csv")


def test_toy_benchmark_loads_in_memory(benchmarks):
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        toy = compose("config", overrides=["eval=toy"]).eval.benchmarks.toy
    examples = load_benchmark(toy, None, limit=10)
    assert len(examples) == 10 and all(ex.question and ex.gold for ex in examples)
    assert [ex.id for ex in examples] == [ex.id for ex in load_benchmark(toy, None, limit=10)]


# ---------------------------------------------------------------------------------------------
# A row with an empty or unparseable gold answer is refused, naming the file and the row


def local_benchmark(tmp_path: Path, rows: list[dict], answer_format: str = "plain", **extra) -> dict:
    import json

    (tmp_path / "b.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {
        "name": "b",
        "task": "math",
        "kind": "math",
        "local_path": "b.jsonl",
        "question_field": "question",
        "answer_field": "answer",
        "answer_format": answer_format,
        **extra,
    }


@pytest.mark.parametrize(
    ("gold", "answer_format", "message"),
    [
        ("", "plain", "has an empty gold answer in column 'answer'; expected a non-empty answer"),
        ("   ", "plain", "has an empty gold answer in column 'answer'"),
        (None, "plain", "has an empty gold answer in column 'answer'"),
        ([], "list_string", "gold answer '[]' parses to nothing under answer_format='list_string'"),
        ("['$$']", "list_string", "gold answer \"['$$']\" parses to nothing under answer_format='list_string'"),
        ("Natalia sold 48 clips. ####", "gsm8k", "parses to nothing under answer_format='gsm8k'"),
    ],
)
def test_a_row_with_an_empty_or_unparseable_gold_is_refused_at_validation(tmp_path, gold, answer_format, message):
    from acm_exp.eval.benchmarks import validate_benchmark

    rows = [{"question": "What is 1+1?", "answer": "2"}, {"question": "What is 2+2?", "answer": gold}]
    cfg = local_benchmark(tmp_path, rows, answer_format)
    with pytest.raises(ConfigError) as error:
        validate_benchmark("b", cfg, tmp_path)
    text = str(error.value)
    assert text.startswith(f"benchmark b: row 1 of {tmp_path / 'b.jsonl'}") and message in text, text
    assert "\n" not in text


def test_a_parser_that_raises_is_one_line_naming_the_row(tmp_path, monkeypatch):
    from acm_exp.eval import benchmarks as module

    def unparseable(raw, answer_format):
        raise ValueError("no '####' marker\nin the gold")

    monkeypatch.setattr(module, "gold_answer", unparseable)
    cfg = local_benchmark(tmp_path, [{"question": "q", "answer": "forty two"}], "gsm8k")
    with pytest.raises(ConfigError) as error:
        module.load_benchmark(cfg, tmp_path)
    assert str(error.value) == (
        f"benchmark b: row 0 of {tmp_path / 'b.jsonl'}: gold answer 'forty two' cannot be parsed as "
        "answer_format='gsm8k' (no '####' marker in the gold); expected a gsm8k gold answer"
    )


def test_hub_rows_with_an_empty_gold_are_refused_before_generation(benchmarks, monkeypatch, tmp_path):
    import datasets

    monkeypatch.setattr(
        datasets, "load_dataset", lambda *args, **kwargs: [{"question": "q1", "answer": "1"}, {"question": "q2"}]
    )
    with pytest.raises(ConfigError, match=r"benchmark minerva_math: column 'answer' not in row 1"):
        load_benchmark(benchmarks.minerva_math, tmp_path)
    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda *args, **kwargs: [{"question": "q1", "answer": "1"}, {"question": "q2", "answer": ""}],
    )
    with pytest.raises(ConfigError, match=r"benchmark minerva_math: row 1 of math-ai/minervamath has an empty gold"):
        load_benchmark(benchmarks.minerva_math, tmp_path)


def test_every_shipped_offline_row_has_a_gold_the_validation_accepts(shared_data_dir):
    from app_config import compose_config

    from acm_exp.eval.runner import validate_eval_config

    validate_eval_config(compose_config("eval=l2s").eval, shared_data_dir, prompts=["cot"])
