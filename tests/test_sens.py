"""Sens-Merging: layer sensitivity against a hand computation, its cache, and the merge weights."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from model_factory import make_model
from transformers import AutoTokenizer, Qwen2ForCausalLM

from acm_exp.acm import sensitivity as sens
from acm_exp.acm.cache import spec_key
from acm_exp.acm.sensitivity import (
    IGNORE_INDEX,
    LayerSensitivity,
    SensCoefficients,
    SensitivityCache,
    answer_only_example,
    collect_layer_sensitivity,
    compute_layer_sensitivity,
    compute_sens_coefficients,
    l2_normalize,
    sens_layer_weights,
    sensitivity_spec,
)
from acm_exp.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAIRS = [("what is 12 + 30? ", "42."), ("compute 7 * 8: ", "7 * 8 = 56"), ("hello ", "world")]
NUM_LAYERS = 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("sens") / "model", seed=3, layers=NUM_LAYERS)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture
def model(model_dir):
    return Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@pytest.fixture
def examples(tokenizer):
    return [answer_only_example(tokenizer, prompt, answer, None) for prompt, answer in PAIRS[:2]]


def hand_sensitivity(model, examples, *, answer_only: bool = True) -> np.ndarray:
    """Σ_samples Σ_layer |θ ⊙ ∇θ L| with L the mean cross-entropy written out and autograd.grad."""
    layers = [list(layer.parameters()) for layer in model.model.layers]
    totals = np.zeros(len(layers))
    for input_ids, labels in examples:
        ids = torch.tensor([input_ids])
        targets = torch.tensor(labels[1:] if answer_only else input_ids[1:])
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        kept = targets != IGNORE_INDEX  # the token at t+1 is predicted from the logits at t
        loss = -log_probs[kept].gather(1, targets[kept, None]).mean()
        gradients = torch.autograd.grad(loss, [p for parameters in layers for p in parameters])
        flat = iter(gradients)
        for index, parameters in enumerate(layers):
            totals[index] += sum(float((p.detach() * next(flat)).abs().sum()) for p in parameters)
    return totals


# ---------------------------------------------------------------------------------------------
# Examples


def test_answer_only_example_masks_the_prompt(tokenizer):
    prompt, answer = "1+1=", "2"
    ids, labels = answer_only_example(tokenizer, prompt, answer, None)
    prompt_ids = tokenizer(prompt)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert ids == prompt_ids + answer_ids
    assert labels == [IGNORE_INDEX] * len(prompt_ids) + answer_ids


def test_answer_only_example_truncates_from_the_right(tokenizer):
    ids, labels = answer_only_example(tokenizer, "1+1=", "22", 5)
    assert len(ids) == len(labels) == 5
    assert labels[-1] == ids[-1] == tokenizer("2", add_special_tokens=False)["input_ids"][0]


@pytest.mark.parametrize("max_tokens", [4, 3])
def test_truncation_that_leaves_no_answer_token_is_an_error(tokenizer, max_tokens):
    with pytest.raises(ConfigError, match="no predictable answer token"):
        answer_only_example(tokenizer, "1+1=", "2", max_tokens)


def test_unscorable_examples_are_skipped_and_counted(tokenizer):
    pairs = [("1+1=", "2"), ("a much longer prompt than the budget allows: 1+1=", "2"), ("2+2=", "")]
    examples, skipped = sens.tokenize_examples(tokenizer, pairs, 8)
    assert examples == [answer_only_example(tokenizer, "1+1=", "2", 8)]
    assert skipped == {"too_long": 1, "empty_answer": 1}
    with pytest.raises(sens.UnscorableExample) as error:
        answer_only_example(tokenizer, *pairs[1], 8)
    assert error.value.reason == "too_long"


def test_compute_skips_what_cannot_be_scored_and_fails_in_one_line_when_nothing_can(model_dir, tmp_path):
    long_prompt = "a much longer prompt than the budget allows: " * 4
    pairs = [*PAIRS, (long_prompt, "42.")]
    options = {"device": "cpu", "dtype": "float32", "cache_dir": tmp_path, "progress": False, "max_tokens": 24}
    kept = compute_layer_sensitivity(model_dir, pairs, **options)
    assert kept.num_samples == len(PAIRS)
    assert kept.metadata["skipped"] == {"too_long": 1} and kept.metadata["num_examples"] == len(pairs)
    np.testing.assert_array_equal(kept.raw, compute_layer_sensitivity(model_dir, PAIRS, **options).raw)
    with pytest.raises(
        DataError, match=r"none of the 2 examples .* can be scored \(2 too long for sens.max_tokens=24\)"
    ):
        compute_layer_sensitivity(model_dir, [(long_prompt, "1"), (long_prompt, "2")], **options)


@pytest.mark.parametrize(
    "prompt, answer, max_tokens, message",
    [
        ("1+1=", "", None, "answer"),
        ("1+1=", 2, None, "expected \\(prompt: str, answer: str\\)"),
        ("1+1=", "2", 1, "max_tokens=1"),
        ("1+1=", "2", True, "max_tokens=True"),
    ],
)
def test_bad_examples_are_config_errors(tokenizer, prompt, answer, max_tokens, message):
    with pytest.raises(ConfigError, match=message):
        answer_only_example(tokenizer, prompt, answer, max_tokens)


# ---------------------------------------------------------------------------------------------
# Sensitivity on a loaded model


def test_sensitivity_matches_a_hand_computation(model, examples):
    expected = hand_sensitivity(model, examples)
    result = collect_layer_sensitivity(model, examples, progress=False)
    assert result.num_samples == 2 and result.raw.shape == (NUM_LAYERS,)
    np.testing.assert_allclose(result.raw, expected, rtol=1e-5)
    assert (result.raw > 0).all()
    assert result.metadata["num_answer_tokens"] == sum(
        sum(label != IGNORE_INDEX for label in labels) for _, labels in examples
    )
    assert result.metadata["mean_answer_loss"] > 0


def test_only_answer_tokens_count(model, examples):
    answer_only = collect_layer_sensitivity(model, examples, progress=False).raw
    # The same sequences with every position as a target give other values: the prompt is masked.
    whole_sequence = hand_sensitivity(model, examples, answer_only=False)
    assert not np.allclose(answer_only, whole_sequence, rtol=1e-3)
    # Masking one more position (the first answer token) changes the loss and matches the hand
    # computation over the remaining answer positions: the mask is read position by position.
    ids, labels = examples[0]
    first_answer = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    masked_more = [(ids, labels[:first_answer] + [IGNORE_INDEX] + labels[first_answer + 1 :])]
    values = collect_layer_sensitivity(model, masked_more, progress=False).raw
    np.testing.assert_allclose(values, hand_sensitivity(model, masked_more), rtol=1e-5)
    assert not np.allclose(values, collect_layer_sensitivity(model, examples[:1], progress=False).raw, rtol=1e-3)


def test_collection_restores_the_model(model, examples):
    model.lm_head.weight.requires_grad_(False)
    model.train()
    collect_layer_sensitivity(model, examples, progress=False)
    assert model.training and not model.lm_head.weight.requires_grad
    assert all(p.requires_grad for name, p in model.named_parameters() if not name.startswith("lm_head"))
    assert all(p.grad is None for p in model.parameters())


def test_collection_runs_in_eval_mode(model, examples):
    modes = []
    model.model.layers[0].self_attn.register_forward_hook(lambda module, inputs, output: modes.append(module.training))
    model.train()
    collect_layer_sensitivity(model, examples, progress=False)
    assert modes and not any(modes)


def test_gradient_checkpointing_gives_the_same_values(model, examples, monkeypatch):
    plain = collect_layer_sensitivity(model, examples, progress=False).raw
    mlp = model.model.layers[1].mlp
    mlp_calls = []
    plain_forward = mlp.forward

    def counted_forward(*args, **kwargs):
        mlp_calls.append(1)
        return plain_forward(*args, **kwargs)

    # Wrap forward itself: module hooks do not fire when checkpointing recomputes a layer.
    monkeypatch.setattr(mlp, "forward", counted_forward)
    checkpointed = collect_layer_sensitivity(model, examples, gradient_checkpointing=True, progress=False).raw
    # Checkpointing really ran: every layer's forward is recomputed in the backward pass.
    assert len(mlp_calls) == 2 * len(examples)
    np.testing.assert_allclose(checkpointed, plain, rtol=1e-5)
    assert not any(getattr(module, "gradient_checkpointing", False) for module in model.modules())
    assert not any(layer.training for layer in model.model.layers)


def test_each_example_is_one_forward_pass(model, examples):
    before = sens.SENSITIVITY_PASSES
    collect_layer_sensitivity(model, examples, progress=False)
    assert sens.SENSITIVITY_PASSES - before == len(examples)


@pytest.mark.parametrize(
    "bad_examples, message",
    [
        ([], "at least one"),
        ([([5, 6, 7], [IGNORE_INDEX] * 3)], "no answer label"),
        ([([5, 6, 7], [IGNORE_INDEX, 6])], "3 input ids and 2 labels"),
        ([([5, 6, 700], [IGNORE_INDEX, 6, 700])], "vocabulary"),
        ([[5, 6, 7]], "expected a pair"),
    ],
)
def test_bad_token_examples_are_config_errors(model, bad_examples, message):
    with pytest.raises(ConfigError, match=message):
        collect_layer_sensitivity(model, bad_examples, progress=False)


# ---------------------------------------------------------------------------------------------
# Statistics object


def test_normalized_is_unit_l2():
    statistics = LayerSensitivity(raw=np.array([3.0, 4.0, 0.0]), num_samples=2)
    np.testing.assert_allclose(statistics.normalized, [0.6, 0.8, 0.0])
    assert math.isclose(float(np.linalg.norm(statistics.normalized)), 1.0)


@pytest.mark.parametrize(
    "raw, num_samples, message",
    [
        ([[1.0, 2.0]], 1, "shape"),
        ([], 1, "shape"),
        ([1.0, float("nan")], 1, "NaN"),
        ([1.0, -2.0], 1, "negative"),
        ([1.0, 2.0], 0, "num_samples=0"),
    ],
)
def test_bad_layer_sensitivity_is_a_data_error(raw, num_samples, message):
    with pytest.raises(DataError, match=message):
        LayerSensitivity(raw=np.array(raw), num_samples=num_samples)


def test_zero_sensitivity_cannot_be_normalized():
    with pytest.raises(DataError, match="zero in every layer"):
        LayerSensitivity(raw=np.zeros(3), num_samples=1).normalized  # noqa: B018 (the property raises)


def test_layer_sensitivity_round_trips(tmp_path):
    statistics = LayerSensitivity(raw=np.array([1.5, 2.5]), num_samples=4, metadata={"model": "x", "n": [1, 2]})
    buffer = io.BytesIO()
    statistics.save(buffer)
    buffer.seek(0)
    path = tmp_path / "sens.npz"
    path.write_bytes(buffer.getvalue())
    loaded = LayerSensitivity.load(path)
    np.testing.assert_array_equal(loaded.raw, statistics.raw)
    assert loaded.num_samples == 4 and loaded.metadata == statistics.metadata


# ---------------------------------------------------------------------------------------------
# From a path, cached


def test_compute_from_path_matches_the_loaded_model_and_is_cached(model_dir, model, tokenizer, tmp_path):
    before = sens.SENSITIVITY_PASSES
    first = compute_layer_sensitivity(
        model_dir, PAIRS, device="cpu", dtype="float32", cache_dir=tmp_path, progress=False
    )
    assert sens.SENSITIVITY_PASSES - before == len(PAIRS)
    examples = [answer_only_example(tokenizer, prompt, answer, None) for prompt, answer in PAIRS]
    np.testing.assert_allclose(first.raw, hand_sensitivity(model, examples), rtol=1e-5)
    assert (tmp_path / "sens" / first.metadata["cache_key"] / "layer_sensitivity.npz").is_file()

    before = sens.SENSITIVITY_PASSES
    second = compute_layer_sensitivity(
        model_dir, PAIRS, device="cpu", dtype="float32", cache_dir=tmp_path, gradient_checkpointing=True, progress=False
    )
    assert sens.SENSITIVITY_PASSES == before
    np.testing.assert_array_equal(second.raw, first.raw)
    assert second.num_samples == len(PAIRS)
    assert second.metadata["cache_key"] == first.metadata["cache_key"]
    assert second.metadata["spec"]["examples_sha256"] == first.metadata["spec"]["examples_sha256"]


def test_cache_key_follows_examples_dtype_and_max_tokens(model_dir):
    def key(pairs=PAIRS, dtype="float32", max_tokens=None):
        return spec_key(sensitivity_spec(model_dir, pairs, max_tokens=max_tokens, dtype=dtype))

    reference = key()
    assert key() == reference
    assert key(pairs=PAIRS[:2]) != reference
    assert key(pairs=[(PAIRS[0][0], "41."), *PAIRS[1:]]) != reference
    # The pair boundary is part of the key: the same concatenated text split elsewhere differs.
    assert key(pairs=[(PAIRS[0][0] + "4", "2."), *PAIRS[1:]]) != reference
    assert key(dtype="bfloat16") != reference
    assert key(max_tokens=16) != reference
    assert (
        SensitivityCache(
            sensitivity_spec(model_dir, PAIRS, max_tokens=None, dtype="float32"), "/tmp/x"
        ).directory.parent.name
        == "sens"
    )


@pytest.mark.parametrize(
    "pairs, kwargs, message",
    [
        ([], {}, "at least one"),
        (["just a prompt"], {}, "expected a \\(prompt: str, answer: str\\) pair"),
        ([("q", 1)], {}, "expected a \\(prompt: str, answer: str\\) pair"),
        (PAIRS, {"dtype": "float64"}, "dtype='float64'"),
        (PAIRS, {"device": "tpu"}, "device='tpu'"),
        (PAIRS, {"max_tokens": 0}, "max_tokens=0"),
    ],
)
def test_bad_compute_inputs_are_config_errors(model_dir, tmp_path, pairs, kwargs, message):
    options = {"device": "cpu", "dtype": "float32", "cache_dir": tmp_path, "progress": False, **kwargs}
    with pytest.raises(ConfigError, match=message):
        compute_layer_sensitivity(model_dir, pairs, **options)


def test_missing_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        compute_layer_sensitivity(tmp_path / "nowhere", PAIRS, device="cpu", dtype="float32", cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# Weights


def test_softmax_weights_against_hand_values():
    c_base, c_ft = sens_layer_weights(np.array([1.0, 0.0]), np.array([0.0, 1.0]), alpha=0.5, temperature=1.0)
    # Layer 0: logits [0.5·1, 0.5·0] → 2·[e^0.5, 1] / (e^0.5 + 1); layer 1 is its mirror image.
    high = 2 * math.exp(0.5) / (math.exp(0.5) + 1)
    np.testing.assert_allclose(c_base, [high, 2 - high])
    np.testing.assert_allclose(c_ft, [2 - high, high])
    assert math.isclose(high, 1.2449186624037092)


def test_weights_use_alpha_and_temperature():
    s_base, s_ft = np.array([0.6, 0.8]), np.array([0.8, 0.6])
    c_base, c_ft = sens_layer_weights(s_base, s_ft, alpha=0.7, temperature=2.0)
    logits = np.array([[0.3 * 0.6, 0.7 * 0.8], [0.3 * 0.8, 0.7 * 0.6]]) / 2.0
    expected = 2 * np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.stack([c_base, c_ft], axis=1), expected)
    np.testing.assert_allclose(c_base + c_ft, 2.0)


def test_weights_sum_to_two_and_do_not_overflow():
    generator = np.random.default_rng(0)
    s_base, s_ft = generator.random(7) * 1e4, generator.random(7) * 1e4
    c_base, c_ft = sens_layer_weights(s_base, s_ft, alpha=0.4, temperature=1e-3)
    assert np.isfinite(c_base).all() and np.isfinite(c_ft).all()
    np.testing.assert_allclose(c_base + c_ft, 2.0)


@pytest.mark.parametrize(
    "alpha, temperature, message",
    [
        (1.5, 1.0, "merge.alpha=1.5"),
        (-0.1, 1.0, "merge.alpha=-0.1"),
        (True, 1.0, "merge.alpha=True"),
        (0.5, 0.0, "merge.temperature=0.0"),
        (0.5, -2, "merge.temperature=-2"),
        (0.5, float("nan"), "merge.temperature=nan"),
    ],
)
def test_bad_weight_settings_are_config_errors(alpha, temperature, message):
    with pytest.raises(ConfigError, match=message):
        sens_layer_weights(np.ones(2), np.ones(2), alpha, temperature)


def test_sensitivities_of_different_lengths_are_a_config_error():
    with pytest.raises(DataError, match="equal length"):
        sens_layer_weights(np.ones(2), np.ones(3), 0.5, 1.0)
    with pytest.raises(ConfigError, match="expected the same architecture"):
        compute_sens_coefficients(LayerSensitivity(np.ones(2), 1), LayerSensitivity(np.ones(3), 1), 0.5, 1.0)


def test_l2_normalize_rejects_non_finite_values():
    with pytest.raises(DataError, match="not finite"):
        l2_normalize(np.array([1.0, np.inf]))


# ---------------------------------------------------------------------------------------------
# Coefficients


@pytest.fixture
def coefficients() -> SensCoefficients:
    base = LayerSensitivity(raw=np.array([3.0, 4.0]), num_samples=2, metadata={"model": "base"})
    finetuned = LayerSensitivity(raw=np.array([4.0, 3.0]), num_samples=2, metadata={"model": "ft"})
    return compute_sens_coefficients(base, finetuned, alpha=0.7, temperature=2.0)


def test_coefficients_use_normalized_sensitivities(coefficients):
    np.testing.assert_allclose(coefficients.s_base, [0.6, 0.8])
    np.testing.assert_allclose(coefficients.s_ft, [0.8, 0.6])
    expected = sens_layer_weights(np.array([0.6, 0.8]), np.array([0.8, 0.6]), 0.7, 2.0)
    np.testing.assert_allclose(coefficients.c_base, expected[0])
    np.testing.assert_allclose(coefficients.c_ft, expected[1])
    assert coefficients.metadata["base"] == {"model": "base"}


@pytest.mark.parametrize(
    "name, layer",
    [
        ("model.layers.0.self_attn.q_proj.weight", 0),
        ("model.layers.1.mlp.down_proj.weight", 1),
        ("model.layers.1.input_layernorm.weight", 1),
        ("model.layers.0.self_attn.k_proj.bias", 0),
    ],
)
def test_adjustment_inside_a_layer(coefficients, name, layer):
    assert coefficients.adjustment_for(name) == (coefficients.c_base[layer], coefficients.c_ft[layer])


@pytest.mark.parametrize(
    "name", ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", "model.rotary_emb.inv_freq"]
)
def test_adjustment_outside_the_layers_is_plain_task_arithmetic(coefficients, name):
    assert coefficients.adjustment_for(name) == (1.0, 1.0)


def test_adjustment_for_a_layer_beyond_the_weights_is_an_error(coefficients):
    with pytest.raises(ConfigError, match="decoder layer 2 .* cover 2 layers"):
        coefficients.adjustment_for("model.layers.2.mlp.up_proj.weight")


def test_coefficients_json_and_plot(coefficients, tmp_path):
    path = coefficients.to_json(tmp_path / "out" / "sens_coefficients.json")
    data = json.loads(path.read_text())
    assert data["alpha"] == 0.7 and data["temperature"] == 2.0 and data["num_layers"] == 2
    assert [layer["c_base"] for layer in data["layers"]] == pytest.approx(list(coefficients.c_base))
    assert [layer["s_ft"] for layer in data["layers"]] == pytest.approx([0.8, 0.6])
    restored = SensCoefficients.from_json(path)
    np.testing.assert_allclose(restored.c_ft, coefficients.c_ft)
    assert not list(path.parent.glob(".*.tmp"))
    image = coefficients.plot(tmp_path / "out" / "sens_coefficients.png")
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_coefficients_validate_their_shapes():
    with pytest.raises(ConfigError, match="one value per decoder layer"):
        SensCoefficients(
            c_base=np.ones(2), c_ft=np.ones(3), alpha=0.5, temperature=1.0, s_base=np.ones(2), s_ft=np.ones(2)
        )
