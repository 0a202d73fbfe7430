"""The reference pipelines' choices as defaults (issue 13), each with the switch that restores the
alternative: side files and a tied head from the base, ACM's α, the capture device, per model pair."""

from __future__ import annotations

import json

import pytest
import torch
from app_config import compose_config
from model_factory import load_state, make_pair

from acm_exp.config import MergeConfig
from acm_exp.errors import ConfigError
from acm_exp.merge import MergeSettings, get_method, open_inputs, run_merge

REAL_PAIRS = ("qwen2.5-1.5b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b", "llama2-7b", "custom")


def merge(base, finetuned, output, *, tied_head="tie", tokenizer_from="base", method="task_arithmetic", **params):
    inputs = open_inputs(base, finetuned, tied_head=tied_head)
    try:
        settings = MergeSettings(output_dir=output, tokenizer_from=tokenizer_from)
        return run_merge(inputs, get_method(method), MergeConfig(method=method, **params), settings)
    finally:
        inputs.close()


def mark_side_files(directory, context: int, marker: str) -> None:
    """Give a model its own context length, generation setting and tokenizer marker."""
    config = json.loads((directory / "config.json").read_text())
    config["max_position_embeddings"] = context
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": 0, "max_length": context}))
    tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = context
    tokenizer_config["marker"] = marker
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))


# ---------------------------------------------------------------------------------------------
# Tied head


def test_tied_base_keeps_a_tied_head_equal_to_the_merged_embedding(tmp_path):
    base, finetuned = make_pair(tmp_path / "in", base_tie=True, finetuned_tie=False)
    result = merge(base, finetuned, tmp_path / "out", scale=0.5)
    merged = load_state(result.output_dir)
    assert "lm_head.weight" not in merged
    base_state, finetuned_state = load_state(base), load_state(finetuned[0])
    embedding = "model.embed_tokens.weight"
    expected = base_state[embedding] + 0.5 * (finetuned_state[embedding] - base_state[embedding])
    torch.testing.assert_close(merged[embedding], expected)
    # The fine-tuned lm_head differs from its embedding, so the test would see it if it were used.
    assert not torch.allclose(finetuned_state["lm_head.weight"], finetuned_state[embedding])
    assert json.loads((result.output_dir / "config.json").read_text())["tie_word_embeddings"] is True
    assert result.manifest["output"]["tied_embeddings"] is True

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(result.output_dir)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(model.lm_head.weight, expected)


def test_untie_merges_the_head_of_a_tied_base_as_its_own_tensor(tmp_path):
    base, finetuned = make_pair(tmp_path / "in", base_tie=True, finetuned_tie=False)
    result = merge(base, finetuned, tmp_path / "out", tied_head="untie", scale=0.5)
    merged = load_state(result.output_dir)
    base_state, finetuned_state = load_state(base), load_state(finetuned[0])
    embedding = base_state["model.embed_tokens.weight"]
    torch.testing.assert_close(
        merged["lm_head.weight"], embedding + 0.5 * (finetuned_state["lm_head.weight"] - embedding)
    )
    assert json.loads((result.output_dir / "config.json").read_text())["tie_word_embeddings"] is False


def test_an_untied_base_merges_its_head_in_either_mode(tmp_path):
    base, finetuned = make_pair(tmp_path / "in", base_tie=False, finetuned_tie=False)
    for mode in ("tie", "untie"):
        result = merge(base, finetuned, tmp_path / mode, tied_head=mode, scale=0.5)
        assert "lm_head.weight" in load_state(result.output_dir)


def test_unknown_tied_head_mode_is_refused(tmp_path):
    base, finetuned = make_pair(tmp_path / "in")
    with pytest.raises(ConfigError, match="model_pair.tied_head='keep'"):
        open_inputs(base, finetuned, tied_head="keep")


# ---------------------------------------------------------------------------------------------
# config.json, generation config and tokenizer


@pytest.mark.parametrize(("source", "context"), [("base", 64), ("finetuned", 256)])
def test_side_files_come_from_the_chosen_model(tmp_path, source, context):
    base, finetuned = make_pair(tmp_path / "in")
    mark_side_files(base, 64, "base")
    mark_side_files(finetuned[0], 256, "finetuned")
    result = merge(base, finetuned, tmp_path / "out", tokenizer_from=source, scale=0.5)
    assert json.loads((result.output_dir / "config.json").read_text())["max_position_embeddings"] == context
    assert json.loads((result.output_dir / "generation_config.json").read_text())["max_length"] == context
    assert json.loads((result.output_dir / "tokenizer_config.json").read_text())["marker"] == source


def test_merge_settings_default_to_the_base_side_files():
    assert MergeSettings(output_dir="x").tokenizer_from == "base"


# ---------------------------------------------------------------------------------------------
# Composed configs, per model pair


@pytest.mark.parametrize("pair", REAL_PAIRS)
def test_real_pairs_default_to_the_reference_choices(pair):
    cfg = compose_config(f"model_pair={pair}", "merge=acm_ta")
    assert cfg.model_pair.tokenizer_from == "base"
    assert cfg.model_pair.tied_head == "tie"
    assert cfg.acm.device == "auto"
    assert cfg.calibration.name == "s1k" and cfg.calibration.cluster_pick == "reference"
    assert cfg.calibration.shuffle_seed == 54


@pytest.mark.parametrize("pair", REAL_PAIRS[:5])
@pytest.mark.parametrize(
    ("acm", "plain"), [("acm_ta", "task_arithmetic"), ("acm_dare", "dare_ta"), ("acm_ties", "ties")]
)
def test_acm_methods_use_their_baselines_alpha(pair, acm, plain):
    acm_merge = compose_config(f"model_pair={pair}", f"merge={acm}").merge
    plain_merge = compose_config(f"model_pair={pair}", f"merge={plain}").merge
    assert acm_merge.scale == plain_merge.scale
    for name in ("k", "p", "combine"):
        if name in get_method(acm_merge.method).parameters:
            assert acm_merge[name] == plain_merge[name], name


def test_acm_ta_and_acm_dare_alpha_is_0_7():
    assert compose_config("model_pair=qwen2.5-7b", "merge=acm_ta").merge.scale == 0.7
    assert compose_config("model_pair=qwen2.5-7b", "merge=acm_dare").merge.scale == 0.7


@pytest.mark.parametrize(
    ("option", "combine", "expected"),
    [
        ("dare", "average", {}),
        ("dare_ta", "ta", {"scale": 0.7}),
        ("dare_ties", "ties", {"k": 0.8, "scale": 1.0}),
    ],
)
def test_dare_rows_compose(option, combine, expected):
    merge_cfg = compose_config("model_pair=qwen2.5-7b", f"merge={option}").merge
    assert (merge_cfg.method, merge_cfg.combine, merge_cfg.p) == ("dare", combine, 0.3)
    assert {name: merge_cfg[name] for name in expected} == expected


def test_dare_rows_at_14b_take_dare_p_and_ties_k_and_alpha():
    merge_cfg = compose_config("model_pair=qwen2.5-14b", "merge=dare_ties").merge
    assert (merge_cfg.p, merge_cfg.k, merge_cfg.scale) == (0.4, 0.2, 0.5)
    assert compose_config("model_pair=qwen2.5-14b", "merge=dare_ta").merge.p == 0.4


def test_aim_relaxes_every_weight_by_default():
    assert compose_config("model_pair=qwen2.5-7b", "merge=aim").merge.relax == "all"


@pytest.mark.parametrize(
    "override",
    [
        "model_pair.tokenizer_from=finetuned",
        "model_pair.tied_head=untie",
        "acm.device=cpu",
        "calibration.cluster_pick=nearest",
    ],
)
def test_switches_restore_the_alternatives(override):
    from acm_exp.stages import validate

    validate(compose_config("model_pair=qwen2.5-7b", "merge=acm_ta", override))


def test_bad_tied_head_is_refused_at_validation():
    from acm_exp.stages import validate

    with pytest.raises(ConfigError, match="model_pair.tied_head='both'"):
        validate(compose_config("model_pair=qwen2.5-7b", "model_pair.tied_head=both"))


# ---------------------------------------------------------------------------------------------
# calibration.json in the run directory of every calibrated method


@pytest.mark.parametrize("method", ["acm_ties", "aim", "sens"])
def test_calibrated_runs_record_their_calibration(tmp_path, monkeypatch, method):
    import numpy as np

    from acm_exp import calibration
    from acm_exp.acm.provider import select_calibration

    def fake_embeddings(texts, model_name=calibration.DEFAULT_EMBEDDING_MODEL):
        rng = np.random.default_rng(len(texts))
        rows = rng.normal(size=(len(texts), 8))
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)

    monkeypatch.setattr(calibration, "embed_texts", fake_embeddings)
    rows = [{"question": f" question {i} ", "solution": f"so $\\boxed{{{i}}}$"} for i in range(30)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = compose_config(
        "model_pair=qwen2.5-7b",
        f"merge={method}",
        f"calibration.source={corpus}",
        "calibration.num_clusters=3",
        "calibration.per_cluster=2",
        f"cache_dir={tmp_path / 'cache'}",
    )
    assert get_method(cfg.merge.method).coefficients is not None
    selected = select_calibration(cfg, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "calibration.json").read_text())
    assert record["source"] == str(corpus) and record["indices"] == selected.indices and len(record["indices"]) == 6
    assert record["settings"]["cluster_pick"] == "reference" and record["settings"]["shuffle_seed"] == 54
    assert selected.texts == [rows[i]["question"].strip() for i in record["indices"]]
