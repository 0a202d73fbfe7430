"""The Hydra app as users call it: `python -m acm_exp ...`, its contract and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_factory import load_state, make_pair

from acm_exp.config import register_configs

REPO = Path(__file__).resolve().parent.parent


def run_app(*overrides: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "acm_exp", *overrides],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=900,
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return make_pair(tmp_path_factory.mktemp("pair"), count=1)


def pair_overrides(pair) -> list[str]:
    base, finetuned = pair
    return [f"model_pair.base={base}", f"model_pair.finetuned=[{','.join(map(str, finetuned))}]"]


@pytest.mark.parametrize(
    "method,params",
    [
        ("average", []),
        ("task_arithmetic", ["merge.scale=0.7"]),
        ("ties", ["merge.scale=1.0", "merge.k=0.8"]),
        ("dare", ["merge.scale=0.7", "merge.p=0.3"]),
    ],
)
def test_command_line_contract_merges_each_method(tmp_path, pair, method, params):
    output = tmp_path / "merged"
    result = run_app(
        *pair_overrides(pair),
        f"merge={method}",
        *params,
        f"merge.output_dir={output}",
        "eval=none",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr
    assert f"merged model: {output}" in result.stdout
    manifest = json.loads((output / "merge_manifest.json").read_text())
    assert manifest["method"] == method
    assert (tmp_path / "run" / "resolved_config.yaml").is_file()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(output)


def test_without_output_dir_the_merge_goes_inside_the_run_directory(tmp_path, pair):
    result = run_app(*pair_overrides(pair), "merge=task_arithmetic", "eval=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "merged" / "merge_manifest.json").is_file()


def test_bad_value_exits_nonzero_with_one_line_error(tmp_path, pair):
    result = run_app(*pair_overrides(pair), "merge=ties", "merge.k=1.5", "eval=none", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("acm_exp: error:")]
    assert errors == ["acm_exp: error: merge.k=1.5; expected a fraction in [0, 1)"]


def test_missing_model_directory_fails_before_any_work(tmp_path, pair):
    result = run_app(
        f"model_pair.base={tmp_path / 'nope'}",
        f"model_pair.finetuned=[{pair[1][0]}]",
        "eval=none",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode != 0
    assert f"acm_exp: error: model_pair.base='{tmp_path / 'nope'}': no such local directory" in result.stderr


def test_existing_output_is_kept_and_reported(tmp_path, pair):
    output = tmp_path / "merged"
    output.mkdir()
    result = run_app(
        *pair_overrides(pair),
        "merge=ties",
        f"merge.output_dir={output}",
        "eval=none",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    assert result.returncode != 0
    assert "already exists; set merge.overwrite=true" in result.stderr


def test_rerun_with_same_request_reuses_the_merge(tmp_path, pair):
    output = tmp_path / "merged"
    args = [*pair_overrides(pair), "merge=ties", f"merge.output_dir={output}", "eval=none"]
    assert run_app(*args, f"hydra.run.dir={tmp_path / 'r1'}").returncode == 0
    first = (output / "merge_manifest.json").read_text()
    second = run_app(*args, f"hydra.run.dir={tmp_path / 'r2'}")
    assert second.returncode == 0, second.stderr
    assert (output / "merge_manifest.json").read_text() == first
    changed = run_app(*args, "merge.k=0.5", f"hydra.run.dir={tmp_path / 'r3'}")
    assert changed.returncode != 0 and "already exists" in changed.stderr


def test_unknown_key_and_wrong_type_fail_at_compose_time(tmp_path):
    unknown = run_app("merge.bogus=1", f"hydra.run.dir={tmp_path}")
    assert unknown.returncode != 0 and "merge.bogus" in unknown.stderr
    wrong_type = run_app("merge.k=abc", f"hydra.run.dir={tmp_path}")
    assert wrong_type.returncode != 0 and "merge.k" in wrong_type.stderr


def test_unused_parameter_is_reported(tmp_path, pair):
    result = run_app(
        *pair_overrides(pair), "merge=average", "merge.p=0.5", "eval=none", f"hydra.run.dir={tmp_path / 'r'}"
    )
    assert result.returncode == 0, result.stderr
    assert "merge.p=0.5 is not used by merge=average" in result.stdout + result.stderr


def test_every_model_pair_config_composes():
    from hydra import compose, initialize_config_dir

    register_configs()
    pairs = sorted(p.stem for p in (REPO / "conf" / "model_pair").glob("*.yaml"))
    assert {"toy", "qwen2.5-1.5b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b", "llama2-7b"} <= set(pairs)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        for name in pairs:
            cfg = compose("config", overrides=[f"model_pair={name}"])
            assert cfg.model_pair.name == name
        toy = compose("config")
        assert toy.calibration.name == "toy"
        explicit = compose("config", overrides=["calibration=s1k"])
        assert explicit.calibration.name == "s1k"


def test_merged_tensors_match_hand_computation_through_the_app(tmp_path, pair):
    base, finetuned = pair
    output = tmp_path / "merged"
    result = run_app(
        *pair_overrides(pair),
        "merge=task_arithmetic",
        "merge.scale=0.5",
        f"merge.output_dir={output}",
        "eval=none",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr
    merged, b, f = load_state(output), load_state(base), load_state(finetuned[0])
    for name in b:
        torch.testing.assert_close(merged[name], b[name] + 0.5 * (f[name] - b[name]))


def test_help_is_the_projects_own():
    result = run_app("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "is powered by Hydra" not in text
    assert text.startswith("acm_exp merges large language models with Activation-Guided Consensus Merging")
    groups = text[text.index("config groups") : text.index("examples:")]
    assert "_schema" not in groups
    for group in ("model_pair", "merge", "calibration", "eval", "logger", "experiment", "hydra/launcher"):
        assert f"\n  {group} " in groups, group
    assert "slurm, slurm_cpu" in groups and "qwen2.5-7b" in groups and "acm_ties" in groups
    examples = [
        line.strip() for line in text[text.index("examples:") :].splitlines() if line.strip().startswith("python")
    ]
    assert examples[0] == "python -m acm_exp"
    assert any("model_pair=qwen2.5-7b" in line for line in examples)
    assert any("merge.t=0.3,0.5" in line for line in examples)
    assert any("+experiment=" in line and "hydra/launcher=slurm" in line for line in examples)
    assert any(line.startswith("python -m acm_exp.figures") for line in examples)
    assert "python -m acm_exp.results" in text and "acm_exp.figures" in text and "outputs/runs/" in text


def test_helps_example_commands_compose():
    from app_config import compose_config

    from acm_exp.cli_help import EXAMPLES
    from acm_exp.sweep import sweep_points

    commands = [line.split()[3:] for line in EXAMPLES.splitlines() if line.strip().startswith("python -m acm_exp ")]
    commands.append([])  # `python -m acm_exp` alone
    assert len(commands) == 4
    for arguments in commands:
        overrides = [argument for argument in arguments if argument != "-m"]
        for point in sweep_points({}, overrides)[:1]:
            compose_config(*point, hydra_config=True)
