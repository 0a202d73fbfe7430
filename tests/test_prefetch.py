"""``python -m acm_exp.prefetch`` against a local stand-in for the Hugging Face hub (tests/hub_standin.py),
and the check every run makes before any merge: each model and dataset it needs is local, cached or
reachable, or the run stops with one line naming what is missing and the prefetch command."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hub_standin import HubStandIn
from model_factory import make_pair

from acm_exp.needs import DATASET, MODEL, Need, run_needs

# A run on hub models and one benchmark that exists only on the hub (no local copy).
RUN = (
    "model_pair=custom",
    "model_pair.base=acme/base",
    "model_pair.finetuned=[acme/finetuned]",
    "merge=task_arithmetic",
    "eval=none",
    "+eval/benchmark@eval.benchmarks.arith=gsm8k",
    "eval.benchmarks.arith.source=acme/arith",
    "eval.benchmarks.arith.local_path=null",
    "eval.benchmarks.arith.subset=null",
    "eval.models=[merged]",
    "eval.limit=2",
    "eval.max_new_tokens=4",
    "logger.wandb.mode=disabled",
)


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    base, (finetuned,) = make_pair(tmp_path_factory.mktemp("pair"))
    shutil.copytree(base, root / "models" / "acme" / "base")
    shutil.copytree(finetuned, root / "models" / "acme" / "finetuned")
    dataset = root / "datasets" / "acme" / "arith"
    dataset.mkdir(parents=True)
    rows = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(4)]
    (dataset / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def environment(tmp_path: Path, *, endpoint: str | None = None, offline: bool = False) -> dict[str, str]:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "ACM_EXP_CACHE": str(tmp_path / "cache")}
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "WANDB_MODE"):
        env.pop(name, None)
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run(module: str, *arguments: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *arguments], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_runs_needs_are_its_hub_repositories_only(tmp_path):
    from app_config import compose_config

    assert run_needs(compose_config()) == []  # the toy pair, the toy task: nothing from the hub
    needs = run_needs(compose_config("model_pair=qwen2.5-7b", "merge=acm_ties"))
    # The six L2S benchmarks and the s1K calibration corpus ship with the package; MiniLM is a package.
    assert needs == [
        Need(MODEL, "Qwen/Qwen2.5-Math-7B", "model_pair.base"),
        Need(MODEL, "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "model_pair.finetuned[0]"),
    ]
    needs = run_needs(compose_config(*RUN[:9], "calibration=limo", "merge=acm_ties"))
    assert [(need.kind, need.name, need.used_as) for need in needs] == [
        (MODEL, "acme/base", "model_pair.base"),
        (MODEL, "acme/finetuned", "model_pair.finetuned[0]"),
        (DATASET, "acme/arith", "eval.benchmarks.arith"),
        (DATASET, "GAIR/LIMO", "calibration.source"),
    ]


@pytest.mark.slow
def test_prefetch_fetches_a_sweeps_needs_once_and_the_run_then_works_offline(tmp_path, hub_root):
    with HubStandIn(hub_root) as hub:
        done = run(
            "acm_exp.prefetch",
            "-m",
            *RUN,
            "merge.scale=0.5,0.7",
            cwd=tmp_path,
            env=environment(tmp_path, endpoint=hub.endpoint),
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        downloads = [request for request in hub.requests if request.startswith("GET") and "/resolve/" in request]
    lines = done.stdout.splitlines()
    assert lines[0] == f"2 point(s) need 3 thing(s) from the Hugging Face hub (HF_HOME={tmp_path / 'hf'})"
    fetched = [line for line in lines if line.lstrip().startswith("fetched ")]
    assert len(fetched) == 3, done.stdout
    assert (
        "model_pair.base (model acme/base)" in fetched[0] and f"{tmp_path / 'hf'}/hub/models--acme--base" in fetched[0]
    )
    assert "eval.benchmarks.arith (dataset acme/arith)" in fetched[2] and "kB" in fetched[2]
    assert lines[-1].startswith("downloaded ") and "on disk for these points" in lines[-1]
    # Each file once, although two points need them.
    assert len(downloads) == len(set(downloads))
    assert any(request.endswith("/model.safetensors") for request in downloads)

    # A compute node without internet: everything comes from the cache.
    check = run("acm_exp.prefetch", "--check", *RUN, cwd=tmp_path, env=environment(tmp_path, offline=True))
    assert check.returncode == 0 and check.stdout.count("  cached ") == 3, check.stdout
    offline = run(
        "acm_exp",
        *RUN,
        f"hydra.run.dir={tmp_path / 'run'}",
        f"logger.results_dir={tmp_path / 'results'}",
        cwd=tmp_path,
        env=environment(tmp_path, offline=True),
    )
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert "results: " in offline.stdout


def test_without_the_cache_an_offline_run_stops_before_any_merge_naming_what_is_missing(tmp_path):
    done = run(
        "acm_exp", *RUN, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=environment(tmp_path, offline=True)
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("acm_exp: error:")]
    assert errors == [
        "acm_exp: error: model_pair.base (model acme/base); model_pair.finetuned[0] (model acme/finetuned); "
        "eval.benchmarks.arith (dataset acme/arith): not local, not in the Hugging Face cache "
        f"(HF_HOME={tmp_path / 'hf'}) and the hub cannot give them: offline mode (HF_HUB_OFFLINE); fetch them on a "
        "machine with internet and the same HF_HOME: python -m acm_exp.prefetch " + shlex.join(RUN)
    ], done.stderr[-3000:]
    assert "merging" not in done.stdout + done.stderr
    check = run("acm_exp.prefetch", "--check", *RUN, cwd=tmp_path, env=environment(tmp_path, offline=True))
    assert check.returncode == 1 and check.stdout.count("  missing ") == 3, check.stdout


def test_an_unreachable_hub_and_an_unknown_repository_are_named(tmp_path, hub_root):
    unreachable = run(
        "acm_exp",
        *RUN,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env=environment(tmp_path, endpoint=f"http://127.0.0.1:{closed_port()}"),
    )
    assert unreachable.returncode == 2
    assert "the hub cannot give them: the hub is not reachable (" in unreachable.stderr, unreachable.stderr[-2000:]
    with HubStandIn(hub_root) as hub:
        typo = run(
            "acm_exp",
            *RUN,
            "model_pair.base=acme/bsae",
            f"hydra.run.dir={tmp_path / 'run2'}",
            cwd=tmp_path,
            env=environment(tmp_path, endpoint=hub.endpoint),
        )
    errors = [line for line in typo.stderr.splitlines() if line.startswith("acm_exp: error:")]
    assert len(errors) == 1 and errors[0].startswith("acm_exp: error: model_pair.base (model acme/bsae): not local")
    assert "not found on the hub" in errors[0]


def test_a_sweep_is_checked_before_its_first_point_runs(tmp_path):
    done = run(
        "acm_exp",
        "-m",
        *RUN,
        "merge.scale=0.5,0.7",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        env=environment(tmp_path, offline=True),
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("acm_exp: error:")]
    assert len(errors) == 1 and errors[0].startswith("acm_exp: error: sweep point [") and "prefetch" in errors[0]
    assert not (tmp_path / "sweep" / "0").exists()
