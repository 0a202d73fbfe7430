"""The local results table: rows of a run, atomic per-run files, concurrent writers, filters, CLI."""

from __future__ import annotations

import math
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from app_config import compose_config

from acm_exp import results
from acm_exp.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def eval_rows(samples_dir: Path | None = None) -> list[dict]:
    """A toy run: base, fine-tuned and merged on two benchmarks, two seeds."""
    values = {  # (model, role) -> benchmark -> (accuracy, mean_tokens) at seed 0; seed 1 adds 1 and 10
        ("base", "base"): {"gsm8k": (70.0, 200.0), "math500": (40.0, 400.0)},
        ("finetuned[0]", "finetuned"): {"gsm8k": (90.0, 1000.0), "math500": (80.0, 2000.0)},
        ("merged", "merged"): {"gsm8k": (88.0, 500.0), "math500": (78.0, 1000.0)},
    }
    rows = []
    for (model, role), by_benchmark in values.items():
        for benchmark, (accuracy, tokens) in by_benchmark.items():
            for seed in (0, 1):
                rows.append(
                    {
                        "model": model,
                        "role": role,
                        "benchmark": benchmark,
                        "seed": seed,
                        "accuracy": accuracy + seed,
                        "mean_tokens": tokens + 10 * seed,
                        "truncation_rate": 0.0,
                        "reflections": 2.0,
                        "n": 10,
                        "samples_path": str(samples_dir / f"{model}-{benchmark}-{seed}.jsonl") if samples_dir else None,
                    }
                )
    return rows


@pytest.fixture(scope="module")
def acm_cfg():
    return compose_config("merge=acm_ties", "merge.t=0.5", "eval=none")


def test_a_toy_run_gives_one_row_per_model_benchmark_and_seed(tmp_path, acm_cfg):
    path = results.record_run(
        acm_cfg,
        tmp_path / "run",
        eval_rows(tmp_path),
        results_dir=tmp_path / "results",
        coefficients_path=tmp_path / "run" / "coefficients.json",
        started_at="2025-01-01T00:00:00+00:00",
        finished_at="2025-01-01T01:00:00+00:00",
    )
    table = results.load_results(tmp_path / "results")
    assert path == tmp_path / "results" / f"{results.default_run_id(acm_cfg)}.parquet"
    assert list(table.columns) == list(results.COLUMNS)
    assert len(table) == 12
    row = table[(table.model == "merged") & (table.benchmark == "math500") & (table.seed == 1)].iloc[0]
    assert row.method == "acm_ties" and row.model_pair == "toy" and row.role == "merged"
    assert row.accuracy == 79.0 and row.mean_tokens == 1010.0 and row.n == 10
    # Against the fine-tuned model's same seed: 1010 vs 2010 tokens.
    assert row.relative_length == pytest.approx(100.0 * (1010 - 2010) / 2010)
    assert row.t == 0.5 and row.k == 0.8 and row.scale == 1.0 and row["shift"] == "per_point_max"
    # Parameters acm_ties does not read are null, so a filter on them never matches this run.
    assert math.isnan(row.p) and pd.isna(row["combine"]) and math.isnan(row.alpha)
    assert row.acm_against == "finetuned" and row.estimator == "discrete"
    assert row.calibration == "toy" and row.calibration_selection == "cluster"
    assert (row.num_clusters, row.per_cluster, row.calibration_samples) == (4, 8, 32)
    assert row.config_hash == results.config_hash(acm_cfg) and len(row.config_hash) == 16
    assert row.run_id == f"toy__acm_ties__{row.config_hash}"
    assert row.git_commit != ""
    assert row.started_at == "2025-01-01T00:00:00+00:00"
    assert row.run_dir == str((tmp_path / "run").absolute())
    assert row.coefficients_path == str(tmp_path / "run" / "coefficients.json")
    assert row.samples_path == str(tmp_path / "merged-math500-1.jsonl")
    assert pd.isna(row.sweep_id)
    finetuned = table[table.role == "finetuned"]
    assert (finetuned.relative_length == 0.0).all()


def test_a_method_without_coefficients_records_no_calibration(tmp_path):
    cfg = compose_config("merge=ties", "eval=none")
    results.record_run(cfg, tmp_path / "run", eval_rows(), results_dir=tmp_path)
    row = results.load_results(tmp_path).iloc[0]
    assert math.isnan(row.t) and pd.isna(row.calibration) and pd.isna(row.acm_against)
    assert row.k == 0.8 and row.scale == 1.0


def test_config_hash_ignores_paths_logging_and_unused_parameters(acm_cfg):
    same = compose_config(
        "merge=acm_ties",
        "merge.t=0.5",
        "eval=none",
        "force=true",
        "cache_dir=/elsewhere",
        "merge.output_dir=/tmp/x",
        "logger.wandb.mode=disabled",
        "logger.results_dir=/r",
    )
    assert results.config_hash(same) == results.config_hash(acm_cfg)
    assert results.config_hash(compose_config("merge=acm_ties", "merge.t=0.7", "eval=none")) != results.config_hash(
        acm_cfg
    )
    ties = results.config_hash(compose_config("merge=ties", "eval=none"))
    # TIES reads neither t nor the calibration set: sweeping them cannot change its results.
    assert results.config_hash(compose_config("merge=ties", "merge.t=0.3", "calibration=s1k", "eval=none")) == ties
    assert results.config_hash(compose_config("merge=ties", "merge.k=0.5", "eval=none")) != ties


def test_evaluator_aggregate_rows_are_dropped_and_duplicates_refused():
    rows = eval_rows()
    frame = results.metric_frame([*rows, {**rows[0], "seed": None}])
    assert len(frame) == len(rows)
    with pytest.raises(ValueError, match="two evaluation rows"):
        results.metric_frame([rows[0], rows[0]])
    with pytest.raises(ValueError, match="lacks"):
        results.metric_frame([{"model": "merged"}])


def test_relative_length_falls_back_to_the_mean_over_seeds_and_is_nan_without_reference():
    rows = [r for r in eval_rows() if not (r["role"] == "finetuned" and r["seed"] == 1)]
    frame = results.metric_frame(rows)
    merged = frame[(frame.model == "merged") & (frame.benchmark == "gsm8k") & (frame.seed == 1)].iloc[0]
    assert merged.relative_length == pytest.approx(100.0 * (510 - 1000) / 1000)
    alone = results.metric_frame([r for r in eval_rows() if r["role"] != "finetuned"])
    assert alone.relative_length.isna().all()


def test_rerun_of_the_same_run_replaces_its_rows(tmp_path, acm_cfg):
    results.record_run(acm_cfg, tmp_path / "run", eval_rows(), results_dir=tmp_path / "results")
    rerun = [{**r, "accuracy": 12.5} for r in eval_rows()[:3]]
    results.record_run(acm_cfg, tmp_path / "run2", rerun, results_dir=tmp_path / "results")
    table = results.load_results(tmp_path / "results")
    assert len(table) == 3 and (table.accuracy == 12.5).all()
    assert len(list((tmp_path / "results").iterdir())) == 1


def test_no_rows_write_nothing(tmp_path, acm_cfg):
    assert results.record_run(acm_cfg, tmp_path, [], results_dir=tmp_path / "results") is None
    assert results.load_results(tmp_path / "results").empty


def make_record(**values) -> dict:
    record = dict.fromkeys(results.COLUMNS)
    record.update(
        model_pair="toy",
        method="ties",
        model="merged",
        role="merged",
        benchmark="gsm8k",
        seed=0,
        accuracy=50.0,
        mean_tokens=100.0,
        n=10,
        config_hash="h",
        git_commit="c",
    )
    record.update(values)
    return record


def _writer(results_dir: str, worker: int, runs: int) -> None:
    for run in range(runs):
        rows = [
            make_record(run_id=f"w{worker}-r{run}", benchmark=b, seed=s, accuracy=float(worker * 100 + run))
            for b in ("gsm8k", "math500", "aime24")
            for s in (0, 1)
        ]
        results.write_rows(results_dir, rows)
        # Every writer also rewrites one shared run id: the last writer wins, whole.
        shared = [make_record(run_id="shared", benchmark=b, accuracy=float(worker)) for b in ("gsm8k", "math500")]
        results.write_rows(results_dir, shared)


def test_concurrent_writers_lose_nothing_and_corrupt_nothing(tmp_path):
    workers, runs = 8, 6
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(str(tmp_path), w, runs)) for w in range(workers)]
    for process in processes:
        process.start()
    # Read while they write: every file seen must be whole.
    while any(p.is_alive() for p in processes):
        for path in tmp_path.glob("*.parquet"):
            try:
                assert results.pq.read_table(path).num_rows in (2, 6)
            except FileNotFoundError:
                pass
        time.sleep(0.01)  # leave the CPU to the writers
    for process in processes:
        process.join()
        assert process.exitcode == 0
    table = results.load_results(tmp_path)
    assert len(table) == workers * runs * 6 + 2
    for worker in range(workers):
        for run in range(runs):
            mine = table[table.run_id == f"w{worker}-r{run}"]
            assert len(mine) == 6 and (mine.accuracy == worker * 100 + run).all()
    shared = table[table.run_id == "shared"]
    assert len(shared) == 2 and shared.accuracy.nunique() == 1
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".parquet"]  # no temporary files left


def test_filters_by_any_column(tmp_path):
    rows = [make_record(run_id="a", method="ties", benchmark=b) for b in ("gsm8k", "math500")]
    rows_b = [make_record(run_id="b", method="acm_ties", t=0.7, benchmark=b) for b in ("gsm8k", "math500")]
    rows_c = [make_record(run_id="c", method="acm_ties", t=0.5, benchmark="gsm8k")]
    for batch in (rows, rows_b, rows_c):
        results.write_rows(tmp_path, batch)
    load = results.load_results
    assert len(load(tmp_path, method="acm_ties", benchmark="gsm8k")) == 2
    assert list(load(tmp_path, t="0.7").run_id) == ["b", "b"]  # strings parse to the column's type
    assert list(load(tmp_path, t=0.5).run_id) == ["c"]
    assert set(load(tmp_path, t=None).run_id) == {"a"}
    assert set(load(tmp_path, run_id=["a", "c"]).run_id) == {"a", "c"}
    assert len(load(tmp_path, seed="0")) == 5
    with pytest.raises(ConfigError, match="unknown results column 'nope'"):
        load(tmp_path, nope=1)
    with pytest.raises(ConfigError, match="t='x'; expected a number"):
        load(tmp_path, t="x")
    # Deterministic order: model pair, method, t, run id, role, model, benchmark, seed.
    assert list(load(tmp_path).run_id) == ["c", "b", "b", "a", "a"]


def test_has_complete_results(tmp_path):
    results.write_rows(
        tmp_path,
        [
            make_record(run_id="a", config_hash="h1", model=m, benchmark=b, seed=s)
            for m in ("merged", "base")
            for b in ("gsm8k", "math500")
            for s in (0, 1)
        ],
    )
    assert results.has_complete_results(tmp_path, "h1", ["gsm8k", "math500"])
    assert results.has_complete_results(tmp_path, "h1", ["gsm8k"], models=["merged"], seeds=[0, 1])
    assert not results.has_complete_results(tmp_path, "h1", ["gsm8k", "aime24"])
    assert not results.has_complete_results(tmp_path, "h1", ["gsm8k"], seeds=[2])
    assert not results.has_complete_results(tmp_path, "h1", ["gsm8k"], models=["finetuned[0]"])
    assert not results.has_complete_results(tmp_path, "h2", ["gsm8k"])
    assert not results.has_complete_results(tmp_path, "h1", [])


def test_unreadable_files_are_skipped(tmp_path, caplog):
    results.write_rows(tmp_path, [make_record(run_id="a")])
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    assert list(results.load_results(tmp_path).run_id) == ["a"]
    assert "broken.parquet" in caplog.text


def test_run_ids_become_safe_distinct_file_names(tmp_path):
    assert results.results_file(tmp_path, "toy__ties__abc").name == "toy__ties__abc.parquet"
    odd = results.results_file(tmp_path, "a/b c")
    assert odd.parent == tmp_path and "/" not in odd.name
    assert odd != results.results_file(tmp_path, "a_b_c")


def test_sweep_id_is_derived_from_the_sweep_directory():
    assert results.sweep_id_from_dir("outputs/multirun/2025-01-02/10-11-12") == "2025-01-02_10-11-12"
    assert results.detect_sweep_id() is None  # not inside a Hydra job


def test_results_dir_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(results.RESULTS_DIR_ENV, raising=False)
    assert results.resolve_results_dir() == tmp_path / "outputs" / "results"
    monkeypatch.setenv(results.RESULTS_DIR_ENV, str(tmp_path / "env"))
    assert results.resolve_results_dir() == tmp_path / "env"
    assert results.resolve_results_dir(tmp_path / "given") == tmp_path / "given"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "acm_exp.results", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_command_line_prints_filters_and_rejects_unknown_columns(tmp_path):
    results.write_rows(tmp_path, [make_record(run_id="a", method="ties", benchmark=b) for b in ("gsm8k", "math500")])
    results.write_rows(tmp_path, [make_record(run_id="b", method="acm_ties", t=0.7, accuracy=61.25)])
    shown = run_cli(f"results_dir={tmp_path}", "method=acm_ties", "benchmark=gsm8k", "--columns", "run_id,accuracy")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["run_id", "accuracy", "b", "61.25"]
    interleaved = run_cli(f"results_dir={tmp_path}", "--columns", "run_id,accuracy", "method=acm_ties")
    assert interleaved.returncode == 0 and interleaved.stdout.split() == ["run_id", "accuracy", "b", "61.25"]
    markdown = run_cli(f"results_dir={tmp_path}", "--format", "markdown")
    assert markdown.returncode == 0 and markdown.stdout.count("| ties") == 2
    unknown = run_cli(f"results_dir={tmp_path}", "methd=ties")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().count("\n") == 0 and "unknown results column 'methd'" in unknown.stderr
    bad_column = run_cli(f"results_dir={tmp_path}", "--columns", "accuracy,bogus")
    assert bad_column.returncode == 2 and "'bogus'" in bad_column.stderr


def test_sweep_id_inside_a_hydra_multirun(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(
        "import hydra\n"
        "from acm_exp.results import detect_sweep_id\n"
        "@hydra.main(config_path=None, config_name=None, version_base=None)\n"
        "def main(cfg):\n"
        "    print('sweep id:', detect_sweep_id())\n"
        "main()\n"
    )
    sweep_dir = f"hydra.sweep.dir={tmp_path}/multirun/2025-01-02/10-11-12"
    subdir = "hydra.sweep.subdir=${hydra.job.num}/nested"
    sweep = subprocess.run(
        [sys.executable, str(app), "-m", "+x=1,2", sweep_dir, subdir],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert sweep.returncode == 0, sweep.stderr
    assert sweep.stdout.count("sweep id: 2025-01-02_10-11-12") == 2
    single = subprocess.run(
        [sys.executable, str(app), f"hydra.run.dir={tmp_path}/run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert single.returncode == 0, single.stderr
    assert "sweep id: None" in single.stdout


def test_config_hash_ignores_where_the_models_run():
    # Placement changes where the computation runs, not what it computes (as the statistics cache keys).
    plain = results.config_hash(compose_config("merge=sens", "eval=none"))
    placed = compose_config(
        "merge=sens",
        "eval=none",
        "acm.device=cpu",
        "sens.device=cpu",
        "sens.gradient_checkpointing=true",
        "eval.vllm.tensor_parallel_size=4",
    )
    assert results.config_hash(placed) == plain
    assert results.config_hash(compose_config("merge=sens", "eval=none", "merge.alpha=0.3")) != plain


# ---------------------------------------------------------------------------------------------
# What each number rests on: n, the benchmark's size, subset


def test_rows_record_n_the_benchmark_size_and_whether_they_are_a_subset(tmp_path):
    cfg = compose_config("merge=ties", "eval=toy", "eval.limit=3")
    rows = [
        {**row, "benchmark": "toy", "n": 3, "benchmark_size": 100}
        for row in eval_rows()
        if row["benchmark"] == "gsm8k" and row["seed"] == 0
    ]
    results.record_run(cfg, tmp_path / "run", rows, results_dir=tmp_path)
    table = results.load_results(tmp_path)
    assert table[["n", "benchmark_size", "subset", "eval_limit"]].drop_duplicates().values.tolist() == [
        [3, 100, True, 3]
    ]
    complete = compose_config("merge=ties", "eval=toy", "eval.limit=null")
    results.record_run(
        complete, tmp_path / "full", [{**row, "n": 100} for row in rows], results_dir=tmp_path, run_id="full"
    )
    full = results.load_results(tmp_path, run_id="full")
    assert full["subset"].tolist() == [False] * 3 and full["eval_limit"].isna().all()
    assert results.load_results(tmp_path, subset="false")["run_id"].unique().tolist() == ["full"]
    assert {"n", "benchmark_size", "subset"} <= set(results.DEFAULT_DISPLAY_COLUMNS)


def test_rows_written_before_the_size_columns_are_read_sensibly(tmp_path):
    """Older files lack benchmark_size/subset/eval_limit: the size is the largest n the table holds for
    the benchmark (a recorded size counts too), and subset follows from it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def old_file(run_id: str, benchmark: str, n: int) -> None:
        row = {"run_id": run_id, "model": "merged", "role": "merged", "benchmark": benchmark, "seed": 0, "n": n}
        row.update(accuracy=50.0, mean_tokens=10.0, method="ties", model_pair="toy", config_hash=run_id)
        legacy = [f for f in results.SCHEMA if f.name not in ("benchmark_size", "subset", "eval_limit")]
        pq.write_table(pa.Table.from_pylist([row], schema=pa.schema(legacy)), tmp_path / f"{run_id}.parquet")

    old_file("smoke", "gsm8k", 3)
    old_file("full", "gsm8k", 50)
    old_file("only-smoke", "math500", 5)
    table = results.load_results(tmp_path).set_index("run_id")
    assert table.loc["smoke", ["benchmark_size", "subset"]].tolist() == [50, True]
    assert table.loc["full", ["benchmark_size", "subset"]].tolist() == [50, False]
    # Only ever evaluated on 5 questions: nothing tells it from a complete run (documented).
    assert table.loc["only-smoke", ["benchmark_size", "subset"]].tolist() == [5, False]
    assert pd.isna(table.loc["smoke", "eval_limit"])
    # A newer run that recorded the benchmark's size informs the older rows.
    cfg = compose_config("merge=ties", "eval=none")
    new = [{**eval_rows()[0], "benchmark": "math500", "n": 5, "benchmark_size": 500}]
    results.record_run(cfg, tmp_path / "run", new, results_dir=tmp_path, run_id="new")
    table = results.load_results(tmp_path).set_index("run_id")
    assert table.loc["only-smoke", ["benchmark_size", "subset"]].tolist() == [500, True]
    assert table.loc["new", ["benchmark_size", "subset"]].tolist() == [500, True]
