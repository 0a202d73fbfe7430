"""Parity with mergekit: the same tiny models merged by both engines agree tensor by tensor.

Our parameters in mergekit's terms:
    task_arithmetic, scale α   ->  task_arithmetic, weight α per model (normalize: false)
    ties, k, scale α           ->  ties, density 1 − k and weight 1 per model, normalize: true, lambda α

Where the two differ on purpose, the test asserts the documented difference instead of parity:
- TIES keeps exactly floor((1 − k)·n) entries, which may be none; mergekit keeps at least one.
- An entry whose task vectors sum to exactly zero elects no sign in ours (it stays θ0); mergekit
  elects "+" there and keeps the positive entries.
- Model weights (ACM's λi) multiply TIES' disjoint mean in ours: Σ wi·mi·τi / Σ mi. mergekit's
  normalize divides by Σ wi·mi, so equal weights cancel out there.
- Ours computes in float32 whatever the checkpoint dtype; mergekit computes in the checkpoint's
  dtype (bf16) unless told ``dtype: float32``.
- Entries tied at the trimming threshold: ours keeps the lowest flat indices; mergekit's order
  among them is argsort's, unspecified.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip(
    "mergekit", reason="mergekit is not installed (pip install mergekit); parity with it is not checked"
)

from mergekit.config import MergeConfiguration  # noqa: E402
from mergekit.merge import run_merge as mergekit_run_merge  # noqa: E402
from mergekit.options import MergeOptions  # noqa: E402
from mergekit.sparsify import magnitude as mergekit_magnitude  # noqa: E402
from model_factory import load_state, make_model, make_pair  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from acm_exp.config import MergeConfig  # noqa: E402
from acm_exp.merge import (  # noqa: E402
    Adjustment,
    MergeSettings,
    get_method,
    open_inputs,
    run_merge,
    sparsify,  # noqa: E402
)
from acm_exp.merge.sparsify import keep_count, magnitude_trim  # noqa: E402

EMBEDDING, LM_HEAD = "model.embed_tokens.weight", "lm_head.weight"


def merge_ours(
    base: Path, finetuned: list[Path], output: Path, method: str, adjust=None, tied_head: str = "tie", **params
) -> dict[str, torch.Tensor]:
    inputs = open_inputs(base, finetuned, tied_head=tied_head)
    try:
        run_merge(
            inputs, get_method(method), MergeConfig(method=method, **params), MergeSettings(output_dir=output), adjust
        )
    finally:
        inputs.close()
    return load_state(output)


def mergekit_config(
    base: Path,
    finetuned: list[Path],
    method: str,
    *,
    k: float = 0.0,
    scale: float = 1.0,
    weights: list[float] | None = None,
    dtype: str | None = None,
    out_dtype: str | None = None,
) -> dict:
    if method == "task_arithmetic":
        weights = weights or [scale] * len(finetuned)
        models = [
            {"model": str(path), "parameters": {"weight": w}} for path, w in zip(finetuned, weights, strict=False)
        ]
        parameters: dict = {"normalize": False}
    elif method == "ties":
        weights = weights or [1.0] * len(finetuned)
        # round: 1 − 0.8 is 0.19999999999999996 in floating point; a user writes density 0.2.
        models = [
            {"model": str(path), "parameters": {"weight": w, "density": round(1.0 - k, 12)}}
            for path, w in zip(finetuned, weights, strict=False)
        ]
        parameters = {"normalize": True, "lambda": scale}
    else:
        raise ValueError(method)
    config = {"merge_method": method, "base_model": str(base), "models": models, "parameters": parameters}
    config.update({key: value for key, value in (("dtype", dtype), ("out_dtype", out_dtype)) if value})
    return config


def merge_mergekit(base: Path, finetuned: list[Path], output: Path, method: str, **options) -> dict[str, torch.Tensor]:
    config = MergeConfiguration.model_validate(mergekit_config(base, finetuned, method, **options))
    mergekit_run_merge(config, str(output), MergeOptions(device="cpu", quiet=True, write_model_card=False))
    return load_state(output)


def assert_same_tensors(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], **tolerance) -> None:
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype, name
        torch.testing.assert_close(ours[name], theirs[name], msg=name, **tolerance)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[int, tuple[Path, list[Path]]]:
    """Float32 base + 1 and base + 2 fine-tuned models."""
    return {count: make_pair(tmp_path_factory.mktemp(f"pair{count}"), count=count) for count in (1, 2)}


@pytest.mark.parametrize("count", [1, 2])
def test_task_arithmetic_matches_mergekit(pairs, tmp_path, count):
    base, finetuned = pairs[count]
    ours = merge_ours(base, finetuned, tmp_path / "ours", "task_arithmetic", scale=0.7)
    theirs = merge_mergekit(base, finetuned, tmp_path / "mergekit", "task_arithmetic", scale=0.7)
    assert_same_tensors(ours, theirs)


@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize(("k", "scale"), [(0.8, 1.0), (0.5, 0.7)])
def test_ties_matches_mergekit(pairs, tmp_path, count, k, scale):
    base, finetuned = pairs[count]
    ours = merge_ours(base, finetuned, tmp_path / "ours", "ties", k=k, scale=scale)
    theirs = merge_mergekit(base, finetuned, tmp_path / "mergekit", "ties", k=k, scale=scale)
    assert_same_tensors(ours, theirs)
    # The comparison is not vacuous: TIES changed the model, and trimmed most of each τ.
    base_state = load_state(base)
    changed = ours["model.layers.0.mlp.up_proj.weight"] != base_state["model.layers.0.mlp.up_proj.weight"]
    assert 0 < int(changed.sum()) <= count * keep_count(changed.numel(), k)


@pytest.mark.parametrize(("base_tie", "finetuned_tie"), [(True, False), (False, True), (True, True)])
def test_tied_embeddings_match_mergekit(tmp_path, base_tie, finetuned_tie):
    """A tied model's lm_head is its embedding for both; all tied, neither writes an lm_head.

    mergekit materializes lm_head from a tied base: our ``tied_head=untie`` switch (the default,
    ``tie``, keeps a tied base tied as the reference pipelines do; tests/test_faithful_defaults.py)."""
    base, finetuned = make_pair(tmp_path / "in", base_tie=base_tie, finetuned_tie=finetuned_tie, count=2)
    ours = merge_ours(base, finetuned, tmp_path / "ours", "ties", tied_head="untie", k=0.8, scale=1.0)
    theirs = merge_mergekit(base, finetuned, tmp_path / "mergekit", "ties", k=0.8, scale=1.0)
    assert_same_tensors(ours, theirs)
    all_tied = base_tie and finetuned_tie
    assert (LM_HEAD in ours) is not all_tied
    # Ours declares an lm_head it wrote as untied (mergekit keeps the base's flag).
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["tie_word_embeddings"] is all_tied


def test_bf16_inputs_match_mergekit_computing_in_float32(tmp_path):
    """Documented difference: ours computes in float32; mergekit in the checkpoint dtype by default."""
    base, finetuned = make_pair(tmp_path / "in", dtype=torch.bfloat16, count=2)
    ours = merge_ours(base, finetuned, tmp_path / "ours", "task_arithmetic", scale=0.7)
    float32_math = merge_mergekit(
        base, finetuned, tmp_path / "mk32", "task_arithmetic", scale=0.7, dtype="float32", out_dtype="bfloat16"
    )
    # Summation order differs ((τ1 + τ2)·α vs τ1·α + τ2·α), so a float32 result one ulp either side
    # of a bf16 rounding midpoint may round the other way: at most one bf16 ulp, on a few entries.
    assert_same_tensors(ours, float32_math, rtol=2**-7, atol=1e-8)
    assert sum(int((ours[n] != float32_math[n]).sum()) for n in ours) <= 0.01 * sum(t.numel() for t in ours.values())

    bf16_math = merge_mergekit(base, finetuned, tmp_path / "mk16", "task_arithmetic", scale=0.7)
    base_state, states = load_state(base), [load_state(path) for path in finetuned]
    differing = 0
    for name, merged in ours.items():
        exact = base_state[name].double() + 0.7 * sum(s[name].double() - base_state[name].double() for s in states)
        ours_error = (merged.double() - exact).abs().sum()
        assert ours_error <= (bf16_math[name].double() - exact).abs().sum(), name
        differing += int((merged != bf16_math[name]).sum())
    assert differing > 0


def test_ties_keeps_no_entry_where_the_kept_count_floors_to_zero(pairs, tmp_path):
    """Documented difference: floor((1 − k)·n) may be 0 (ours: θ0); mergekit keeps at least one."""
    base, finetuned = pairs[1]
    k = 0.99
    ours = merge_ours(base, finetuned, tmp_path / "ours", "ties", k=k, scale=1.0)
    theirs = merge_mergekit(base, finetuned, tmp_path / "mergekit", "ties", k=k, scale=1.0)
    base_state = load_state(base)
    floored = [name for name, tensor in base_state.items() if keep_count(tensor.numel(), k) == 0]
    assert floored  # norms and biases: 16 or 32 entries
    for name in base_state:
        if name in floored:
            torch.testing.assert_close(ours[name], base_state[name], rtol=0, atol=0, msg=name)
            assert int((theirs[name] != base_state[name]).sum()) == 1, name
        else:
            torch.testing.assert_close(ours[name], theirs[name], msg=name)


def _mirrored_triplet(root: Path) -> tuple[Path, list[Path], dict[str, torch.Tensor]]:
    """θ0, θ0 + τ and θ0 − τ with every value a multiple of 2^-12, so τ1 + τ2 is exactly 0."""
    base = make_model(root / "base", seed=0)
    first = make_model(root / "finetuned1", seed=1, from_model=base)
    second = make_model(root / "finetuned2", seed=2, from_model=base)
    grid = 2.0**12
    base_state = {name: torch.round(t * grid) / grid for name, t in load_state(base).items()}
    tau = {name: torch.round((t - base_state[name]) * grid) / grid for name, t in load_state(first).items()}
    save_file(base_state, base / "model.safetensors", metadata={"format": "pt"})
    save_file({n: base_state[n] + t for n, t in tau.items()}, first / "model.safetensors", metadata={"format": "pt"})
    save_file({n: base_state[n] - t for n, t in tau.items()}, second / "model.safetensors", metadata={"format": "pt"})
    return base, [first, second], tau


def test_ties_zero_sum_elects_no_sign(tmp_path):
    """Documented difference: a zero sum elects no sign (ours: θ0); mergekit elects + (θ0 + |τ|)."""
    base, finetuned, tau = _mirrored_triplet(tmp_path / "in")
    ours = merge_ours(base, finetuned, tmp_path / "ours", "ties", k=0.0, scale=1.0)
    theirs = merge_mergekit(base, finetuned, tmp_path / "mergekit", "ties", k=0.0, scale=1.0)
    base_state = load_state(base)
    assert any(bool((t != 0).any()) for t in tau.values())
    for name, vector in tau.items():
        torch.testing.assert_close(ours[name], base_state[name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(theirs[name], base_state[name] + vector.abs(), rtol=0, atol=0, msg=name)


def test_ties_model_weights_scale_the_disjoint_mean(pairs, tmp_path):
    """Documented difference: weights wi multiply the mean in ours; mergekit's normalize divides them out."""
    base, finetuned = pairs[2]
    weight = 0.5
    ours = merge_ours(
        base,
        finetuned,
        tmp_path / "ours",
        "ties",
        k=0.8,
        scale=1.0,
        adjust=lambda name: Adjustment(model_weights=(weight, weight)),
    )
    theirs = merge_mergekit(base, finetuned, tmp_path / "mergekit", "ties", k=0.8, weights=[weight, weight])
    unweighted = merge_ours(base, finetuned, tmp_path / "plain", "ties", k=0.8, scale=1.0)
    base_state = load_state(base)
    for name, tensor in base_state.items():
        torch.testing.assert_close(theirs[name], unweighted[name], msg=name)
        torch.testing.assert_close(ours[name] - tensor, weight * (unweighted[name] - tensor), msg=name)


def test_task_arithmetic_model_weights_match_mergekit_weights(pairs, tmp_path):
    base, finetuned = pairs[2]
    weights = (0.3, 0.9)
    ours = merge_ours(
        base,
        finetuned,
        tmp_path / "ours",
        "task_arithmetic",
        scale=1.0,
        adjust=lambda name: Adjustment(model_weights=weights),
    )
    theirs = merge_mergekit(base, finetuned, tmp_path / "mergekit", "task_arithmetic", weights=list(weights))
    assert_same_tensors(ours, theirs)


@pytest.fixture
def small_blocks(monkeypatch):
    """Run the sampled threshold search and the blockwise tie scan on small tensors."""
    monkeypatch.setattr(sparsify, "_SAMPLED_SELECTION_MIN", 1000)
    monkeypatch.setattr(sparsify, "_TIE_BLOCK", 1000)


@pytest.mark.parametrize("numel", [999, 200_000])
def test_magnitude_trim_matches_mergekit_magnitude(small_blocks, numel):
    """Same survivors as mergekit's magnitude sparsification (exact selection and sampled search)."""
    tensor = torch.randn(numel, generator=torch.Generator().manual_seed(0))
    for k in (0.5, 0.8, 0.99):
        torch.testing.assert_close(
            magnitude_trim(tensor, k), mergekit_magnitude(tensor, density=round(1 - k, 12)), rtol=0, atol=0
        )


def test_magnitude_trim_breaks_ties_by_lowest_index():
    """Documented: entries tied at the threshold survive in index order (mergekit: unspecified)."""
    tensor = torch.tensor([1.0, -2.0, 2.0, -1.0, 2.0, 1.0, -1.0, 0.5])
    kept = magnitude_trim(tensor, 0.5)  # keeps 4: the three 2s and the first 1
    torch.testing.assert_close(kept, torch.tensor([1.0, -2.0, 2.0, 0.0, 2.0, 0.0, 0.0, 0.0]))
    assert math.isclose(float(kept.abs().sum()), 7.0)


def test_magnitude_trim_ties_on_a_large_quantized_tensor(small_blocks):
    """Few distinct magnitudes (as in bf16 task vectors): the survivors are exactly a stable sort's."""
    tensor = torch.randint(-20, 21, (200_001,), generator=torch.Generator().manual_seed(1)).float() / 8
    for k in (0.5, 0.8):
        order = torch.sort(tensor.abs(), descending=True, stable=True).indices[: keep_count(tensor.numel(), k)]
        expected = torch.zeros_like(tensor)
        expected[order] = tensor[order]
        torch.testing.assert_close(magnitude_trim(tensor, k), expected, rtol=0, atol=0)
