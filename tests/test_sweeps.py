"""Sweeps finish what they can, then summarise (acm_exp.sweep): a failing point is recorded and the sweep
goes on, the summary lists every point, the exit status says a point failed, and a rerun redoes only
the failed and missing points."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from acm_exp.sweep import EXIT_POINTS_FAILED, PointRecord, Summary, main, summarize, swept_keys, write_record

REPO = Path(__file__).resolve().parent.parent


def record(tmp_path: Path, name: str, overrides: list[str], status: str, **fields) -> PointRecord:
    run_dir = tmp_path / name
    run_dir.mkdir(parents=True, exist_ok=True)
    point = PointRecord(overrides=overrides, status=status, run_dir=str(run_dir), **fields)
    write_record(point)
    return point


def numbers(model: str, accuracy: float, tokens: float, n: int = 50) -> dict:
    return {"model": model, "benchmark": "gsm8k", "accuracy": accuracy, "mean_tokens": tokens, "n": n, "seeds": 1}


# ---------------------------------------------------------------------------------------------
# The summary (no runs)


def test_summary_counts_every_point_and_shows_what_each_has(tmp_path):
    points = [["merge=ties", f"merge.k={k}"] for k in ("0.2", "0.5", "0.8", "0.9")]
    record(tmp_path, "0", points[0], "ran", headline=[numbers("merged", 61.0, 300.0), numbers("base", 40.0, 200.0)])
    record(tmp_path, "1", points[1], "skipped", headline=[numbers("merged", 58.5, 280.5)])
    record(tmp_path, "2", points[2], "failed", stage="the merge", cause="tensor x of /m contains NaN or Inf values")
    summary = summarize(points, tmp_path)
    text = summary.render()
    lines = text.splitlines()
    assert lines[0] == "4 points: 1 ran, 1 skipped, 2 failed"
    assert lines[1].split() == ["merge.k", "status", "merged:", "gsm8k", "note"]
    assert lines[2].split()[:6] == ["0.2", "ran", "61.0%", "/", "300.0", "tok"] and "(n=50)" in lines[2]
    assert "58.5% / 280.5 tok (n=50)" in lines[3] and "skipped" in lines[3]  # a skipped point shows its numbers
    assert "failed" in lines[4] and "the merge failed: tensor x of /m contains NaN" in lines[4]
    assert "no result" in lines[5]  # no record: counted as failed
    assert "input models: base gsm8k 40.0% / 200.0 tok (n=50)" in text
    assert summary.failed == 2


def test_the_latest_record_of_a_point_wins_and_old_ones_can_be_ignored(tmp_path):
    point = ["merge.t=0.5"]
    first = record(tmp_path, "a", point, "interrupted", cause="interrupted by SIGUSR2 during the merge")
    later = PointRecord(overrides=point, status="ran", run_dir=str(tmp_path / "b"), finished=first.finished + 5)
    (tmp_path / "b").mkdir()
    write_record(later)
    assert summarize([point], tmp_path).records[0].status == "ran"
    assert summarize([point], tmp_path, since=later.finished + 1).records == [None]


def test_swept_keys_are_the_values_that_differ():
    points = [["merge=acm_ties", "merge.t=0.3", "eval=toy"], ["merge=acm_ties", "merge.t=0.5", "eval=toy"]]
    assert swept_keys(points) == ["merge.t"]
    assert swept_keys([["merge=ties", "merge.k=0.5"]]) == []
    assert Summary([["merge=ties"]], [None]).render().splitlines()[1].split()[:2] == ["point", "status"]


def test_summary_command_reads_a_sweep_file_and_exits_nonzero_on_a_failure(tmp_path, capsys):
    sweep_file = tmp_path / "sweep.txt"
    sweep_file.write_text("# points\nmerge.scale=0.5\n\nmerge.scale=0.7\n")
    record(tmp_path / "sweep", "0_0", ["merge.scale=0.5", "eval.limit=5"], "ran", headline=[numbers("merged", 1, 2)])
    assert main([str(tmp_path / "sweep"), "--points", str(sweep_file), "eval.limit=5"]) == EXIT_POINTS_FAILED
    out = capsys.readouterr().out
    assert out.startswith("2 points: 1 ran, 0 skipped, 1 failed") and "no result" in out
    record(tmp_path / "sweep", "1_0", ["merge.scale=0.7", "eval.limit=5"], "skipped")
    assert main([str(tmp_path / "sweep"), "--points", str(sweep_file), "eval.limit=5"]) == 0
    assert main([str(tmp_path / "empty")]) == 2


# ---------------------------------------------------------------------------------------------
# A real local sweep with a fine-tuned model holding a NaN


def nan_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    state = load_file(target / "model.safetensors")
    # A decoder weight (a tied base's merge never reads the fine-tuned lm_head).
    name = next(name for name in sorted(state) if ".layers.0." in name)
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})
    return target


def run_sweep(tmp_path: Path, cache: Path, finetuned: list[str], sweep_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "acm_exp",
            "-m",
            "merge=task_arithmetic",
            f"model_pair.finetuned={','.join(f'[{path}]' for path in finetuned)}",
            "eval.limit=3",
            f"cache_dir={cache}",
            f"logger.results_dir={tmp_path / 'results'}",
            "logger.wandb.mode=disabled",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=900,
    )


@pytest.mark.slow
def test_a_failing_point_is_recorded_the_sweep_goes_on_and_a_rerun_redoes_only_it(tmp_path, toy_pair):
    cache = Path(toy_pair["base"]).parents[2]
    broken = nan_copy(Path(toy_pair["finetuned"]), tmp_path / "models" / "nan")
    copy = Path(shutil.copytree(toy_pair["finetuned"], tmp_path / "models" / "copy"))
    finetuned = ["toy:finetuned", str(broken), str(copy)]

    first = run_sweep(tmp_path, cache, finetuned, tmp_path / "sweep1")
    assert first.returncode == EXIT_POINTS_FAILED, first.stderr[-3000:]
    summary = first.stdout[first.stdout.index("3 points:") :].splitlines()
    assert summary[0] == "3 points: 2 ran, 0 skipped, 1 failed", first.stdout[-3000:]
    assert "ran" in summary[2] and "failed" in summary[3] and "ran" in summary[4]
    assert "the merge failed" in summary[3] and "NaN" in summary[3]
    assert summary[2].count("%") == 1 and summary[3].count("%") == 0
    errors = [line for line in first.stderr.splitlines() if line.startswith("acm_exp: error:")]
    assert len(errors) == 2, first.stderr[-3000:]
    assert "sweep point [" in errors[0] and str(broken) in errors[0] and "the sweep goes on" in errors[0]
    assert errors[1].startswith("acm_exp: error: 1 of 3 sweep points failed")
    # The failed point's record: its overrides, stage and cause.
    failed = json.loads((tmp_path / "sweep1" / "1" / "point.json").read_text())
    assert failed["status"] == "failed" and failed["stage"] == "the merge" and "NaN" in failed["cause"]
    assert any(str(broken) in override for override in failed["overrides"])
    # The unchanged base model's row is printed by the first point only (the second fine-tuned model
    # is another model: its row is printed again).
    printed = [
        line.split()[0]
        for line in first.stdout.splitlines()
        if re.match(r"(base|finetuned|merged) +[0-9.]+% / ", line)  # the runs' tables, not the summary
    ]
    assert printed == ["base", "finetuned", "merged", "finetuned", "merged"], first.stdout[-3000:]

    second = run_sweep(tmp_path, cache, finetuned, tmp_path / "sweep2")
    assert second.returncode == EXIT_POINTS_FAILED, second.stderr[-3000:]
    summary = second.stdout[second.stdout.index("3 points:") :].splitlines()
    assert summary[0] == "3 points: 0 ran, 2 skipped, 1 failed"
    assert "skipped" in summary[2] and "%" in summary[2] and "skipped" in summary[4] and "%" in summary[4]
    # Only the failed point ran again (it alone got as far as the merge).
    assert (second.stdout + second.stderr).count("merging ") == 1
    assert second.stdout.count("skipped: complete results") == 2


def test_a_runs_table_says_what_each_number_rests_on():
    from acm_exp.pipeline import summary_table

    rows = [
        {"model": "base", "benchmark": "toy", "seed": 0, "accuracy": 16.0, "mean_tokens": 14.2, "n": 100},
        {"model": "merged", "benchmark": "toy", "seed": 0, "accuracy": 81.0, "mean_tokens": 42.9, "n": 100},
        {"model": "merged", "benchmark": "toy", "seed": 1, "accuracy": 83.0, "mean_tokens": 40.9, "n": 100},
        {"model": "merged", "benchmark": "toy", "seed": None, "accuracy": 82.0, "mean_tokens": 41.9, "n": 100},
        {
            "model": "merged",
            "benchmark": "hellaswag",
            "seed": 0,
            "accuracy": 70.0,
            "mean_tokens": float("nan"),
            "n": 20,
        },
    ]
    lines = summary_table(rows).splitlines()
    assert lines[2].split()[0] == "base" and "16.0% / 14.2 tok (n=100)" in lines[2]
    # Two seeds averaged (the seed-summary row is not counted again); a multiple-choice cell has no tokens.
    assert "82.0% / 41.9 tok (n=100, 2 seeds)" in lines[3] and "70.0% (n=20)" in lines[3]
