"""Activation capture, MI statistics from paths and texts, and their cache."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from model_factory import make_pair, tiny_config
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2ForCausalLM,
)

from acm_exp.acm import (
    MICache,
    capture,
    capture_point_names,
    collect_mi_statistics,
    compute_coefficients,
    compute_mi_statistics,
    model_identity,
    modeling,
    mutual_information,
    statistics_spec,
    validate_acm_config,
)
from acm_exp.acm.modeling import tokenize_texts
from acm_exp.config import AcmConfig
from acm_exp.errors import ConfigError

TEXTS = ["What is 12 + 30?", "compute 7 * 8, then add 1.", "hello world", "a longer question: (3 + 4) * 5 = ?"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(architecture: str = "qwen2", *, layers: int = 2, seed: int = 0, vocab_size: int = 64) -> torch.nn.Module:
    torch.manual_seed(seed)
    if architecture == "mistral":
        config = MistralConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
        return MistralForCausalLM(config).to(torch.bfloat16).eval()
    model_class = Qwen2ForCausalLM if architecture == "qwen2" else LlamaForCausalLM
    config = tiny_config(architecture, layers=layers, vocab_size=vocab_size)
    return model_class(config).to(torch.bfloat16).eval()


def perturbed(model: torch.nn.Module, seed: int = 1, noise: float = 0.02) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    other = type(model)(model.config).to(torch.bfloat16).eval()
    other.load_state_dict(
        {
            name: tensor + noise * torch.randn(tensor.shape, generator=generator).to(tensor.dtype)
            for name, tensor in model.state_dict().items()
        }
    )
    return other


def token_samples(count: int = 3, vocab_size: int = 64) -> list[list[int]]:
    generator = torch.Generator().manual_seed(2)
    return [torch.randint(0, vocab_size, (length,), generator=generator).tolist() for length in (9, 17, 5, 12)[:count]]


# ---------------------------------------------------------------------------------------------
# Capture points


@pytest.mark.parametrize("architecture", ["qwen2", "llama", "mistral"])
def test_capture_points_per_architecture(architecture):
    assert capture_point_names(tiny_model(architecture, layers=3)) == (
        "embed_tokens",
        "layers.0",
        "layers.1",
        "layers.2",
        "norm",
        "lm_head",
    )


def test_unsupported_architecture_is_named():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=16))
    with pytest.raises(ConfigError, match="architecture 'gpt2' \\(GPT2LMHeadModel\\).*model.embed_tokens"):
        capture_point_names(gpt2)


def hooks_of(model: torch.nn.Module) -> int:
    return sum(len(module._forward_hooks) for module in model.modules())


def reference_activations(model: torch.nn.Module, ids: list[int]) -> dict[str, torch.Tensor]:
    """The capture points without capture hooks: hidden states, logits and a down_proj hook per layer."""
    tensor = torch.tensor([ids])
    down_proj: dict[int, torch.Tensor] = {}
    handles = [
        layer.mlp.down_proj.register_forward_hook(lambda m, i, o, k=k: down_proj.__setitem__(k, o))
        for k, layer in enumerate(model.model.layers)
    ]
    with torch.inference_mode():
        output = model(input_ids=tensor, output_hidden_states=True, use_cache=False)
    for handle in handles:
        handle.remove()
    activations = {"embed_tokens": model.get_input_embeddings()(tensor)}
    activations.update({f"layers.{k}": value for k, value in sorted(down_proj.items())})
    activations["norm"] = output.hidden_states[-1]  # the last hidden state is the final norm's output
    activations["lm_head"] = output.logits
    return activations


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_collect_matches_activations_captured_another_way(architecture):
    base = tiny_model(architecture)
    tuned = [perturbed(base, 1), perturbed(base, 2, noise=0.2)]
    hook_counts = [hooks_of(model) for model in [base, *tuned]]
    samples = token_samples()
    statistics = collect_mi_statistics(base, tuned, samples, model_names=["a", "b"], progress=False)
    assert statistics.mi.shape == (2, 5, 3)
    assert statistics.point_names == ("embed_tokens", "layers.0", "layers.1", "norm", "lm_head")
    assert statistics.model_names == ("a", "b")
    assert [hooks_of(model) for model in [base, *tuned]] == hook_counts  # capture hooks removed
    for s, ids in enumerate(samples):
        left = reference_activations(base, ids)
        for m, model in enumerate(tuned):
            right = reference_activations(model, ids)
            for p, point in enumerate(statistics.point_names):
                assert statistics.mi[m, p, s] == pytest.approx(mutual_information(left[point], right[point]), rel=1e-12)


def test_identical_models_give_the_entropy_and_histogram_works():
    base = tiny_model()
    samples = token_samples(2)
    statistics = collect_mi_statistics(base, [base], samples, progress=False)
    for s, ids in enumerate(samples):
        activations = reference_activations(base, ids)
        for p, point in enumerate(statistics.point_names):
            assert statistics.mi[0, p, s] == pytest.approx(mutual_information(activations[point], activations[point]))
    histogram = collect_mi_statistics(base, [perturbed(base)], samples, "histogram", 8, "quantile", progress=False)
    assert ((histogram.mi > 0) & (histogram.mi <= np.log(8) + 1e-12)).all()


def test_samples_as_tensors_or_a_generator():
    base = tiny_model()
    tuned = perturbed(base)
    samples = token_samples()
    from_lists = collect_mi_statistics(base, [tuned], samples, progress=False).mi
    from_tensors = collect_mi_statistics(base, [tuned], [torch.tensor(ids) for ids in samples], progress=False).mi
    from_generator = collect_mi_statistics(base, [tuned], (torch.tensor([ids]) for ids in samples), progress=False).mi
    np.testing.assert_array_equal(from_lists, from_tensors)
    np.testing.assert_array_equal(from_lists, from_generator)


def test_one_forward_pass_per_model_and_sample():
    base = tiny_model()
    before = modeling.FORWARD_PASSES
    collect_mi_statistics(base, [perturbed(base, 1), perturbed(base, 2)], token_samples(3), progress=False)
    assert modeling.FORWARD_PASSES - before == 3 * 3


def test_base_activations_of_only_the_current_sample_are_held(monkeypatch):
    base, tuned = tiny_model(), perturbed(tiny_model())
    held: list[int] = []
    original = capture.mutual_information

    def spy(reference, activation, **kwargs):
        # Every live bf16 activation of the base model is one of this sample's capture points.
        held.append(reference.shape[1])
        return original(reference, activation, **kwargs)

    monkeypatch.setattr(capture, "mutual_information", spy)
    samples = token_samples(3)
    collect_mi_statistics(base, [tuned], samples, progress=False)
    assert held == [len(ids) for ids in samples for _ in range(5)]


@pytest.mark.parametrize("compared_count", [1, 2])
def test_the_base_head_waits_for_the_previous_samples_mi(monkeypatch, compared_count):
    """Memory holds one sample's lm_head activations: the base computes the next sample's head output
    only once every MI of the previous sample is done (a slow MI cannot let two samples pile up)."""
    base = tiny_model()
    compared = [perturbed(base, seed) for seed in range(1, compared_count + 1)]
    events: list[tuple[str, int]] = []
    original = capture.mutual_information
    finished = {"lm_head": 0}

    def slow(reference, activation, **kwargs):
        time.sleep(0.05)
        value = original(reference, activation, **kwargs)
        if reference.shape[-1] == base.config.vocab_size:
            finished["lm_head"] += 1
            events.append(("lm_head MI done", finished["lm_head"]))
        return value

    started = {"count": 0}

    def base_head(module, inputs, output):
        started["count"] += 1
        events.append(("base head computed", started["count"]))

    monkeypatch.setattr(capture, "mutual_information", slow)
    handle = base.lm_head.register_forward_hook(base_head)
    try:
        statistics = collect_mi_statistics(base, compared, token_samples(3), progress=False)
    finally:
        handle.remove()
    assert statistics.mi.shape == (compared_count, 5, 3)
    heads = [index for index, (kind, _) in enumerate(events) if kind == "base head computed"]
    done = [index for index, (kind, _) in enumerate(events) if kind == "lm_head MI done"]
    assert len(heads) == 3 and len(done) == 3 * compared_count
    for sample in (1, 2):
        # Every lm_head MI of the previous samples finished before the base computed the next head output.
        previous_done = done[: sample * compared_count]
        assert max(previous_done) < heads[sample], events


def test_bad_inputs():
    base = tiny_model()
    tuned = perturbed(base)
    with pytest.raises(ConfigError, match="sample 1 has no tokens"):
        collect_mi_statistics(base, [tuned], [[1, 2], []], progress=False)
    with pytest.raises(ConfigError, match="token id 64"):
        collect_mi_statistics(base, [tuned], [[1, 64]], progress=False)
    with pytest.raises(ConfigError, match="3 decoder layers and the base has 2"):
        collect_mi_statistics(base, [tiny_model(layers=3)], [[1, 2]], progress=False)
    with pytest.raises(ConfigError, match="at least one compared model"):
        collect_mi_statistics(base, [], [[1, 2]], progress=False)
    with pytest.raises(ConfigError, match="no calibration samples"):
        collect_mi_statistics(base, [tuned], [], progress=False)
    with pytest.raises(ConfigError, match="acm.bins"):
        collect_mi_statistics(base, [tuned], [[1, 2]], "histogram", progress=False)


# ---------------------------------------------------------------------------------------------
# From paths and texts, with the cache


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("acm_models")
    return make_pair(root, dtype=torch.bfloat16, count=2, vocab_size=64)


def test_sweep_over_t_runs_one_activation_pass(model_dirs, tmp_path):
    base, tuned = model_dirs
    cache_dir = tmp_path / "cache"
    before = modeling.FORWARD_PASSES
    lambdas = []
    for t in (0.5, 0.7, 0.9):
        statistics = compute_mi_statistics(base, tuned, TEXTS, acm_cfg=AcmConfig(), cache_dir=cache_dir, progress=False)
        lambdas.append(compute_coefficients(statistics, t).lambdas)
    # One pass of the base and one of each compared model per sample, all in the first run.
    assert modeling.FORWARD_PASSES - before == len(TEXTS) * 2 * len(tuned)
    assert statistics.mi.shape == (2, 5, len(TEXTS))
    assert statistics.model_names == tuple(str(path) for path in tuned)
    assert not np.allclose(lambdas[0], lambdas[2])
    entry = Path(statistics.metadata["cache_dir"])
    assert entry.parent == cache_dir / "mi" and entry.name == statistics.metadata["cache_key"]
    assert sorted(p.name for p in entry.iterdir()) == ["mi_statistics.npz", "spec.json"]
    spec = json.loads((entry / "spec.json").read_text())
    assert spec["dtype"] == "bfloat16" and spec["estimator"] == "discrete" and spec["num_texts"] == len(TEXTS)


def test_results_match_collect_on_the_same_tokens(model_dirs, tmp_path):
    base, tuned = model_dirs
    statistics = compute_mi_statistics(
        base,
        tuned[:1],
        TEXTS,
        acm_cfg=AcmConfig(),
        max_tokens=6,
        cache_dir=tmp_path,
        model_names=["slow"],
        progress=False,
    )
    token_ids = tokenize_texts(base, TEXTS, max_tokens=6)
    assert max(len(ids) for ids in token_ids) == 6
    base_model = modeling.load_causal_lm(base, torch.device("cpu"), torch.bfloat16)
    tuned_model = modeling.load_causal_lm(tuned[0], torch.device("cpu"), torch.bfloat16)
    direct = collect_mi_statistics(base_model, [tuned_model], token_ids, progress=False)
    np.testing.assert_array_equal(statistics.mi, direct.mi)
    assert statistics.model_names == ("slow",)


def test_cache_key_depends_on_inputs_but_not_on_t(model_dirs, tmp_path):
    base, tuned = model_dirs
    default = dict(
        max_tokens=None, dtype="bfloat16", estimator="discrete", bins=None, binning="uniform", device_type="cpu"
    )
    key = MICache(statistics_spec(base, tuned, TEXTS, **default)).key
    assert MICache(statistics_spec(base, tuned, TEXTS, **default)).key == key
    changes = [
        dict(texts=TEXTS[:-1]),
        dict(max_tokens=64),
        dict(dtype="float32"),
        dict(estimator="histogram", bins=16),
        dict(compared=tuned[:1]),
        dict(device_type="cuda"),  # bf16 rounds differently on a GPU
    ]
    for change in changes:
        settings = {**default, **{k: v for k, v in change.items() if k not in ("texts", "compared")}}
        spec = statistics_spec(base, change.get("compared", tuned), change.get("texts", TEXTS), **settings)
        assert MICache(spec).key != key, change
    # Binning settings are irrelevant to the discrete estimator.
    assert MICache(statistics_spec(base, tuned, TEXTS, **{**default, "binning": "quantile"})).key == key


def test_model_identity_is_cheap_and_sensitive(model_dirs, tmp_path):
    base, _ = model_dirs
    identity = model_identity(base)
    assert identity["path"] == str(base.resolve())
    assert [entry[0] for entry in identity["weights"]] == ["model.safetensors"]
    assert "config.json" in identity["content"] and "tokenizer.json" in identity["content"]
    weights = base / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        assert model_identity(base) != identity
    finally:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert model_identity(base) == identity
    with pytest.raises(ConfigError, match="does not exist"):
        model_identity(tmp_path / "missing")


def test_hub_snapshot_identity_is_its_revision(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen2.5-Math-1.5B" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "qwen2"}')
    (snapshot / "model.safetensors").write_bytes(b"weights")
    identity = model_identity(snapshot)
    assert identity["hub"] == "Qwen/Qwen2.5-Math-1.5B" and identity["revision"] == commit
    assert identity["weights"] == [["model.safetensors", 7]]  # no mtime: any copy of the snapshot matches


def test_concurrent_tasks_compute_once(tmp_path):
    spec = {"example": 1}
    calls: list[int] = []
    results = []
    barrier = threading.Barrier(3)

    def compute():
        calls.append(1)
        time.sleep(0.3)
        return capture.MIStatistics(mi=np.ones((1, 2, 3)), point_names=("a", "b"), model_names=("m",))

    def task():
        barrier.wait()
        results.append(MICache(spec, tmp_path).get_or_compute(compute))

    threads = [threading.Thread(target=task) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 3
    assert all(result.metadata["cache_key"] == MICache(spec).key for result in results)
    assert not list((tmp_path / "mi").glob("**/*.tmp"))


def test_unreadable_cache_entry_is_recomputed(tmp_path):
    cache = MICache({"example": 2}, tmp_path)
    cache.directory.mkdir(parents=True)
    cache.statistics_path.write_bytes(b"PK\x03\x04truncated zip")
    stats = cache.get_or_compute(
        lambda: capture.MIStatistics(mi=np.ones((1, 1, 1)), point_names=("a",), model_names=("m",))
    )
    assert MICache({"example": 2}, tmp_path).load().mi.shape == stats.mi.shape == (1, 1, 1)


def test_config_validation(model_dirs):
    validate_acm_config(AcmConfig())
    for change, message in [
        ({"against": "both"}, "acm.against"),
        ({"estimator": "kde"}, "acm.estimator"),
        ({"dtype": "int8"}, "acm.dtype"),
        ({"device": "tpu"}, "acm.device"),
        ({"estimator": "histogram"}, "acm.bins"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate_acm_config(AcmConfig(**change))
    base, tuned = model_dirs
    with pytest.raises(ConfigError, match="max_tokens=0"):
        compute_mi_statistics(base, tuned, TEXTS, acm_cfg=AcmConfig(), max_tokens=0, progress=False)
    with pytest.raises(ConfigError, match="at least one calibration text"):
        compute_mi_statistics(base, tuned, [], acm_cfg=AcmConfig(), progress=False)


def test_cache_key_has_the_device_type_but_not_the_placement(model_dirs, tmp_path, monkeypatch, caplog):
    from acm_exp.acm import cache as cache_module

    base, tuned = model_dirs
    first = compute_mi_statistics(
        base, tuned[:1], TEXTS, acm_cfg=AcmConfig(device="cpu"), cache_dir=tmp_path, progress=False
    )
    assert first.metadata["computed_on"] == "cpu" and first.metadata["cost"]["hardware"]["cpu_cores"] >= 1
    assert first.metadata["spec"]["device_type"] == "cpu"
    spec_file = json.loads((Path(first.metadata["cache_dir"]) / "spec.json").read_text())
    assert spec_file["device_type"] == "cpu"
    # Another placement of the same device type (accelerate's dispatch with a memory budget): same key,
    # no forward pass.
    before = modeling.FORWARD_PASSES
    dispatched = AcmConfig(device="cpu", max_memory={"cpu": "8GiB"})
    again = compute_mi_statistics(base, tuned[:1], TEXTS, acm_cfg=dispatched, cache_dir=tmp_path, progress=False)
    assert modeling.FORWARD_PASSES == before
    assert again.metadata["cache_key"] == first.metadata["cache_key"]
    np.testing.assert_array_equal(again.mi, first.mi)
    # Other hardware of the same type (another CPU model, another GPU model) is served and logged.
    monkeypatch.setattr(cache_module, "device_kind", lambda device: "cpu: another machine")
    with caplog.at_level("WARNING"):
        compute_mi_statistics(
            base, tuned[:1], TEXTS, acm_cfg=AcmConfig(device="cpu"), cache_dir=tmp_path, progress=False
        )
    assert modeling.FORWARD_PASSES == before
    assert any(
        "computed on cpu; this run would compute them on cpu: another machine" in r.getMessage() for r in caplog.records
    )


def mi_statistics(value: float) -> capture.MIStatistics:
    return capture.MIStatistics(mi=np.full((1, 1, 1), value), point_names=("a",), model_names=("m",))


def legacy_entry(tmp_path: Path, spec: dict, computed_on: str | None) -> None:
    """An entry written before the key held the device type: the spec without it, its hardware recorded."""
    legacy = MICache({name: value for name, value in spec.items() if name != "device_type"}, tmp_path)
    statistics = mi_statistics(1.0)
    statistics.metadata = {"computed_on": computed_on, "cost": {"wall_s": 12.0}} if computed_on else {}
    legacy.store(statistics)


@pytest.mark.parametrize("computed_on", ["cpu", "cuda: NVIDIA H200"])
def test_entries_from_before_the_device_type_are_reused_only_on_their_device_type(tmp_path, computed_on, caplog):
    spec = {"example": 3, "device_type": "cpu"}
    legacy_entry(tmp_path, spec, computed_on)
    cache = MICache(spec, tmp_path, device="cpu")
    assert cache.legacy_directory is not None and cache.legacy_directory != cache.directory
    calls = []
    with caplog.at_level("INFO"):
        statistics = cache.get_or_compute(lambda: calls.append(1) or mi_statistics(2.0))
    same_type = computed_on == "cpu"
    assert calls == ([] if same_type else [1])
    assert float(statistics.mi[0, 0, 0]) == (1.0 if same_type else 2.0)
    # Either way the entry now lives under the new key, with the spec that names the device type.
    stored = MICache(spec, tmp_path).load()
    assert float(stored.mi[0, 0, 0]) == float(statistics.mi[0, 0, 0])
    assert stored.metadata["spec"] == spec
    if same_type:
        assert stored.metadata["computed_on"] == "cpu" and stored.metadata["cost"] == {"wall_s": 12.0}
    else:
        assert any(
            r.levelname == "WARNING"
            and "not reusing" in r.getMessage()
            and "computed on cuda: NVIDIA H200" in r.getMessage()
            for r in caplog.records
        )
    # The legacy entry is left alone.
    assert (cache.legacy_directory / "mi_statistics.npz").is_file()


def test_legacy_entries_without_a_recorded_device_are_not_reused(tmp_path, caplog):
    spec = {"example": 4, "device_type": "cuda"}
    legacy_entry(tmp_path, spec, None)
    with caplog.at_level("WARNING"):
        statistics = MICache(spec, tmp_path, device="cpu").get_or_compute(lambda: mi_statistics(5.0))
    assert float(statistics.mi[0, 0, 0]) == 5.0
    assert any("computed on an unrecorded device" in r.getMessage() for r in caplog.records)
    # A spec without a device type has no legacy entry to look for.
    assert MICache({"example": 4}, tmp_path).legacy_directory is None


def test_capture_memory_counts_both_models_one_sample_and_the_mi_working_memory():
    """acm_exp.costs.capture_memory, which the placement tables and acm_bench.py --shape use."""
    from acm_exp import costs

    shape = costs.PAPER_SHAPES[0]  # Qwen2.5-Math-1.5B: tied, 28 layers, hidden 1536, vocabulary 151,936
    need = costs.capture_memory(shape, 2048, compared_tied=False)
    logits = 2048 * 151_936 * 2
    assert need["base_weights"] == 1_543_714_304 * 2
    assert need["compared_weights"] == 1_777_088_000 * 2  # R1-Distill-Qwen-1.5B has its own lm_head
    assert need["base_activations"] == 2048 * 1536 * 2 * (28 + 2) + logits
    assert need["compared_lm_head"] == need["mi_working_memory"] == logits
    assert need["total"] == sum(value for name, value in need.items() if name != "total")
    assert costs.capture_memory(shape, 2048)["compared_weights"] == need["base_weights"]  # tied like the base
    expected = round(costs.capture_memory(shape, 4096, compared_tied=False)["total"] / 1e9, 1)
    assert costs.memory_needs(shape)["capture_gb"] == costs.placement_needs(shape, 1)["capture_gb"] == expected
