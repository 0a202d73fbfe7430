"""Each merge method against a result computed by hand on small tensors."""

from __future__ import annotations

import pytest
import torch

from acm_exp.config import MergeConfig
from acm_exp.errors import ConfigError
from acm_exp.merge import Adjustment, get_method
from acm_exp.merge.engine import merge_tensor
from acm_exp.merge.sparsify import keep_count, magnitude_trim

BASE = torch.tensor([1.0, 1.0, 1.0, 1.0])
# Task vectors τ1 = [0.5, -0.1, 0.2, -0.4], τ2 = [-0.3, 0.2, 0.1, 0.6]
FINETUNED = [BASE + torch.tensor([0.5, -0.1, 0.2, -0.4]), BASE + torch.tensor([-0.3, 0.2, 0.1, 0.6])]


NO_ADJUSTMENT = Adjustment()


def merged(method: str, finetuned=FINETUNED, adjustment=NO_ADJUSTMENT, seed: int = 0, **params) -> torch.Tensor:
    config = MergeConfig(method=method, **params)
    generator = torch.Generator().manual_seed(seed)
    return merge_tensor(BASE, finetuned, get_method(method), config, adjustment, generator)


def test_average_is_mean_of_all_models():
    expected = (BASE + FINETUNED[0] + FINETUNED[1]) / 3
    torch.testing.assert_close(merged("average"), expected)


def test_task_arithmetic_adds_scaled_sum_of_task_vectors():
    expected = BASE + 0.7 * torch.tensor([0.2, 0.1, 0.3, 0.2])
    torch.testing.assert_close(merged("task_arithmetic", scale=0.7), expected)


def test_ties_trims_elects_sign_and_takes_disjoint_mean():
    # k=0.5 keeps the 2 largest-magnitude entries of each τ: τ1 -> [0.5, 0, 0, -0.4], τ2 -> [-0.3, 0, 0, 0.6]
    # elected signs from the sums [0.2, 0, 0, 0.2]: [+, 0, 0, +]; agreeing entries: [0.5, -, -, 0.6]
    expected = BASE + 0.9 * torch.tensor([0.5, 0.0, 0.0, 0.6])
    torch.testing.assert_close(merged("ties", k=0.5, scale=0.9), expected)


def test_ties_with_one_model_is_scaled_trimmed_task_vector():
    expected = BASE + torch.tensor([0.5, 0.0, 0.0, -0.4])
    torch.testing.assert_close(merged("ties", finetuned=FINETUNED[:1], k=0.5, scale=1.0), expected)


def test_ties_averages_agreeing_entries_over_agreeing_models_only():
    finetuned = [BASE + torch.tensor([0.4, 0.2, 0.0, 0.0]), BASE + torch.tensor([0.2, -0.1, 0.0, 0.0])]
    # k=0: nothing trimmed. Entry 0: both positive -> (0.4 + 0.2) / 2. Entry 1: sum 0.1 > 0 -> only 0.2.
    expected = BASE + torch.tensor([0.3, 0.2, 0.0, 0.0])
    torch.testing.assert_close(merged("ties", finetuned=finetuned, k=0.0, scale=1.0), expected)


def test_dare_drops_with_seeded_mask_and_rescales_survivors():
    p = 0.5
    generator = torch.Generator().manual_seed(3)
    keep = [torch.rand(4, generator=generator) >= p for _ in FINETUNED]
    taus = [f - BASE for f in FINETUNED]
    expected = BASE + 0.7 * sum(t * k / (1 - p) for t, k in zip(taus, keep, strict=False))
    torch.testing.assert_close(merged("dare", p=p, scale=0.7, combine="ta", seed=3), expected)


def test_dare_is_deterministic_for_a_seed_and_differs_across_seeds():
    big = [torch.randn(1000, generator=torch.Generator().manual_seed(1))]
    base = torch.zeros(1000)
    config = MergeConfig(method="dare", p=0.3, scale=1.0)
    method = get_method("dare")

    def run(seed):
        return merge_tensor(base, big, method, config, Adjustment(), torch.Generator().manual_seed(seed))

    torch.testing.assert_close(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    dropped = (run(0) == 0).float().mean().item()
    assert 0.25 < dropped < 0.35


# The three DARE rows of the L2S code, by hand. With seed 5 and p = 0.5 the drop masks are
# keep1 = [1, 0, 1, 1] and keep2 = [1, 0, 0, 1] (torch.rand(4) >= p, τ1's mask drawn first), so the
# rescaled survivors (× 1/(1 − p) = 2) are τ1' = [1.0, 0, 0.4, -0.8] and τ2' = [-0.6, 0, 0, 1.2].
DARE_SEED = 5


def test_dare_drop_masks_of_the_hand_computations():
    generator = torch.Generator().manual_seed(DARE_SEED)
    masks = [(torch.rand(4, generator=generator) >= 0.5).tolist() for _ in FINETUNED]
    assert masks == [[True, False, True, True], [True, False, False, True]]


def test_dare_average_averages_the_sparsified_models_with_the_base():
    # (θ0 + (θ0 + τ1') + (θ0 + τ2')) / 3 = θ0 + [0.4, 0, 0.4, 0.4] / 3
    expected = BASE + torch.tensor([0.4, 0.0, 0.4, 0.4]) / 3
    torch.testing.assert_close(merged("dare", p=0.5, combine="average", seed=DARE_SEED), expected)


def test_dare_ta_adds_the_scaled_sum_of_the_sparsified_task_vectors():
    expected = BASE + 0.7 * torch.tensor([0.4, 0.0, 0.4, 0.4])
    torch.testing.assert_close(merged("dare", p=0.5, combine="ta", scale=0.7, seed=DARE_SEED), expected)


def test_dare_ties_trims_the_sparsified_task_vectors_before_the_sign_consensus():
    # k = 0.5 keeps the 2 largest of each: τ1' -> [1.0, 0, 0, -0.8], τ2' -> [-0.6, 0, 0, 1.2]; the sums
    # [0.4, 0, 0, 0.4] elect [+, 0, 0, +]; the agreeing entries are 1.0 (τ1') and 1.2 (τ2'); × α = 0.5.
    # Without the trim, entry 2 would keep τ1's 0.4.
    expected = BASE + torch.tensor([0.5, 0.0, 0.0, 0.6])
    torch.testing.assert_close(merged("dare", p=0.5, combine="ties", k=0.5, scale=0.5, seed=DARE_SEED), expected)


def test_dare_rejects_unknown_combination():
    with pytest.raises(ConfigError, match="combine"):
        merged("dare", combine="mean")


def test_breadcrumbs_drops_small_and_outlier_entries():
    base = torch.zeros(10)
    tau = torch.arange(1.0, 11.0)  # magnitudes 1..10
    config = MergeConfig(method="breadcrumbs", k=0.5, gamma=0.1, scale=1.0)
    result = merge_tensor(base, [base + tau], get_method("breadcrumbs"), config, Adjustment(), torch.Generator())
    # drop the largest 10 % (10) and keep the next 50 % (9, 8, 7, 6, 5)
    expected = torch.tensor([0, 0, 0, 0, 5, 6, 7, 8, 9, 0.0])
    torch.testing.assert_close(result, expected)


def test_model_weights_and_adjustment_factors():
    adjustment = Adjustment(model_weights=(0.5, 2.0), base_factor=0.8, delta_factor=torch.tensor([1.0, 0.0, 1.0, 1.0]))
    taus = [f - BASE for f in FINETUNED]
    expected = 0.8 * BASE + torch.tensor([1.0, 0.0, 1.0, 1.0]) * (0.5 * taus[0] + 2.0 * taus[1])
    torch.testing.assert_close(merged("task_arithmetic", scale=1.0, adjustment=adjustment), expected)


def test_acm_task_arithmetic_averages_weighted_task_vectors():
    adjustment = Adjustment(model_weights=(0.2, 0.6))
    taus = [f - BASE for f in FINETUNED]
    expected = BASE + (0.2 * taus[0] + 0.6 * taus[1]) / 2
    torch.testing.assert_close(merged("acm_ta", scale=1.0, adjustment=adjustment), expected)


def test_keep_count_survives_float_rounding():
    assert keep_count(10, 0.8) == 2
    assert keep_count(5, 0.0) == 5
    assert keep_count(5, 1.0) == 0


def test_magnitude_trim_keeps_exactly_the_largest():
    tensor = torch.tensor([[0.1, -3.0], [2.0, -0.5]])
    torch.testing.assert_close(magnitude_trim(tensor, 0.5), torch.tensor([[0.0, -3.0], [2.0, 0.0]]))


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown merge method 'slerpy'"):
        get_method("slerpy")


@pytest.mark.parametrize("numel", [3_000, 1_000_003])
def test_every_kth_largest_selection_is_exact(numel):
    """numpy's selection (CPU), the sampled one (accelerators) and torch's agree, ties and misses included."""
    from acm_exp.merge import sparsify

    values = (torch.randn(numel, generator=torch.Generator().manual_seed(numel)) * 8).round().abs()
    for k in (1, numel // 5, numel // 2, numel):
        expected = torch.kthvalue(values, numel - k + 1).values
        assert sparsify.kth_largest(values, k) == expected
        assert sparsify.sampled_kth_largest(values, k) == expected
