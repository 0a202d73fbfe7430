"""A bad value is reported before anything heavy loads: the CLI's validation path imports no torch,
transformers, pandas, datasets, W&B or SLURM launcher plugin (issue: a bad value in <= 1.5 s).

Each check runs the real entry point in a fresh interpreter and reads ``sys.modules`` when it exits;
no wall-clock bound (tests/benchmarks/startup_bench.py measures the times against a baseline).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from model_factory import make_pair

REPO = Path(__file__).resolve().parent.parent
# Modules a validation must not load: the model stack, the results table's stack, W&B, the hub's
# dataset loader and submitit (SLURM; Hydra's plugin scan imports every plugin's own light module, and
# hydra-submitit-launcher's imports submitit only when it launches).
HEAVY = (
    "torch",
    "transformers",
    "pandas",
    "datasets",
    "wandb",
    "vllm",
    "sentence_transformers",
    "sklearn",
    "submitit",
)
MARKER = "HEAVY-MODULES:"

# Runs ``python -m acm_exp <arguments>`` and prints which HEAVY modules were loaded when it exited.
RUN_CLI = f"""
import atexit, json, runpy, sys
heavy = {HEAVY!r}
atexit.register(lambda: print({MARKER!r} + json.dumps(sorted(m for m in heavy if m in sys.modules)), flush=True))
sys.argv = ["acm_exp", *sys.argv[1:]]
runpy.run_module("acm_exp", run_name="__main__", alter_sys=True)
"""


def loaded_heavy_modules(*arguments: str, cwd: Path) -> tuple[list[str], subprocess.CompletedProcess]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "ACM_EXP_CACHE": str(cwd / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", RUN_CLI, *arguments], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    assert lines, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(lines[-1].removeprefix(MARKER)), done


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base, (finetuned,) = make_pair(tmp_path_factory.mktemp("pair"))
    return [f"model_pair.base={base}", f"model_pair.finetuned=[{finetuned}]"]


@pytest.mark.parametrize(
    "arguments,error",
    [
        (("merge=ties", "merge.k=2"), "merge.k=2.0; expected a fraction in [0, 1)"),
        (("merge.t=abc",), "merge.t=abc"),
        (("merge=acm_ties", "acm.estimator=histogram"), "acm.estimator=histogram needs acm.bins"),
        (("merge=aim", "merge.omega=7"), "merge.omega=7"),
        (("merge=sens", "sens.max_tokens=1"), "sens.max_tokens=1"),
        (("eval=toy", "eval.limit=0"), "eval.limit=0"),
        (("merge=dare", "merge.dtype=float8"), "merge.dtype='float8'"),
        (("-m", "merge=ties", "merge.k=0.5,2"), "sweep point [merge=ties merge.k=2]"),
    ],
)
def test_a_bad_value_is_reported_without_loading_the_heavy_stack(tmp_path, arguments, error):
    heavy, done = loaded_heavy_modules(*arguments, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("acm_exp: error:")]
    assert len(errors) == 1 and error in errors[0], done.stderr[-2000:]
    assert heavy == [], f"validation loaded {heavy}"


def test_a_bad_value_late_in_validation_of_a_local_pair_loads_nothing_heavy(tmp_path, pair):
    # Every check before the last one runs: the models' files, merge, calibration, ACM, evaluation.
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("a file where the results table should go")
    heavy, done = loaded_heavy_modules(
        *pair, "merge=acm_ties", "eval=toy", f"logger.results_dir={not_a_directory}", cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "logger.results_dir=" in done.stderr and "expected a directory" in done.stderr, done.stderr[-2000:]
    assert heavy == [], f"validation loaded {heavy}"


def test_help_loads_nothing_heavy(tmp_path):
    heavy, done = loaded_heavy_modules("--help", cwd=tmp_path)
    assert done.returncode == 0 and "config groups" in done.stdout
    assert heavy == []


def test_every_method_validates_without_torch(tmp_path):
    """The validation function itself (the API and the sweep callback use it too), for every method."""
    methods = sorted(path.stem for path in (REPO / "conf" / "merge").glob("*.yaml"))
    code = f"""
import json, sys
sys.path.insert(0, {str(REPO / "tests")!r})
from app_config import compose_config
from acm_exp.stages import validate
for method in {methods!r}:
    validate(compose_config("merge=" + method))
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACM_EXP_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_light_device_checks_refuse_what_the_full_ones_refuse():
    from omegaconf import OmegaConf

    from acm_exp.devices import check_device, check_placement, cuda_available, placement_of, resolve_device
    from acm_exp.errors import ConfigError

    for device in ("gpu", "cuda:x", "", 3):
        with pytest.raises(ConfigError) as light:
            check_device(device, "merge.device")
        with pytest.raises(ConfigError) as full:
            resolve_device(device, "merge.device")
        assert str(light.value) == str(full.value)
    check_device("cpu", "merge.device")
    check_device("auto", "merge.device")
    if not cuda_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            check_device("cuda:0", "merge.device")
    bad_offload = OmegaConf.create({"device": "auto", "max_memory": None, "offload_dir": 5})
    with pytest.raises(ConfigError, match="acm.offload_dir=5"):
        check_placement(bad_offload, "acm")
    budget = OmegaConf.create({"device": "cpu", "max_memory": {"cpu": "nonsense"}, "offload_dir": None})
    with pytest.raises(ConfigError) as light:
        check_placement(budget, "acm")
    with pytest.raises(ConfigError) as full:
        placement_of(budget, "acm")
    assert str(light.value) == str(full.value)
