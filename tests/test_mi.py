"""Mutual information estimators: discrete (== sklearn's mutual_info_score) and histogram."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from model_factory import tiny_config
from sklearn.metrics import mutual_info_score

from acm_exp.acm import mi as mi_module
from acm_exp.acm import mutual_information
from acm_exp.acm.capture import capture_modules
from acm_exp.acm.mi import bin_indices, discrete_mi_torch
from acm_exp.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sklearn_mi(x, y) -> float:
    """sklearn on the same values (bf16 -> float32 is exact)."""
    to_numpy = lambda v: v.float().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "expects discrete values but received continuous values"
        return mutual_info_score(to_numpy(x).reshape(-1), to_numpy(y).reshape(-1))


def assert_close(ours: float, reference: float) -> None:
    assert ours == pytest.approx(reference, rel=1e-6, abs=1e-12)


def correlated(n: int, noise: float, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=generator)
    y = x + noise * torch.randn(n, generator=generator)
    return x.to(dtype), y.to(dtype)


def numpy_kernels(x, y) -> float:
    """mutual_information with the numpy kernels, as on a machine without numba."""
    compiled = mi_module.COMPILED
    mi_module.COMPILED = False
    try:
        return mutual_information(x, y)
    finally:
        mi_module.COMPILED = compiled


# mutual_information: the compiled 16-bit kernels where numba is installed.
BOTH_BACKENDS = [mutual_information, discrete_mi_torch]
ALL_BACKENDS = [mutual_information, numpy_kernels, discrete_mi_torch]
ALL_IDS = ["default", "numpy", "torch"]


@pytest.mark.parametrize("estimate", ALL_BACKENDS, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("n,noise", [(2000, 0.05), (20000, 1.0), (5000, 10.0)])
def test_discrete_matches_sklearn_on_random_data(estimate, dtype, n, noise):
    x, y = correlated(n, noise, dtype)
    assert_close(estimate(x, y), sklearn_mi(x, y))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,noise", [(300_000, 0.3), (100_000, 30.0), (50_000, 0.0)])
def test_compiled_kernels_equal_the_numpy_ones(dtype, n, noise):
    pytest.importorskip("numba")
    assert mi_module.COMPILED
    x, y = correlated(n, noise, dtype, seed=8)
    x[:100] = -0.0  # the -0.0 code folds into +0.0's group
    y[50:60] = float("inf")
    assert mutual_information(x, y) == pytest.approx(numpy_kernels(x, y), rel=1e-12)


@pytest.mark.parametrize("size", [1, 2, 7, 10_001])
def test_compiled_pair_count_equals_bincount(size):
    """One pass counts both variables (two interleaved tables each; an odd size leaves a remainder)."""
    pytest.importorskip("numba")
    generator = np.random.default_rng(size)
    bits_x = generator.integers(0, 1 << 16, size, dtype=np.uint16)
    bits_y = np.repeat(generator.integers(0, 1 << 16, 3, dtype=np.uint16), size)[:size]  # runs of equal codes
    counts_x, counts_y = mi_module._compiled(mi_module._count_16bit_pair_loop)(bits_x, bits_y)
    np.testing.assert_array_equal(counts_x, np.bincount(bits_x, minlength=1 << 16))
    np.testing.assert_array_equal(counts_y, np.bincount(bits_y, minlength=1 << 16))


@pytest.mark.parametrize("estimate", ALL_BACKENDS, ids=ALL_IDS)
def test_pairs_counted_beyond_the_lookup_table(estimate):
    """A pair seen more often than the c·log c table covers (2^16) takes the computed branch."""
    x, y = correlated(30_000, 0.3, torch.bfloat16, seed=4)
    x = torch.cat([x, torch.full((70_000,), 1.5, dtype=torch.bfloat16)])
    y = torch.cat([y, torch.full((70_000,), -2.0, dtype=torch.bfloat16)])
    assert 70_000 > mi_module._XLOGX_LIMIT
    assert_close(estimate(x, y), sklearn_mi(x, y))


@pytest.mark.parametrize("estimate", ALL_BACKENDS, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_negative_zero_is_the_same_symbol_as_zero(estimate, dtype):
    x, y = correlated(3000, 0.5, dtype, seed=1)
    x[:300], x[300:500], y[100:400] = 0.0, -0.0, -0.0
    assert torch.signbit(x[300:500]).all()
    reference = sklearn_mi(x, y)
    assert_close(estimate(x, y), reference)
    assert_close(estimate(x + 0.0, y + 0.0), reference)  # -0.0 + 0.0 == +0.0


@pytest.mark.parametrize("estimate", ALL_BACKENDS, ids=ALL_IDS)
def test_infinities_are_symbols(estimate):
    x, y = correlated(4000, 0.3, torch.bfloat16, seed=2)
    x[:10], x[10:20], y[5:15] = float("inf"), float("-inf"), float("inf")
    # sklearn refuses Inf; the same symbols under finite stand-in values give the reference.
    stand_in = lambda v: torch.nan_to_num(v.float(), posinf=1e30, neginf=-1e30)  # noqa: E731
    assert_close(estimate(x, y), sklearn_mi(stand_in(x), stand_in(y)))


@pytest.mark.parametrize("estimate", BOTH_BACKENDS, ids=["numpy", "torch"])
def test_integer_and_boolean_inputs(estimate):
    rng = np.random.default_rng(3)
    x = rng.integers(-5, 5, 3000)
    y = x * 2 + rng.integers(0, 3, 3000)
    assert_close(estimate(torch.from_numpy(x), torch.from_numpy(y)), mutual_info_score(x, y))
    flags = torch.from_numpy(x > 0)
    assert_close(estimate(flags, torch.from_numpy(y)), mutual_info_score(x > 0, y))


def test_numpy_inputs_and_mixed_dtypes():
    x, y = correlated(3000, 0.2, torch.float16, seed=4)
    reference = sklearn_mi(x, y)
    assert_close(mutual_information(x.numpy(), y.numpy()), reference)  # numpy float16: the 16-bit kernels
    assert_close(mutual_information(x.float().numpy(), y), reference)  # same values, other dtype
    assert_close(mutual_information(x.reshape(30, 100), y.reshape(100, 30)), reference)  # flattened


@pytest.mark.parametrize("estimate", [numpy_kernels, discrete_mi_torch], ids=["numpy", "torch"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("cells_per_value", [0, 0.05, 0.5])
def test_tables_smaller_than_the_joint_agree(estimate, dtype, cells_per_value, monkeypatch):
    """Below the cell budget: frequent pairs in a small table, the others sorted (or all sorted)."""
    x, y = correlated(6000, 0.1, dtype, seed=5)
    reference = sklearn_mi(x, y)
    monkeypatch.setattr(mi_module, "DENSE_CELLS_FLOOR", 0)
    monkeypatch.setattr(mi_module, "DENSE_CELLS_PER_SAMPLE", cells_per_value)
    assert_close(estimate(x, y), reference)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("cells_per_value", [0, 4])
@pytest.mark.parametrize("chunk", [1, 997, 1 << 23])
def test_torch_kernels_count_chunk_by_chunk(dtype, cells_per_value, chunk, monkeypatch):
    """The accelerator kernels read TORCH_CHUNK values at a time (bounded working memory): any chunk
    size, dense table or running unique pairs, gives sklearn's MI (-0.0 included)."""
    x, y = correlated(6000, 0.2, dtype, seed=11)
    x[:40] = -0.0
    reference = sklearn_mi(x, y)
    monkeypatch.setattr(mi_module, "TORCH_CHUNK", chunk)
    monkeypatch.setattr(mi_module, "DENSE_CELLS_FLOOR", 0)
    monkeypatch.setattr(mi_module, "DENSE_CELLS_PER_SAMPLE", cells_per_value)
    assert_close(discrete_mi_torch(x, y), reference)
    assert_close(discrete_mi_torch(x[:1], y[:1]), 0.0)


def test_all_distinct_values_give_the_entropy():
    x = torch.arange(1000, dtype=torch.float32) * 0.37
    y = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).float()
    assert_close(mutual_information(x, y), math.log(1000))
    assert_close(mutual_information(x, y), sklearn_mi(x, y))


@pytest.mark.parametrize("estimate", ALL_BACKENDS, ids=ALL_IDS)
def test_degenerate_inputs(estimate):
    constant = torch.full((100,), 1.5, dtype=torch.bfloat16)
    varying = torch.randn(100).bfloat16()
    assert estimate(constant, varying) == 0.0
    assert estimate(varying, constant) == 0.0
    assert estimate(torch.ones(1), torch.zeros(1)) == 0.0
    assert sklearn_mi(constant, varying) == 0.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("estimate", ALL_BACKENDS, ids=ALL_IDS)
def test_nan_is_rejected(dtype, estimate):
    x, y = correlated(100, 0.1, dtype)
    y[7] = float("nan")
    with pytest.raises(DataError, match="y contains NaN"):
        estimate(x, y)
    with pytest.raises(DataError, match="x contains NaN"):
        estimate(y, x)


def test_numpy_float16_nan_is_rejected():
    values = np.ones(10, dtype=np.float16)
    values[3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        mutual_information(values, np.arange(10, dtype=np.float16))


def test_bad_inputs_are_rejected():
    with pytest.raises(DataError, match="empty"):
        mutual_information(torch.empty(0), torch.empty(0))
    with pytest.raises(DataError, match="x has 3 values and y has 4"):
        mutual_information(torch.ones(3), torch.ones(4))
    with pytest.raises(DataError, match="complex"):
        mutual_information(torch.ones(3, dtype=torch.complex64), torch.ones(3))
    with pytest.raises(DataError, match="dtype"):
        mutual_information(np.array(["a", "b"]), np.array(["a", "b"]))


def test_bad_settings_are_rejected():
    x = torch.randn(10)
    with pytest.raises(ConfigError, match="acm.estimator='kde'"):
        mutual_information(x, x, estimator="kde")
    with pytest.raises(ConfigError, match="needs acm.bins"):
        mutual_information(x, x, estimator="histogram")
    with pytest.raises(ConfigError, match="only used by acm.estimator=histogram"):
        mutual_information(x, x, bins=16)
    with pytest.raises(ConfigError, match="acm.bins=1"):
        mutual_information(x, x, estimator="histogram", bins=1)
    with pytest.raises(ConfigError, match="acm.bins=2.5"):
        mutual_information(x, x, estimator="histogram", bins=2.5)
    with pytest.raises(ConfigError, match="acm.binning='log'"):
        mutual_information(x, x, estimator="histogram", bins=8, binning="log")


# ---------------------------------------------------------------------------------------------
# Histogram estimator against a brute-force reference


def brute_force_bins(values: list[float], bins: int, binning: str) -> list[int]:
    low, high = min(values), max(values)
    if low == high:
        return [0] * len(values)
    if binning == "uniform":
        edges = [low + (high - low) * (k / bins) for k in range(1, bins)]
    else:
        edges = [float(np.quantile(np.array(values), k / bins)) for k in range(1, bins)]
    return [sum(1 for edge in edges if edge <= value) for value in values]


def brute_force_mi(a: list[int], b: list[int]) -> float:
    n = len(a)
    joint, left, right = Counter(zip(a, b, strict=False)), Counter(a), Counter(b)
    return sum(c / n * math.log(c * n / (left[i] * right[j])) for (i, j), c in joint.items())


@pytest.mark.parametrize("binning", ["uniform", "quantile"])
@pytest.mark.parametrize("bins", [2, 7, 32])
def test_histogram_matches_brute_force(binning, bins):
    rng = np.random.default_rng(bins)
    x = rng.standard_t(3, 501)
    y = x + rng.normal(0, 0.5, 501)
    expected_x = brute_force_bins(list(x), bins, binning)
    assert bin_indices(torch.from_numpy(x), bins, binning).tolist() == expected_x
    expected = brute_force_mi(expected_x, brute_force_bins(list(y), bins, binning))
    ours = mutual_information(
        torch.from_numpy(x), torch.from_numpy(y), estimator="histogram", bins=bins, binning=binning
    )
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_histogram_edges_and_degenerate_inputs():
    values = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    # Equal-width bins [0,1), [1,2), [2,3), [3,4]: the maximum falls in the last, closed bin.
    assert bin_indices(values, 4, "uniform").tolist() == [0, 1, 2, 3, 3]
    constant = torch.full((50,), 2.0)
    assert mutual_information(constant, torch.randn(50), estimator="histogram", bins=8) == 0.0
    with pytest.raises(DataError, match="finite"):
        mutual_information(torch.tensor([1.0, float("inf")]), torch.ones(2), estimator="histogram", bins=4)


def test_histogram_on_bf16_and_numpy_inputs():
    x, y = correlated(4000, 0.5, torch.bfloat16, seed=6)
    from_torch = mutual_information(x, y, estimator="histogram", bins=16, binning="quantile")
    from_numpy = mutual_information(
        x.float().numpy(), y.float().numpy(), estimator="histogram", bins=16, binning="quantile"
    )
    assert from_torch == pytest.approx(from_numpy, rel=1e-12)
    assert 0 < from_torch < math.log(16)


# ---------------------------------------------------------------------------------------------
# Real activations


def _activations(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o.detach()))
        for name, module in capture_modules(model)
    ]
    with torch.inference_mode():
        model(input_ids=ids, use_cache=False)
    for handle in handles:
        handle.remove()
    return captured


@pytest.mark.parametrize("estimate", ALL_BACKENDS, ids=ALL_IDS)
def test_discrete_matches_sklearn_on_real_bf16_activations(estimate):
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    base = Qwen2ForCausalLM(tiny_config("qwen2", vocab_size=512, hidden=64, layers=2)).to(torch.bfloat16).eval()
    tuned = Qwen2ForCausalLM(tiny_config("qwen2", vocab_size=512, hidden=64, layers=2)).to(torch.bfloat16).eval()
    tuned.load_state_dict(
        {name: tensor + 0.01 * torch.randn_like(tensor) for name, tensor in base.state_dict().items()}
    )
    ids = torch.randint(0, 512, (1, 48), generator=torch.Generator().manual_seed(1))
    left, right = _activations(base, ids), _activations(tuned, ids)
    assert list(left) == ["embed_tokens", "layers.0", "layers.1", "norm", "lm_head"]
    for name in left:
        assert left[name].dtype == torch.bfloat16
        assert_close(estimate(left[name], right[name]), sklearn_mi(left[name], right[name]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_discrete_on_cuda_matches_sklearn(dtype):
    x, y = correlated(200_000, 0.3, dtype, seed=7)
    assert_close(mutual_information(x.cuda(), y.cuda()), sklearn_mi(x, y))
    assert_close(mutual_information(x.cuda(), y), sklearn_mi(x, y))
