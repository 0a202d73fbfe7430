"""AIM's activation statistics: per-input-channel importance, relaxation factor, cache, sharing with ACM."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from app_config import compose_config
from model_factory import load_state, make_pair, tiny_config
from transformers import Qwen2ForCausalLM

from acm_exp.acm import aim_provider, compute_mi_statistics, modeling
from acm_exp.acm.importance import (
    ImportanceCache,
    ImportanceRecorder,
    InputImportance,
    collect_input_importance,
    compute_input_importance,
    importance_spec,
    relaxation_factor,
    weight_factors,
)
from acm_exp.acm.modeling import load_causal_lm, tokenize_texts
from acm_exp.acm.provider import CoefficientRequest
from acm_exp.calibration import CalibrationSet
from acm_exp.config import AcmConfig
from acm_exp.errors import ConfigError, DataError
from acm_exp.merge import MergeSettings, get_method, open_inputs, run_merge

TEXTS = ["What is 12 + 30?", "compute 7 * 8, then add 1.", "hello world", "a longer question: (3 + 4) * 5 = ?"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_qwen(*, tie: bool = False, layers: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return Qwen2ForCausalLM(tiny_config("qwen2", tie=tie, layers=layers)).to(torch.float64).eval()


def token_samples() -> list[list[int]]:
    generator = torch.Generator().manual_seed(3)
    return [torch.randint(0, 64, (length,), generator=generator).tolist() for length in (7, 13, 4)]


def expected_importance(inputs_per_sample: list[torch.Tensor]) -> np.ndarray:
    """mean |x| over all tokens of all samples, divided by its maximum."""
    rows = torch.cat([x.reshape(-1, x.shape[-1]) for x in inputs_per_sample]).to(torch.float64)
    mean = rows.detach().abs().mean(dim=0).numpy()
    return mean / mean.max()


# ---------------------------------------------------------------------------------------------
# Importance against a hand computation


def test_sequential_of_linears_matches_hand_computation():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).double()
    batches = [torch.randn(5, 3, dtype=torch.float64), torch.randn(2, 3, 3, dtype=torch.float64)]
    recorder = ImportanceRecorder(model)
    with torch.inference_mode():
        for x in batches:
            model(x)
    importance = recorder.result()
    recorder.close()
    hidden = [torch.relu(x @ model[0].weight.T + model[0].bias) for x in batches]
    assert set(importance.importance) == {"0.weight", "2.weight"}
    np.testing.assert_allclose(importance.importance["0.weight"], expected_importance(batches), rtol=1e-12)
    np.testing.assert_allclose(importance.importance["2.weight"], expected_importance(hidden), rtol=1e-12)
    assert importance.tokens == 5 + 6
    assert max(values.max() for values in importance.importance.values()) == 1.0


def reference_weight_inputs(model, samples) -> dict[str, list[torch.Tensor]]:
    """The input of every weight but the embedding of a Qwen2 model, per sample, mostly rebuilt from
    hidden states.

    The input norm sees the layer's hidden state h, q/k/v its normed value; the post-attention norm
    sees the residual r = h + o_proj(attention mix); gate/up see the MLP's input (taken from a hook on
    the MLP module); down_proj sees act(gate(x)) * up(x); the final norm sees the last layer's
    r + mlp(x); lm_head sees the final norm's output (the last hidden state). Only o_proj's input
    (the attention mix) comes from a post hook.
    """
    inputs: dict[str, list[torch.Tensor]] = {}

    def add(name, tensor):
        inputs.setdefault(name, []).append(tensor.detach().clone())

    for ids in samples:
        mlp_inputs, attention_mixes = {}, {}
        handles = []
        for k, layer in enumerate(model.model.layers):
            handles.append(
                layer.mlp.register_forward_hook(lambda m, i, o, k=k, store=mlp_inputs: store.__setitem__(k, i[0]))
            )
            handles.append(
                layer.self_attn.o_proj.register_forward_hook(
                    lambda m, i, o, k=k, store=attention_mixes: store.__setitem__(k, i[0])
                )
            )
        with torch.inference_mode():
            output = model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
            for handle in handles:
                handle.remove()
            for k, layer in enumerate(model.model.layers):
                prefix = f"model.layers.{k}"
                add(f"{prefix}.input_layernorm.weight", output.hidden_states[k])
                residual = output.hidden_states[k] + layer.self_attn.o_proj(attention_mixes[k])
                add(f"{prefix}.post_attention_layernorm.weight", residual)
                normed = layer.input_layernorm(output.hidden_states[k])
                for projection in ("q_proj", "k_proj", "v_proj"):
                    add(f"{prefix}.self_attn.{projection}.weight", normed)
                add(f"{prefix}.self_attn.o_proj.weight", attention_mixes[k])
                x = mlp_inputs[k]
                add(f"{prefix}.mlp.gate_proj.weight", x)
                add(f"{prefix}.mlp.up_proj.weight", x)
                add(f"{prefix}.mlp.down_proj.weight", layer.mlp.act_fn(layer.mlp.gate_proj(x)) * layer.mlp.up_proj(x))
            last = len(model.model.layers) - 1
            last_residual = inputs[f"model.layers.{last}.post_attention_layernorm.weight"][-1]
            add("model.norm.weight", last_residual + model.model.layers[last].mlp(mlp_inputs[last]))
            add("lm_head.weight", output.hidden_states[-1])
    return inputs


@pytest.mark.parametrize("tie", [False, True])
def test_causal_lm_matches_hand_computation(tie):
    model = tiny_qwen(tie=tie)
    samples = token_samples()
    pre_hooks = sum(len(module._forward_pre_hooks) for module in model.modules())
    before = modeling.FORWARD_PASSES
    importance = collect_input_importance(model, samples, progress=False)
    assert modeling.FORWARD_PASSES - before == len(samples)
    assert sum(len(module._forward_pre_hooks) for module in model.modules()) == pre_hooks  # hooks removed
    reference = reference_weight_inputs(model, samples)
    # Every weight but the embedding: the linears, lm_head (even when tied to the embedding) and the
    # norms (as the official AIM code hooks them).
    assert set(importance.importance) == set(reference)
    assert len(importance.importance) == 2 * (7 + 2) + 1 + 1
    for name, per_sample in reference.items():
        np.testing.assert_allclose(
            importance.importance[name], expected_importance(per_sample), rtol=1e-9, err_msg=name
        )
        assert importance.importance[name].dtype == np.float64
        assert importance.importance[name].max() == 1.0
    assert importance.tokens == sum(len(ids) for ids in samples)
    assert importance.metadata["num_samples"] == len(samples)


def test_samples_as_tensors_or_a_generator_give_the_same_importance():
    model = tiny_qwen()
    samples = token_samples()
    from_lists = collect_input_importance(model, samples, progress=False).importance
    generator = (torch.tensor([ids]) for ids in samples)
    from_generator = collect_input_importance(model, generator, progress=False).importance
    assert from_lists.keys() == from_generator.keys()
    for name in from_lists:
        np.testing.assert_array_equal(from_lists[name], from_generator[name])


# ---------------------------------------------------------------------------------------------
# Relaxation factor


def test_relaxation_factor_hand_values_and_broadcasting():
    factor = relaxation_factor(np.array([0.0, 0.5, 1.0]), omega=0.4)
    assert factor.dtype == torch.float32 and factor.shape == (1, 3)
    torch.testing.assert_close(factor, torch.tensor([[1.0, 0.7, 0.4]]))
    torch.testing.assert_close(relaxation_factor(torch.tensor([0.0, 0.5, 1.0]), 0.0), torch.tensor([[1.0, 0.5, 0.0]]))
    torch.testing.assert_close(relaxation_factor([0.25, 1.0], 1), torch.tensor([[1.0, 1.0]]))
    delta = torch.arange(6, dtype=torch.float32).reshape(2, 3)  # [out=2, in=3]
    base = torch.ones(2, 3)
    merged = base + delta * factor
    torch.testing.assert_close(merged, torch.tensor([[1.0, 1.7, 1.8], [4.0, 3.8, 3.0]]))


def test_factor_for_weights_only():
    importance = InputImportance(
        {"model.layers.0.mlp.up_proj.weight": np.array([0.0, 0.5, 1.0]), "lm_head.weight": np.array([1.0, 0.25, 0.5])},
        tokens=10,
    )
    factor = importance.factor_for("model.layers.0.mlp.up_proj.weight", torch.Size([4, 3]), omega=0.4)
    torch.testing.assert_close(factor, torch.tensor([[1.0, 0.7, 0.4]]))
    torch.testing.assert_close(importance.factor_for("lm_head.weight", (64, 3), 0.4), torch.tensor([[0.4, 0.85, 0.7]]))
    unrelaxed = [
        ("model.embed_tokens.weight", (64, 3)),
        ("model.norm.weight", (3,)),
        ("model.layers.0.self_attn.q_proj.bias", (3,)),
        ("model.layers.0.mlp.down_proj.weight", (3, 6)),
    ]
    for name, shape in unrelaxed:
        assert importance.factor_for(name, shape, 0.4) is None, name
    with pytest.raises(ConfigError, match=r"up_proj.weight has shape \(4, 5\).*3 input channels"):
        importance.factor_for("model.layers.0.mlp.up_proj.weight", (4, 5), 0.4)
    with pytest.raises(ConfigError, match=r"lm_head.weight has shape \(2, 2, 3\)"):
        importance.factor_for("lm_head.weight", (2, 2, 3), 0.4)
    with pytest.raises(ConfigError, match="merge.omega=1.5"):
        importance.factor_for("model.norm.weight", (3,), 1.5)


def test_norm_weights_are_relaxed_elementwise_unless_relax_is_linear():
    importance = InputImportance(
        {"model.norm.weight": np.array([1.0, 0.5, 0.0]), "model.layers.0.mlp.up_proj.weight": np.array([0.0, 1.0])},
        tokens=4,
    )
    factor = importance.factor_for("model.norm.weight", (3,), omega=0.4)
    assert factor.shape == (3,)
    torch.testing.assert_close(factor, torch.tensor([0.4, 0.7, 1.0]))
    # θ0 + Δ ⊙ (1 − imp·(1 − ω)) on a norm weight, by hand: [1 + 0.4·1.0, 1 + 0.7·(-2.0), 1 + 1.0·0.5]
    merged = torch.ones(3) + torch.tensor([1.0, -2.0, 0.5]) * factor
    torch.testing.assert_close(merged, torch.tensor([1.4, -0.4, 1.5]))
    assert importance.factor_for("model.norm.weight", (3,), 0.4, relax="linear") is None
    torch.testing.assert_close(
        importance.factor_for("model.layers.0.mlp.up_proj.weight", (5, 2), 0.4, relax="linear"),
        torch.tensor([[1.0, 0.4]]),
    )
    with pytest.raises(ConfigError, match="merge.relax='norms'"):
        importance.factor_for("model.norm.weight", (3,), 0.4, relax="norms")


def test_tiny_model_relaxes_its_norm_weights():
    model = tiny_qwen()
    importance = collect_input_importance(model, token_samples(), progress=False)
    hidden = model.config.hidden_size
    for name in (
        "model.norm.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.1.post_attention_layernorm.weight",
    ):
        factor = importance.factor_for(name, (hidden,), omega=0.4)
        assert factor is not None and factor.shape == (hidden,), name
        assert float(factor.min()) == pytest.approx(0.4)  # the most active channel keeps ω of its change
    assert importance.factor_for("model.embed_tokens.weight", (64, hidden), 0.4) is None


# ---------------------------------------------------------------------------------------------
# Save, load, cache


def test_save_load_round_trip(tmp_path):
    original = InputImportance(
        {"a.weight": np.array([0.0, 1.0]), "b.weight": np.array([0.5, 1.0, 0.125])},
        tokens=42,
        metadata={"note": "x", "nested": {"n": 1}},
    )
    buffer = io.BytesIO()
    original.save(buffer)
    (tmp_path / "importance.npz").write_bytes(buffer.getvalue())
    loaded = InputImportance.load(tmp_path / "importance.npz")
    assert list(loaded.importance) == ["a.weight", "b.weight"]
    for name in original.importance:
        np.testing.assert_array_equal(loaded.importance[name], original.importance[name])
    assert loaded.tokens == 42 and loaded.metadata == original.metadata


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("aim_models")
    return make_pair(root, dtype=torch.bfloat16, count=2, vocab_size=64)


def direct_importance(base: Path, max_tokens: int | None = None) -> InputImportance:
    model = load_causal_lm(base, torch.device("cpu"), torch.bfloat16)
    return collect_input_importance(model, tokenize_texts(base, TEXTS, max_tokens), progress=False)


def assert_same_importance(left: InputImportance, right: InputImportance) -> None:
    assert left.importance.keys() == right.importance.keys() and left.tokens == right.tokens
    for name in left.importance:
        np.testing.assert_array_equal(left.importance[name], right.importance[name])


def test_second_computation_comes_from_the_cache(model_dirs, tmp_path):
    base, _ = model_dirs
    before = modeling.FORWARD_PASSES
    first = compute_input_importance(base, TEXTS, device="cpu", dtype="bfloat16", cache_dir=tmp_path, progress=False)
    assert modeling.FORWARD_PASSES - before == len(TEXTS)
    middle = modeling.FORWARD_PASSES
    second = compute_input_importance(base, TEXTS, device="cpu", dtype="bfloat16", cache_dir=tmp_path, progress=False)
    assert modeling.FORWARD_PASSES == middle
    assert_same_importance(first, second)
    assert_same_importance(first, direct_importance(base))
    entry = Path(second.metadata["cache_dir"])
    assert entry.parent == tmp_path / "aim" and entry.name == second.metadata["cache_key"]
    assert sorted(p.name for p in entry.iterdir()) == ["input_importance.npz", "spec.json"]
    spec = json.loads((entry / "spec.json").read_text())
    assert spec["aim_version"] == 2 and spec["dtype"] == "bfloat16" and spec["device_type"] == "cpu"
    assert second.metadata["computed_on"] == "cpu"
    assert spec["num_texts"] == len(TEXTS) and second.metadata["spec"] == spec


def test_cache_key_depends_on_base_texts_tokens_and_dtype(model_dirs):
    base, tuned = model_dirs
    default = dict(max_tokens=None, dtype="bfloat16", device_type="cpu")
    key = ImportanceCache(importance_spec(base, TEXTS, **default)).key
    assert ImportanceCache(importance_spec(base, list(TEXTS), **default)).key == key
    variants = [
        (base, TEXTS[:-1], {}),
        (base, TEXTS[::-1], {}),
        (base, TEXTS, {"dtype": "float32"}),
        (base, TEXTS, {"max_tokens": 8}),
        (base, TEXTS, {"device_type": "cuda"}),
        (tuned[0], TEXTS, {}),
    ]
    for path, texts, change in variants:
        assert ImportanceCache(importance_spec(path, texts, **{**default, **change})).key != key, change


# ---------------------------------------------------------------------------------------------
# Sharing the capture pass with ACM


def test_acm_capture_fills_the_aim_cache(model_dirs, tmp_path):
    base, tuned = model_dirs
    before = modeling.FORWARD_PASSES
    compute_mi_statistics(base, tuned, TEXTS, acm_cfg=AcmConfig(), max_tokens=9, cache_dir=tmp_path, progress=False)
    # ACM's pass count is unchanged: the base once per compared model and sample, plus the compared models.
    assert modeling.FORWARD_PASSES - before == len(TEXTS) * 2 * len(tuned)
    middle = modeling.FORWARD_PASSES
    shared = compute_input_importance(
        base, TEXTS, device="cpu", dtype="bfloat16", max_tokens=9, cache_dir=tmp_path, progress=False
    )
    assert modeling.FORWARD_PASSES == middle
    # Recorded during one compared model's pass only: every token counted once.
    assert_same_importance(shared, direct_importance(base, max_tokens=9))
    assert shared.tokens == sum(len(ids) for ids in tokenize_texts(base, TEXTS, 9))


def test_acm_capture_keeps_an_existing_aim_entry(model_dirs, tmp_path):
    base, tuned = model_dirs
    existing = compute_input_importance(base, TEXTS, device="cpu", dtype="bfloat16", cache_dir=tmp_path, progress=False)
    stored = Path(existing.metadata["cache_dir"]) / "input_importance.npz"
    mtime = stored.stat().st_mtime_ns
    compute_mi_statistics(base, tuned[:1], TEXTS, acm_cfg=AcmConfig(), cache_dir=tmp_path, progress=False)
    assert stored.stat().st_mtime_ns == mtime


def test_acm_cache_hit_records_nothing(model_dirs, tmp_path):
    base, tuned = model_dirs
    acm_cfg = AcmConfig()
    compute_mi_statistics(base, tuned[:1], TEXTS, acm_cfg=acm_cfg, cache_dir=tmp_path, progress=False)
    for entry in (tmp_path / "aim").iterdir():
        if entry.is_dir():
            (entry / "input_importance.npz").unlink()
    compute_mi_statistics(base, tuned[:1], TEXTS, acm_cfg=acm_cfg, cache_dir=tmp_path, progress=False)
    spec = importance_spec(base, TEXTS, max_tokens=None, dtype="bfloat16", device_type="cpu")
    assert ImportanceCache(spec, tmp_path).load() is None


# ---------------------------------------------------------------------------------------------
# Bad inputs


@pytest.mark.parametrize(
    "importance, tokens, message",
    [
        ({}, 1, "holds no parameter"),
        ({"a.weight": np.array([0.5, np.nan])}, 1, "a.weight contains NaN"),
        ({"a.weight": np.array([-0.1, 1.0])}, 1, r"a.weight spans \[-0.1, 1\]"),
        ({"a.weight": np.array([0.5, 2.0])}, 1, r"a.weight spans \[0.5, 2\]"),
        ({"a.weight": np.array([])}, 1, r"a.weight has shape \(0,\)"),
        ({"a.weight": np.ones((2, 2))}, 1, r"a.weight has shape \(2, 2\)"),
        ({"a.weight": np.ones(2)}, 0, "tokens=0"),
    ],
)
def test_invalid_importance(importance, tokens, message):
    with pytest.raises(DataError, match=message):
        InputImportance(importance, tokens=tokens)


@pytest.mark.parametrize("omega", [-0.1, 1.5, "0.4", True, None])
def test_invalid_omega(omega):
    with pytest.raises(ConfigError, match="merge.omega="):
        relaxation_factor(np.array([0.5]), omega)


def test_bad_samples_and_models(model_dirs):
    model = tiny_qwen()
    with pytest.raises(ConfigError, match="no calibration samples"):
        collect_input_importance(model, [], progress=False)
    with pytest.raises(ConfigError, match="sample 1 has no tokens"):
        collect_input_importance(model, [[1, 2], []], progress=False)
    with pytest.raises(ConfigError, match="token id 64"):
        collect_input_importance(model, [[1, 64]], progress=False)
    with pytest.raises(ConfigError, match="no module with a weight"):
        ImportanceRecorder(torch.nn.Sequential(torch.nn.ReLU()))
    with ImportanceRecorder(model) as recorder, pytest.raises(ConfigError, match="recorded no tokens"):
        recorder.result()
    with pytest.raises(DataError, match="expected a non-empty vector"):
        relaxation_factor(np.ones((2, 2)), 0.4)
    base, _ = model_dirs
    with pytest.raises(ConfigError, match="at least one calibration text"):
        compute_input_importance(base, [], device="cpu", dtype="bfloat16", progress=False)
    with pytest.raises(ConfigError, match="acm.dtype='int8'"):
        compute_input_importance(base, TEXTS, device="cpu", dtype="int8", progress=False)
    with pytest.raises(ConfigError, match="does not exist"):
        compute_input_importance(base / "missing", TEXTS, device="cpu", dtype="bfloat16", progress=False)


# ---------------------------------------------------------------------------------------------
# A tied base: the shared embedding is relaxed through lm_head, as the official AIM code does


def test_weight_factors_relax_a_tied_embedding_through_the_head():
    importance = InputImportance(
        {"lm_head.weight": np.array([1.0, 0.25, 0.5]), "model.norm.weight": np.array([0.5, 1.0, 0.0])}, tokens=10
    )
    shapes = {"model.embed_tokens.weight": (64, 3), "model.norm.weight": (3,)}
    untied = weight_factors(importance, shapes, 0.4)
    assert set(untied) == {"model.norm.weight"}  # the embedding is never hooked
    tied = weight_factors(importance, shapes, 0.4, tied_through=("model.embed_tokens.weight", "lm_head.weight"))
    torch.testing.assert_close(tied["model.embed_tokens.weight"], torch.tensor([[0.4, 0.85, 0.7]]))
    torch.testing.assert_close(tied["model.norm.weight"], untied["model.norm.weight"])
    # relax=linear keeps the 2-D shared matrix relaxed, drops the norm
    linear = weight_factors(
        importance, shapes, 0.4, "linear", tied_through=("model.embed_tokens.weight", "lm_head.weight")
    )
    assert set(linear) == {"model.embed_tokens.weight"}
    with pytest.raises(ConfigError, match=r"lm_head.weight has shape \(64, 5\)"):
        weight_factors(
            importance,
            {"model.embed_tokens.weight": (64, 5)},
            0.4,
            tied_through=("model.embed_tokens.weight", "lm_head.weight"),
        )


@pytest.fixture(scope="module")
def tied_base_pair(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A tied base and an untied fine-tune, as Qwen2.5-Math-1.5B and R1-Distill-Qwen-1.5B."""
    root = tmp_path_factory.mktemp("aim_tied")
    return make_pair(root, base_tie=True, finetuned_tie=False, vocab_size=64, noise=0.05)


def merged_with_aim(pair, tmp_path: Path, monkeypatch, *overrides: str) -> tuple[dict, dict, InputImportance]:
    """AIM over task arithmetic (α 1: Δ = τ) through the provider and the merge engine."""
    base, finetuned = pair
    cfg = compose_config(
        "merge=aim", "merge.base_method=task_arithmetic", "merge.scale=1.0", f"cache_dir={tmp_path}", *overrides
    )
    calibration = CalibrationSet("test", list(TEXTS), list(range(len(TEXTS))), "hash", "test", len(TEXTS))
    monkeypatch.setattr(aim_provider, "select_calibration", lambda cfg, run_dir: calibration)
    method = get_method("aim")
    request = CoefficientRequest(cfg, method, [], [base, *finetuned], tmp_path, merge_plain=None)
    plan = aim_provider.Provider().plan(request)
    inputs = open_inputs(base, finetuned, tied_head=cfg.model_pair.tied_head)
    try:
        output = run_merge(inputs, method, cfg.merge, MergeSettings(tmp_path / "merged"), adjust=plan.adjust)
    finally:
        inputs.close()
    importance = compute_input_importance(base, TEXTS, device="cpu", dtype="bfloat16", cache_dir=tmp_path)
    return load_state(output.output_dir), plan.manifest["aim"], importance


@pytest.mark.parametrize(
    "overrides, relaxed",
    [((), True), (("merge.tied_embedding=unrelaxed",), False), (("model_pair.tied_head=untie",), False)],
    ids=["tied-default", "tied-unrelaxed", "untied"],
)
def test_tied_embedding_is_relaxed_through_the_head(tied_base_pair, tmp_path, monkeypatch, overrides, relaxed):
    base_dir, (finetuned_dir,) = tied_base_pair
    merged, manifest, importance = merged_with_aim(tied_base_pair, tmp_path, monkeypatch, *overrides)
    base, finetuned = load_state(base_dir), load_state(finetuned_dir)
    embedding = "model.embed_tokens.weight"
    delta = finetuned[embedding] - base[embedding]
    head_factor = relaxation_factor(importance.importance["lm_head.weight"], 0.4)
    expected = base[embedding] + (delta * head_factor if relaxed else delta)
    torch.testing.assert_close(merged[embedding], expected, rtol=1e-6, atol=1e-6)
    other = base[embedding] + (delta if relaxed else delta * head_factor)
    assert not torch.allclose(merged[embedding], other, rtol=0, atol=1e-4)  # the variants are told apart
    assert manifest["tied_embedding_relaxed"] is relaxed
    if "model_pair.tied_head=untie" in overrides:
        # Untied: the written lm_head is relaxed by its own factor, from the fine-tuned head.
        assert manifest["tied_embedding"] is None
        head_delta = finetuned["lm_head.weight"] - base[embedding]
        torch.testing.assert_close(merged["lm_head.weight"], base[embedding] + head_delta * head_factor)
    else:
        assert "lm_head.weight" not in merged  # written tied: lm_head is the merged embedding
    # every other weight is relaxed by its own factor either way
    name = "model.layers.1.mlp.up_proj.weight"
    factor = relaxation_factor(importance.importance[name], 0.4)
    torch.testing.assert_close(merged[name], base[name] + (finetuned[name] - base[name]) * factor)


def test_tied_embedding_switch_defaults_to_the_official_code_and_refuses_bad_values():
    from hydra.errors import ConfigCompositionException

    assert compose_config("model_pair=qwen2.5-1.5b", "merge=aim").merge.tied_embedding == "head"
    assert compose_config("merge=aim", "merge.tied_embedding=unrelaxed").merge.tied_embedding == "unrelaxed"
    with pytest.raises(ConfigCompositionException) as error:
        compose_config("merge=aim", "merge.tied_embedding=skip")
    assert "Invalid value 'skip', expected one of [head, unrelaxed]" in str(error.value.__cause__)
