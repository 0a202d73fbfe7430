"""Resume: a run killed during evaluation redoes only what is missing; a complete run is skipped."""

from __future__ import annotations

import pytest
from app_config import compose_config

from acm_exp.eval import runner
from acm_exp.merge.engine import MANIFEST_NAME
from acm_exp.pipeline import run
from acm_exp.results import load_results

REAL_RUN_JOB = runner.run_job
pytestmark = pytest.mark.slow


class Killed(BaseException):
    """Stands in for SIGTERM/preemption: not an Exception, so nothing on the way swallows it."""


@pytest.fixture
def toy_run(tmp_path, toy_pair):
    cache_dir = next(iter(toy_pair.values())).parents[2]
    # Two benchmarks (the toy task's test split under two seeds of its generator), merged model only.
    overrides = (
        "merge=task_arithmetic",
        "eval=toy",
        "eval.models=[merged]",
        "eval.limit=6",
        "+eval/benchmark@eval.benchmarks.toy_other=toy",
        "eval.benchmarks.toy_other.options.seed=1",
        "logger.wandb.mode=disabled",
        f"logger.results_dir={tmp_path / 'results'}",
        f"cache_dir={cache_dir}",
    )

    def go():
        return run(compose_config(*overrides), run_dir=tmp_path / "run")

    return go


def record_jobs(monkeypatch, *, kill_on: str | None = None) -> list[str]:
    """Benchmarks generated from now on, in order; optionally die when ``kill_on`` starts."""
    generated: list[str] = []

    def run_job(job, *args, **kwargs):
        if job.benchmark == kill_on:
            raise Killed(job.benchmark)
        generated.append(job.benchmark)
        return REAL_RUN_JOB(job, *args, **kwargs)

    monkeypatch.setattr(runner, "run_job", run_job)
    return generated


def test_run_killed_during_evaluation_reevaluates_only_the_missing_benchmark(toy_run, tmp_path, monkeypatch, caplog):
    generated = record_jobs(monkeypatch, kill_on="toy_other")
    with pytest.raises(Killed):
        toy_run()
    assert generated == ["toy"]
    samples = tmp_path / "run" / "eval" / "merged" / "samples"
    assert (samples / "toy.jsonl").is_file() and not (samples / "toy_other.jsonl").exists()
    assert load_results(tmp_path / "results").empty  # nothing recorded for an incomplete run
    manifest_mtime = (tmp_path / "run" / "merged" / MANIFEST_NAME).stat().st_mtime_ns

    generated = record_jobs(monkeypatch)
    with caplog.at_level("INFO"):
        toy_run()
    assert generated == ["toy_other"]
    assert (tmp_path / "run" / "merged" / MANIFEST_NAME).stat().st_mtime_ns == manifest_mtime
    assert any("reusing the complete merge" in message for message in caplog.messages)
    rows = load_results(tmp_path / "results")
    assert sorted(rows["benchmark"]) == ["toy", "toy_other"]

    generated = record_jobs(monkeypatch)
    toy_run()  # complete: skipped before any model is touched
    assert generated == []
    assert len(load_results(tmp_path / "results")) == 2
