"""The embedded toy L2S pair: task, tokenizer, build, cache (acm_exp.toy)."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from acm_exp import toy
from acm_exp.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# The task


def test_toy_problems_are_deterministic_and_well_formed():
    first = toy.toy_problems("test", 50, seed=0)
    assert first == toy.toy_problems("test", 50, seed=0)
    assert toy.toy_problems("test", 20, seed=0) == first[:20]
    assert toy.toy_problems("test", 50, seed=1) != first
    assert len({problem["id"] for problem in first}) == 50
    assert len({problem["question"] for problem in first}) == 50
    for problem in first:
        assert set(problem) == {"id", "question", "answer", "solution"}
        terms = [int(term) for term in problem["question"].split(" + ")]
        assert len(terms) == toy.NUM_TERMS
        assert problem["answer"] == str(sum(terms))
        assert problem["solution"].endswith(f"so the answer is \\boxed{{{problem['answer']}}}")
        assert problem["question"].isascii() and problem["solution"].isascii()
        totals = ", ".join(f"{sum(terms[: index + 1]):02d}" for index in range(len(terms)))
        assert " " + problem["solution"] == toy.TOY_LONG_ANSWER_TEMPLATE.format(steps=totals, answer=problem["answer"])


def test_answer_formats_mirror_l2s_and_fit_the_token_budget():
    """Direct < step by step < step by step + reflection; the long one carries reflection phrases
    (as counted by the eval) and, with its prompt, fits the toy eval's budget (128 new tokens,
    256 positions) with room to spare."""
    from acm_exp.eval.grading import count_reflections

    tokenizer = toy.build_tokenizer()
    # 9 + 9 + 9 + 9 has the longest question; every answer format has a fixed length anyway.
    for problem in [*toy.toy_problems("test", 20), toy._problem([9, 9, 9, 9])]:
        terms = [int(term) for term in problem["question"].split(" + ")]
        totals = ", ".join(f"{sum(terms[: index + 1]):02d}" for index in range(len(terms)))
        answers = {
            "short": toy.TOY_SHORT_ANSWER_TEMPLATE.format(answer=problem["answer"]),
            "steps": toy.TOY_STEP_ANSWER_TEMPLATE.format(steps=totals, answer=problem["answer"]),
            "long": " " + problem["solution"],
        }
        lengths = {
            kind: len(tokenizer(text.strip(), add_special_tokens=False)["input_ids"]) for kind, text in answers.items()
        }
        assert lengths["short"] < lengths["steps"] < lengths["long"] <= 100, lengths
        assert lengths["steps"] > 3 * lengths["short"] and lengths["long"] > 1.5 * lengths["steps"], lengths
        assert count_reflections(answers["long"]) >= 1 and "wait" in answers["long"]
        assert count_reflections(answers["steps"]) == count_reflections(answers["short"]) == 0
        for text in answers.values():
            assert text.endswith(f"\\boxed{{{problem['answer']}}}")
        prompt = toy.TOY_PROMPT_TEMPLATE.format(question=problem["question"])
        total = len(tokenizer(prompt + answers["long"], add_special_tokens=False)["input_ids"]) + 1  # + EOS
        assert total <= 128 < toy.RECIPE.max_position_embeddings


def test_toy_splits_are_disjoint():
    questions = {split: {p["question"] for p in toy.toy_problems(split, 300)} for split in toy.TOY_SPLITS}
    assert questions["train"].isdisjoint(questions["test"])
    assert questions["train"].isdisjoint(questions["calibration"])
    assert questions["test"].isdisjoint(questions["calibration"])
    # Other seeds draw other problems of the same split, never another split's.
    assert {p["question"] for p in toy.toy_problems("test", 300, seed=7)}.isdisjoint(questions["train"])


def test_toy_problems_rejects_an_unknown_split():
    with pytest.raises(ConfigError, match="validation"):
        toy.toy_problems("validation")


# ---------------------------------------------------------------------------------------------
# The tokenizer


@pytest.fixture(scope="module")
def saved_tokenizer_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("toy_tokenizer")
    toy.build_tokenizer().save_pretrained(directory)
    return directory


@pytest.mark.parametrize("as_model_dir", [False, True], ids=["tokenizer-only", "qwen2-model-dir"])
def test_tokenizer_loads_with_autotokenizer_and_round_trips(saved_tokenizer_dir, tmp_path, as_model_dir):
    from transformers import AutoTokenizer

    directory = saved_tokenizer_dir
    if as_model_dir:
        # Beside a qwen2 config.json, transformers may rebuild it as a Qwen2Tokenizer: same tokens.
        directory = tmp_path / "model"
        directory.mkdir()
        for path in saved_tokenizer_dir.iterdir():
            (directory / path.name).write_bytes(path.read_bytes())
        (directory / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert (directory / "tokenizer.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    reference = toy.build_tokenizer()
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    texts = []
    for problem in toy.toy_problems("test", 20) + toy.toy_problems("calibration", 5):
        prompt = toy.TOY_PROMPT_TEMPLATE.format(question=problem["question"])
        texts += [
            prompt,
            " " + problem["solution"],
            toy.TOY_SHORT_ANSWER_TEMPLATE.format(answer=problem["answer"]),
            prompt + " " + problem["solution"],
        ]
    texts += ["  two  spaces\n\nand newlines ", "ünïcödé ∑", ""]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        assert tokenizer.decode(ids) == text
        assert ids == reference(text)["input_ids"]
    # Special tokens are single tokens; EOS is dropped when decoding with skip_special_tokens.
    ids = tokenizer("<|im_start|>user<|im_end|><|endoftext|>")["input_ids"]
    assert len(ids) == 2 + len("user") + 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user"


def test_tokenizer_has_a_chatml_chat_template(saved_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(saved_tokenizer_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "1 + 2"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\n1 + 2<|im_end|>\n<|im_start|>assistant\n"


# ---------------------------------------------------------------------------------------------
# Ids and the cache (fast: a stand-in builder)


def test_toy_ids():
    assert toy.is_toy_id("toy:base") and toy.is_toy_id("toy:finetuned")
    assert not toy.is_toy_id("Qwen/Qwen2.5-Math-1.5B") and not toy.is_toy_id("./toy")


@pytest.mark.parametrize("model_id", ["toy:large", "toy:", "toy:Base"])
def test_unknown_toy_role_raises_config_error(model_id, tmp_path):
    with pytest.raises(ConfigError) as error:
        toy.resolve_toy_id(model_id, cache_dir=tmp_path)
    message = str(error.value)
    assert repr(model_id[len("toy:") :]) in message and "toy:base" in message and "toy:finetuned" in message
    assert not (tmp_path / "toy").exists()


def test_ensure_toy_model_rejects_an_unknown_role(tmp_path):
    with pytest.raises(ConfigError, match="'large'.*base.*finetuned"):
        toy.ensure_toy_model("large", cache_dir=tmp_path)


def _fake_builder(calls: list, fail: bool = False):
    def build(output_dir, seed=0):
        calls.append(seed)
        for role in toy.TOY_ROLES:
            (Path(output_dir) / role).mkdir(parents=True)
            (Path(output_dir) / role / "config.json").write_text("{}")
            if fail:
                raise RuntimeError("killed mid-build")
        return {role: Path(output_dir) / role for role in toy.TOY_ROLES}

    return build


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(toy, "build_toy_pair", _fake_builder(calls, fail=True))
    with pytest.raises(RuntimeError, match="killed"):
        toy.ensure_toy_model("base", cache_dir=tmp_path)
    pair_dir = toy.toy_cache_dir(tmp_path)
    assert not pair_dir.exists()
    assert [path.name for path in pair_dir.parent.iterdir() if not path.name.endswith(".lock")] == []
    # A folder left by a killed build of an older layout (no completion marker) is rebuilt.
    (pair_dir / "base").mkdir(parents=True)
    (pair_dir / "base" / "config.json").write_text("{}")
    # So is the staging folder of a build killed before it could clean up.
    stale = pair_dir.parent / f".{pair_dir.name}.tmp-999-deadbeef"
    (stale / "base").mkdir(parents=True)
    monkeypatch.setattr(toy, "build_toy_pair", _fake_builder(calls))
    assert toy.ensure_toy_model("finetuned", cache_dir=tmp_path) == pair_dir / "finetuned"
    assert (pair_dir / "finetuned" / "config.json").is_file() and len(calls) == 2
    assert not stale.exists()
    assert sorted(path.name for path in pair_dir.parent.iterdir()) == [pair_dir.name, f"{pair_dir.name}.lock"]


def test_concurrent_callers_build_once(tmp_path, monkeypatch):
    calls: list = []
    builder = _fake_builder(calls)
    monkeypatch.setattr(
        toy, "build_toy_pair", lambda output_dir, seed=0: (threading.Event().wait(0.2), builder(output_dir, seed))[1]
    )
    results: list = []
    threads = [
        threading.Thread(
            target=lambda role=role: results.append(toy.ensure_toy_model(role, cache_dir=tmp_path, seed=3))
        )
        for role in ["base", "finetuned", "base", "finetuned"]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [3]
    assert sorted(results) == sorted(
        toy.toy_cache_dir(tmp_path, seed=3) / role for role in ["base", "base", "finetuned", "finetuned"]
    )
    assert toy.toy_cache_dir(tmp_path, seed=3).name == f"v{toy.TOY_VERSION}-seed3"


@pytest.mark.parametrize("corruption", ["same-size-other-bytes", "truncated", "deleted", "no-manifest"])
def test_corrupt_cached_pair_is_detected_and_rebuilt(tmp_path, monkeypatch, caplog, corruption):
    calls: list = []
    monkeypatch.setattr(toy, "build_toy_pair", _fake_builder(calls))
    path = toy.ensure_toy_model("base", cache_dir=tmp_path)
    pair_dir = path.parent
    marker = json.loads((pair_dir / "toy_build.json").read_text())
    assert marker["files"]["base/config.json"] == {
        "bytes": 2,
        "sha256": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    }
    assert set(marker["files"]) == {f"{role}/config.json" for role in toy.TOY_ROLES}
    corrupted = pair_dir / "finetuned" / "config.json"
    if corruption == "same-size-other-bytes":
        corrupted.write_text("[]")
    elif corruption == "truncated":
        corrupted.write_text("{")
    elif corruption == "deleted":
        corrupted.unlink()
    else:  # a marker written before manifests existed
        del marker["files"]
        (pair_dir / "toy_build.json").write_text(json.dumps(marker))
    with caplog.at_level("WARNING", logger="acm_exp.toy"):
        assert toy.ensure_toy_model("base", cache_dir=tmp_path) == path
    assert len(calls) == 2
    assert "rebuilding" in caplog.text
    assert corrupted.read_text() == "{}"
    # Intact again: no third build.
    toy.ensure_toy_model("finetuned", cache_dir=tmp_path)
    assert len(calls) == 2


def test_cache_root_comes_from_the_environment(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(toy, "build_toy_pair", _fake_builder(calls))
    monkeypatch.setenv("ACM_EXP_CACHE", str(tmp_path))
    assert toy.resolve_toy_id("toy:base") == tmp_path / "toy" / f"v{toy.TOY_VERSION}-seed0" / "base"


# ---------------------------------------------------------------------------------------------
# The real pair: built once per test session


@pytest.fixture(scope="session")
def built_toy_pair(tmp_path_factory) -> dict[str, Path]:
    # Same folder as the shared `toy_pair` fixture (conftest), so a session builds the pair once.
    cache_dir = tmp_path_factory.getbasetemp() / "toy_cache"
    return {role: toy.ensure_toy_model(role, cache_dir=cache_dir) for role in toy.TOY_ROLES}


def _greedy(model_dir: Path, problems: list[dict]) -> tuple[float, float]:
    """Accuracy and mean response tokens (EOS included) of greedy decoding, batched with left padding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = [toy.TOY_PROMPT_TEMPLATE.format(question=problem["question"]) for problem in problems]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        output = model.generate(**batch, do_sample=False, max_new_tokens=96)
    correct, lengths = 0, []
    for problem, row in zip(problems, output[:, batch["input_ids"].shape[1] :].tolist(), strict=False):
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id) + 1]
        lengths.append(len(row))
        boxed = re.findall(r"\\boxed\{([^{}]*)\}", tokenizer.decode(row, skip_special_tokens=True))
        correct += bool(boxed) and boxed[-1] == problem["answer"]
    return correct / len(problems), sum(lengths) / len(lengths)


@pytest.mark.slow
def test_built_pair_loads_and_mirrors_the_real_pair(built_toy_pair):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for role, directory in built_toy_pair.items():
        for name in [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ]:
            assert (directory / name).is_file(), (role, name)
        config = json.loads((directory / "config.json").read_text())
        assert config["model_type"] == "qwen2"
        assert (config.get("dtype") or config.get("torch_dtype")) == "bfloat16"
        generation = json.loads((directory / "generation_config.json").read_text())
        tokenizer = AutoTokenizer.from_pretrained(directory)
        assert generation["eos_token_id"] == generation["pad_token_id"] == tokenizer.eos_token_id
        assert generation.get("do_sample", False) is False
        with safe_open(str(directory / "model.safetensors"), "pt") as weights:
            names = set(weights.keys())
            assert {weights.get_tensor(name).dtype for name in names} == {torch.bfloat16}
        model = AutoModelForCausalLM.from_pretrained(directory)
        assert type(model).__name__ == "Qwen2ForCausalLM"
        assert model.config.vocab_size >= len(tokenizer)
        tied = role == "base"
        assert config["tie_word_embeddings"] is tied
        assert ("lm_head.weight" in names) is not tied
        same_tensor = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        assert same_tensor is tied


@pytest.mark.slow
def test_finetuned_is_more_accurate_and_longer_than_base(built_toy_pair):
    problems = toy.toy_problems("test", 40)
    base_accuracy, base_length = _greedy(built_toy_pair["base"], problems)
    finetuned_accuracy, finetuned_length = _greedy(built_toy_pair["finetuned"], problems)
    assert finetuned_accuracy > base_accuracy
    assert finetuned_length > 2 * base_length


@pytest.mark.slow
def test_task_arithmetic_merge_keeps_the_steps_and_drops_the_reflection(built_toy_pair, tmp_path):
    """The L2S effect in miniature: θ0 + 0.5·τ answers step by step like the fine-tuned model but
    drops most of its redundant reflection: shorter than it, longer and more accurate than the base."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(built_toy_pair["base"]).state_dict()
    base["lm_head.weight"] = base["model.embed_tokens.weight"]
    merged = AutoModelForCausalLM.from_pretrained(built_toy_pair["finetuned"])
    finetuned = merged.state_dict()
    merged.load_state_dict(
        {name: (base[name].float() + 0.5 * (finetuned[name].float() - base[name].float())) for name in finetuned}
    )
    merged.to(torch.bfloat16).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(built_toy_pair["finetuned"]).save_pretrained(tmp_path)

    problems = toy.toy_problems("test", 40)
    base_accuracy, base_length = _greedy(built_toy_pair["base"], problems)
    finetuned_accuracy, finetuned_length = _greedy(built_toy_pair["finetuned"], problems)
    merged_accuracy, merged_length = _greedy(tmp_path, problems)
    assert base_length < merged_length < finetuned_length
    assert merged_accuracy > base_accuracy + 0.3


@pytest.mark.slow
def test_second_call_reuses_the_cache(built_toy_pair, monkeypatch):
    before = {path: path.stat().st_mtime_ns for path in built_toy_pair["base"].parent.rglob("*")}

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached toy pair was rebuilt")

    monkeypatch.setattr(toy, "build_toy_pair", no_rebuild)
    cache_dir = built_toy_pair["base"].parent.parent.parent
    for role in toy.TOY_ROLES:
        assert toy.resolve_toy_id(f"toy:{role}", cache_dir=cache_dir) == built_toy_pair[role]
    assert {path: path.stat().st_mtime_ns for path in built_toy_pair["base"].parent.rglob("*")} == before


def readme_sweep(pattern: str) -> list[float]:
    """The values of a sweep the README shows (``pattern`` captures its comma-separated values)."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    match = re.search(pattern, text)
    assert match, f"README.md shows no sweep matching {pattern!r}"
    return [float(value) for value in match.group(1).split(",")]


README_TA_SCALES = readme_sweep(r"-m merge=task_arithmetic merge\.scale=([-0-9.,]+)")
# The toy's own t sweep (the README says why its range is wider than the paper's 0.5-0.9).
README_TOY_T = readme_sweep(r"-m merge\.t=([-0-9.,]+) +# the toy pair")


def test_the_readme_shows_toy_sweeps_of_at_least_three_points():
    assert len(README_TA_SCALES) >= 3 and len(README_TOY_T) >= 3


@pytest.mark.slow
def test_merges_respond_to_the_merge_coefficients(built_toy_pair, tmp_path):
    """The README's toy sweeps, through the package's merge and evaluation (the toy task, graded as
    ever): Task Arithmetic over merge.scale and ACM-TIES over merge.t each give at least three
    distinct (accuracy, mean tokens) points, and a larger scale brings the reflection back."""
    import acm_exp

    cache = built_toy_pair["base"].parent.parent.parent

    def point(merged) -> tuple[float, float]:
        result = acm_exp.evaluate(merged, ("toy",), record=False, logger="disabled", cache_dir=cache)
        (row,) = [row for row in result.rows if row["seed"] is not None]
        assert row["n"] == row["benchmark_size"] == 100  # the whole test split
        return row["accuracy"], row["mean_tokens"]

    scales = {
        scale: point(
            acm_exp.merge_models(
                "toy:base",
                "toy:finetuned",
                "task_arithmetic",
                scale=scale,
                run_dir=tmp_path / f"ta{scale}",
                cache_dir=cache,
            )
        )
        for scale in README_TA_SCALES
    }
    assert len(set(scales.values())) == len(README_TA_SCALES), scales
    tokens = [scales[scale][1] for scale in README_TA_SCALES]
    assert tokens == sorted(tokens), scales
    calibration = acm_exp.select_calibration("toy", cache_dir=cache)
    temperatures = {}
    for t in README_TOY_T:
        coefficients = acm_exp.acm_coefficients(
            "toy:base", "toy:finetuned", calibration, t=t, run_dir=tmp_path / f"coefficients{t}", cache_dir=cache
        )
        merged = acm_exp.merge_models(
            "toy:base",
            "toy:finetuned",
            "acm_ties",
            coefficients=coefficients,
            run_dir=tmp_path / f"acm{t}",
            cache_dir=cache,
        )
        temperatures[t] = point(merged)
    assert len(set(temperatures.values())) >= 3, temperatures
