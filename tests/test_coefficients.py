"""ACM coefficients: the formula and its switches, the parameter mapping, JSON and the plot."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from model_factory import tiny_config
from transformers import LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2ForCausalLM

from acm_exp.acm import (
    Coefficients,
    MIStatistics,
    compute_coefficients,
    layer_coefficients,
    point_for_parameter,
)
from acm_exp.errors import ConfigError, DataError

POINTS = ("embed_tokens", "layers.0", "layers.1", "layers.2", "norm", "lm_head")


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def statistics(models: int = 2, samples: int = 5, seed: int = 0) -> MIStatistics:
    rng = np.random.default_rng(seed)
    return MIStatistics(
        mi=rng.uniform(0.5, 6.0, (models, len(POINTS), samples)),
        point_names=POINTS,
        model_names=tuple(f"/models/tuned{i}" for i in range(models)),
    )


@pytest.mark.parametrize("t", [0.7, 0.5, 2.0, -0.8])
def test_default_formula(t):
    mi = statistics().for_model(0)
    expected = 1 - sigmoid(t * (mi - mi.max(axis=1, keepdims=True))).mean(axis=1)
    np.testing.assert_allclose(layer_coefficients(mi, t), expected, rtol=1e-12)


@pytest.mark.parametrize("shift", ["per_point_max", "global_max", "none"])
@pytest.mark.parametrize("reduce", ["mean_of_sigmoids", "sigmoid_of_mean"])
def test_shift_and_reduce_switches(shift, reduce):
    mi, t = statistics().for_model(1), 0.9
    offset = {
        "per_point_max": mi.max(axis=1),
        "global_max": np.full(len(POINTS), mi.max()),
        "none": np.zeros(len(POINTS)),
    }[shift]
    if reduce == "mean_of_sigmoids":
        expected = 1 - sigmoid(t * (mi - offset[:, None])).mean(axis=1)
    else:
        expected = 1 - sigmoid(t * (mi.mean(axis=1) - offset))
    np.testing.assert_allclose(layer_coefficients(mi, t, shift, reduce), expected, rtol=1e-12)


def test_properties_of_the_default():
    mi = statistics().for_model(0)
    # t = 0: every sigmoid is 1/2.
    np.testing.assert_allclose(layer_coefficients(mi, 0.0), 0.5)
    # t > 0 and a per-point max: every shifted MI is <= 0, so λ lies in [1/2, 1).
    lambdas = layer_coefficients(mi, 0.7)
    assert ((lambdas >= 0.5) & (lambdas < 1)).all()
    # Higher MI (more redundant) -> smaller λ, for t > 0; reversed for t < 0.
    redundant = np.array([[1.0, 1.0, 4.0], [1.0, 3.9, 4.0]])
    assert layer_coefficients(redundant, 0.7)[0] > layer_coefficients(redundant, 0.7)[1]
    assert layer_coefficients(redundant, -0.7)[0] < layer_coefficients(redundant, -0.7)[1]


def test_extreme_temperatures_stay_finite():
    mi = statistics().for_model(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in (1e6, -1e6):
            for shift in ("per_point_max", "none"):
                lambdas = layer_coefficients(mi, t, shift)
                assert np.isfinite(lambdas).all() and ((lambdas >= 0) & (lambdas <= 1)).all()


@pytest.mark.parametrize("t", [math.nan, math.inf, -math.inf, "0.7", None, True])
def test_bad_temperature(t):
    with pytest.raises(ConfigError, match="merge.t="):
        layer_coefficients(statistics().for_model(0), t)


def test_bad_switches_and_arrays():
    mi = statistics().for_model(0)
    with pytest.raises(ConfigError, match="merge.shift='max'"):
        layer_coefficients(mi, 0.7, shift="max")
    with pytest.raises(ConfigError, match="merge.reduce='median'"):
        layer_coefficients(mi, 0.7, reduce="median")
    with pytest.raises(DataError, match="expected \\(points, samples\\)"):
        layer_coefficients(np.ones(4), 0.7)
    with pytest.raises(DataError, match="expected \\(points, samples\\)"):
        layer_coefficients(np.ones((4, 0)), 0.7)
    with pytest.raises(DataError, match="NaN"):
        layer_coefficients(np.array([[1.0, math.nan]]), 0.7)


# ---------------------------------------------------------------------------------------------
# Parameter names -> capture points


def state_dict_names(architecture: str, tie: bool = False) -> list[str]:
    if architecture == "mistral":
        config = MistralConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=tie,
        )
        return list(MistralForCausalLM(config).state_dict())
    model_class = Qwen2ForCausalLM if architecture == "qwen2" else LlamaForCausalLM
    return list(model_class(tiny_config(architecture, tie=tie, layers=3)).state_dict())


@pytest.mark.parametrize("architecture", ["qwen2", "llama", "mistral"])
def test_every_parameter_of_real_architectures_maps(architecture):
    names = state_dict_names(architecture)
    points = {name: point_for_parameter(name) for name in names}
    assert set(points.values()) == set(POINTS)
    assert points["model.embed_tokens.weight"] == "embed_tokens"
    assert points["model.norm.weight"] == "norm"
    assert points["lm_head.weight"] == "lm_head"
    for name, point in points.items():
        if name.startswith("model.layers."):
            assert point == f"layers.{name.split('.')[2]}"
    for suffix in (
        "self_attn.q_proj.weight",
        "self_attn.o_proj.weight",
        "mlp.gate_proj.weight",
        "mlp.down_proj.weight",
        "input_layernorm.weight",
        "post_attention_layernorm.weight",
    ):
        assert points[f"model.layers.2.{suffix}"] == "layers.2"


def test_qwen2_biases_map_to_their_layer():
    names = state_dict_names("qwen2")
    biases = [name for name in names if name.endswith(".bias")]
    assert "model.layers.1.self_attn.q_proj.bias" in biases
    assert {point_for_parameter(name) for name in biases} == {"layers.0", "layers.1", "layers.2"}
    assert point_for_parameter("model.layers.11.self_attn.v_proj.bias") == "layers.11"


@pytest.mark.parametrize(
    "name",
    [
        "model.rotary_emb.inv_freq",
        "transformer.h.0.attn.c_attn.weight",
        "model.layers.x.mlp.up_proj.weight",
        "layers.0.mlp.up_proj.weight",
        "lm_head",
        "score.weight",
        "",
    ],
)
def test_unknown_parameter_names(name):
    with pytest.raises(ConfigError, match="maps to no ACM capture point"):
        point_for_parameter(name)


# ---------------------------------------------------------------------------------------------
# The Coefficients object


def test_for_parameter_and_model_weights():
    stats = statistics()
    coefficients = compute_coefficients(stats, 0.7, "global_max", "sigmoid_of_mean")
    expected = np.stack(
        [layer_coefficients(stats.for_model(i), 0.7, "global_max", "sigmoid_of_mean") for i in range(2)]
    )
    np.testing.assert_allclose(coefficients.lambdas, expected)
    assert coefficients.for_parameter(1, "model.layers.2.self_attn.k_proj.bias") == expected[1, 3]
    assert coefficients.for_parameter(0, "lm_head.weight") == expected[0, 5]
    assert coefficients.model_weights("model.embed_tokens.weight") == (expected[0, 0], expected[1, 0])
    with pytest.raises(ConfigError, match="layers.7"):
        coefficients.for_parameter(0, "model.layers.7.mlp.up_proj.weight")
    with pytest.raises(ConfigError, match="model index 2"):
        coefficients.for_parameter(2, "lm_head.weight")


def test_json_round_trip(tmp_path):
    stats = statistics(samples=4)
    stats.metadata = {"cache_key": "abc"}
    coefficients = compute_coefficients(stats, -0.3, metadata={"against": "finetuned"})
    path = coefficients.to_json(tmp_path / "run" / "coefficients.json")
    data = json.loads(path.read_text())
    assert (data["t"], data["shift"], data["reduce"]) == (-0.3, "per_point_max", "mean_of_sigmoids")
    assert data["point_names"] == list(POINTS)
    entry = data["models"][1]["points"]["layers.1"]
    row = stats.mi[1, 2]
    assert entry["lambda"] == pytest.approx(coefficients.lambdas[1, 2])
    assert entry["mi_per_sample"] == pytest.approx(list(row))
    assert entry["mi"] == pytest.approx({"mean": row.mean(), "std": row.std(), "min": row.min(), "max": row.max()})
    assert data["statistics_metadata"] == {"cache_key": "abc"}
    loaded = Coefficients.from_json(path)
    np.testing.assert_allclose(loaded.lambdas, coefficients.lambdas)
    np.testing.assert_allclose(loaded.statistics.mi, stats.mi)
    assert loaded.model_names == stats.model_names and loaded.metadata == {"against": "finetuned"}
    assert (loaded.t, loaded.shift, loaded.reduce) == (-0.3, "per_point_max", "mean_of_sigmoids")


def test_plot_writes_a_png(tmp_path):
    path = compute_coefficients(statistics(models=3), 0.7).plot(tmp_path / "coefficients.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_statistics_validation():
    with pytest.raises(DataError, match="models x points"):
        MIStatistics(mi=np.ones((1, 3, 2)), point_names=POINTS, model_names=("a",))
    with pytest.raises(DataError, match="no calibration sample"):
        MIStatistics(mi=np.ones((1, len(POINTS), 0)), point_names=POINTS, model_names=("a",))
    with pytest.raises(DataError, match="NaN"):
        MIStatistics(mi=np.full((1, len(POINTS), 1), np.nan), point_names=POINTS, model_names=("a",))
