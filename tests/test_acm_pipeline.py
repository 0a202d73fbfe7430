"""ACM through the pipeline on the toy pair: merges equal hand computations from the saved
coefficients, the post-hoc `merged` variant, and a sweep over t captures activations once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from app_config import compose_config
from model_factory import load_state

from acm_exp.acm import Coefficients, modeling
from acm_exp.pipeline import run

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(toy_pair) -> Path:
    # The session's toy pair lives under <cache>/toy/...; MI statistics join it under <cache>/mi.
    return next(iter(toy_pair.values())).parents[2]


def run_toy(tmp_path: Path, cache_dir: Path, *overrides: str) -> Path:
    # untie: these hand computations cover every tensor of the fine-tuned model, lm_head included
    # (the tied default is checked in test_faithful_defaults.py).
    cfg = compose_config(
        "eval=none",
        "logger.wandb.mode=disabled",
        f"logger.results_dir={tmp_path / 'results'}",
        f"cache_dir={cache_dir}",
        "model_pair.tied_head=untie",
        *overrides,
    )
    return run(cfg, run_dir=tmp_path / "run")


def expected_merge(base: dict, others: list[dict], weight_of) -> dict:
    """θ0 + weight(name) · (θ_other − θ0), in float32, for a single compared model."""
    result = {}
    for name, tensor in others[0].items():
        theta0 = base.get(name, base["model.embed_tokens.weight"] if name == "lm_head.weight" else None).float()
        result[name] = theta0 + weight_of(name) * (tensor.float() - theta0)
    return result


def assert_state_close(merged: dict, expected: dict) -> None:
    assert merged.keys() == expected.keys()
    for name, tensor in expected.items():
        # the merge is written in the base's dtype (bf16): compare at bf16 resolution
        torch.testing.assert_close(merged[name].float(), tensor.to(torch.bfloat16).float(), rtol=0, atol=0, msg=name)


def test_acm_ta_equals_base_plus_lambda_times_task_vector(tmp_path, toy_pair, cache_dir):
    merged_dir = run_toy(tmp_path, cache_dir, "merge=acm_ta", "merge.t=0.7")
    coefficients = Coefficients.from_json(tmp_path / "run" / "coefficients.json")
    assert (tmp_path / "run" / "coefficients.png").is_file()
    lambdas = {point: coefficients.for_point(0, point) for point in coefficients.point_names}
    assert set(lambdas) == {"embed_tokens", "layers.0", "layers.1", "norm", "lm_head"}
    assert all(0.0 <= value <= 1.0 for value in lambdas.values())
    base, finetuned = load_state(toy_pair["base"]), load_state(toy_pair["finetuned"])
    # ACM-TA's default α is TA's 0.7: θ0 + α·λ·τ
    expected = expected_merge(base, [finetuned], lambda name: 0.7 * coefficients.for_parameter(0, name))
    assert_state_close(load_state(merged_dir), expected)
    # the layer a parameter belongs to decides its λ
    assert coefficients.for_parameter(0, "model.layers.1.self_attn.q_proj.bias") == lambdas["layers.1"]
    manifest = (merged_dir / "merge_manifest.json").read_text()
    assert '"selection_hash"' in manifest and '"mi_cache_key"' in manifest


def test_merged_variant_rescales_the_plain_merge(tmp_path, toy_pair, cache_dir):
    merged_dir = run_toy(tmp_path, cache_dir, "merge=acm_ta", "merge.scale=0.7", "acm.against=merged")
    plain = load_state(tmp_path / "run" / "plain_merge")
    base = load_state(toy_pair["base"])
    coefficients = Coefficients.from_json(tmp_path / "run" / "coefficients.json")
    expected = expected_merge(base, [plain], lambda name: coefficients.for_parameter(0, name))
    merged = load_state(merged_dir)
    for name, tensor in expected.items():
        # θ_plain itself was rounded to bf16 before the rescale: allow one bf16 step
        torch.testing.assert_close(merged[name].float(), tensor, rtol=1e-2, atol=1e-2, msg=name)


def test_sweep_over_t_runs_one_activation_pass(tmp_path, cache_dir):
    forward_passes = []
    lambdas = []
    for t in (0.5, 0.7, 0.9):
        before = modeling.FORWARD_PASSES
        run_toy(tmp_path / f"t{t}", cache_dir, "merge=acm_ties", f"merge.t={t}", "calibration.per_cluster=3")
        forward_passes.append(modeling.FORWARD_PASSES - before)
        coefficients = Coefficients.from_json(tmp_path / f"t{t}" / "run" / "coefficients.json")
        lambdas.append(coefficients.for_point(0, "layers.0"))
    assert forward_passes[0] > 0 and forward_passes[1:] == [0, 0]
    assert len(set(lambdas)) == 3  # t changes λ, the cached MI does not change


def test_hydra_multirun_sweep_captures_once(tmp_path, cache_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "acm_exp",
            "-m",
            "merge=acm_ties",
            "merge.t=0.5,0.7,0.9",
            "eval=none",
            "calibration.per_cluster=2",
            "logger.wandb.mode=disabled",
            f"logger.results_dir={tmp_path / 'results'}",
            f"cache_dir={cache_dir}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logs = "".join(path.read_text() for path in (tmp_path / "sweep").rglob("*.log"))
    assert logs.count("capturing activations") == 1
    assert len(list((tmp_path / "sweep").glob("*/merged/merge_manifest.json"))) == 3
