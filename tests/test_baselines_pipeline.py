"""AIM and Sens-Merging through the pipeline on the toy pair: merged tensors equal hand computations
from the saved statistics, and AIM reuses the importance that an ACM capture pass stored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from app_config import compose_config
from model_factory import load_state

from acm_exp.acm import modeling
from acm_exp.acm.importance import compute_input_importance, relaxation_factor
from acm_exp.acm.sensitivity import SensCoefficients
from acm_exp.calibration import select_calibration
from acm_exp.merge.sparsify import magnitude_trim, sign_consensus_mean
from acm_exp.pipeline import run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(toy_pair, tmp_path_factory) -> Path:
    # A private cache beside the session's toy pair: the AIM-after-ACM test needs a cold start.
    cache = tmp_path_factory.mktemp("baselines_cache")
    (cache / "toy").symlink_to(next(iter(toy_pair.values())).parents[1])
    return cache


def run_toy(tmp_path: Path, cache_dir: Path, *overrides: str) -> Path:
    # untie: these hand computations cover every tensor of the fine-tuned model, lm_head included
    # (the tied default is checked in test_faithful_defaults.py).
    cfg = compose_config(
        "eval=none",
        "logger.wandb.mode=disabled",
        f"logger.results_dir={tmp_path / 'results'}",
        f"cache_dir={cache_dir}",
        "calibration.per_cluster=3",
        "model_pair.tied_head=untie",
        *overrides,
    )
    return run(cfg, run_dir=tmp_path / "run")


def base_tensor(base: dict, name: str) -> torch.Tensor:
    # The toy base is tied: its lm_head is its embedding.
    return base["model.embed_tokens.weight" if name == "lm_head.weight" and name not in base else name].float()


def assert_bf16_equal(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    torch.testing.assert_close(actual.float(), expected.to(torch.bfloat16).float(), rtol=0, atol=0, msg=name)


def test_aim_relaxes_the_ties_delta_per_input_channel_and_reuses_the_acm_capture(tmp_path, toy_pair, cache_dir):
    before = modeling.FORWARD_PASSES
    run_toy(tmp_path / "acm", cache_dir, "merge=acm_ties")
    after_acm = modeling.FORWARD_PASSES
    merged_dir = run_toy(tmp_path / "aim", cache_dir, "merge=aim", "merge.omega=0.4", "merge.k=0.5")
    assert after_acm > before and modeling.FORWARD_PASSES == after_acm  # AIM ran no forward pass of its own

    cfg = compose_config("calibration=toy", "calibration.per_cluster=3")
    texts = select_calibration(cfg.calibration, cache_dir=cache_dir).texts
    importance = compute_input_importance(toy_pair["base"], texts, device="auto", dtype="bfloat16", cache_dir=cache_dir)
    base, finetuned, merged = load_state(toy_pair["base"]), load_state(toy_pair["finetuned"]), load_state(merged_dir)
    relaxed = 0
    for name, tensor in finetuned.items():
        theta0 = base_tensor(base, name)
        delta = sign_consensus_mean([magnitude_trim(tensor.float() - theta0, 0.5)], [1.0])
        values = importance.importance.get(name)
        if values is not None:
            # θ0 + Δ ⊙ (1 − imp·(1 − ω)), the factor broadcast over the output rows of a linear weight,
            # elementwise on a norm weight
            factor = relaxation_factor(values, 0.4)
            delta = delta * (factor.reshape(-1) if delta.dim() == 1 else factor)
            relaxed += 1
        assert_bf16_equal(merged[name], theta0 + delta, name)
    # q/k/v/o/gate/up/down and both norms of both layers, the final norm and lm_head; not the embedding
    assert relaxed == 2 * (7 + 2) + 1 + 1
    assert '"importance_cache_key"' in (merged_dir / "merge_manifest.json").read_text()


def test_sens_weights_layers_by_sensitivity_and_leaves_other_tensors_as_task_arithmetic(tmp_path, toy_pair, cache_dir):
    merged_dir = run_toy(tmp_path, cache_dir, "merge=sens", "merge.alpha=0.6", "merge.temperature=0.5")
    coefficients = SensCoefficients.from_json(tmp_path / "run" / "coefficients.json")
    assert (tmp_path / "run" / "coefficients.png").is_file()
    assert coefficients.alpha == 0.6 and coefficients.num_layers == 2
    torch.testing.assert_close(
        torch.as_tensor(coefficients.c_base + coefficients.c_ft), torch.full((2,), 2.0, dtype=torch.float64)
    )
    assert len(set(coefficients.c_ft.round(6))) == 2  # the two layers got different weights
    base, finetuned, merged = load_state(toy_pair["base"]), load_state(toy_pair["finetuned"]), load_state(merged_dir)
    for name, tensor in finetuned.items():
        theta0 = base_tensor(base, name)
        tau = tensor.float() - theta0
        if name.startswith("model.layers."):
            layer = int(name.split(".")[2])
            c_base, c_ft = float(coefficients.c_base[layer]), float(coefficients.c_ft[layer])
            expected = c_ft * (0.6 * tau) + c_base * theta0
        else:
            expected = 0.6 * tau + theta0
        torch.testing.assert_close(
            merged[name].float(),
            expected.to(torch.bfloat16).float(),
            rtol=0,
            atol=float(expected.abs().max()) * 2**-7,
            msg=name,
        )
