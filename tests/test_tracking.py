"""W&B tracking: config validation, what an offline run records, failures that must not fail a run."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from app_config import compose_config
from omegaconf import OmegaConf

from acm_exp import tracking
from acm_exp.coefficients_file import AcmCoefficientsFile, write_coefficients
from acm_exp.config import LoggerConfig
from acm_exp.errors import ConfigError
from acm_exp.results import metric_frame

REPO = Path(__file__).resolve().parent.parent


def logger_config(**wandb) -> object:
    cfg = OmegaConf.structured(LoggerConfig)
    for key, value in wandb.items():
        cfg.wandb[key] = value
    return cfg


@pytest.fixture
def wandb_home(tmp_path, monkeypatch):
    """Keep W&B's own settings, cache and staging out of the user's home; never go online."""
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return tmp_path


def write_samples(path: Path, model: str, count: int = 6) -> Path:
    records = [
        {
            "id": f"q{i}",
            "seed": 0,
            "prompt": "long few-shot prompt",
            "response": f"{model} answer {i}",
            "extracted": str(i),
            "gold": str(i),
            "correct": i % 2 == 0,
            "tokens": 10 * i,
            "finish_reason": "stop",
            "reflections": i % 3,
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def toy_rows(run_dir: Path) -> list[dict]:
    rows = []
    models = (("finetuned[0]", "finetuned", 60.0, 1000.0), ("merged", "merged", 50.0, 400.0))
    for model, role, accuracy, tokens in models:
        for seed in (0, 1):
            samples = write_samples(run_dir / f"{model}-{seed}.jsonl", model)
            rows.append(
                {
                    "model": model,
                    "role": role,
                    "benchmark": "gsm8k",
                    "seed": seed,
                    "accuracy": accuracy + 2 * seed,
                    "mean_tokens": tokens + 100 * seed,
                    "truncation_rate": 0.0,
                    "reflections": 1.0,
                    "n": 6,
                    "samples_path": str(samples),
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------
# Reading an offline run: W&B >= 0.2x writes no wandb-summary.json offline, only the run's
# transaction log (run-<id>.wandb: LevelDB log format of protobuf Records) plus media files.


def wandb_records(path: Path) -> list:
    import wandb
    from wandb.proto import wandb_internal_pb2

    # run.finish() returns once the exit record is handled; the W&B service may still be flushing
    # the log file. Teardown waits for it to close every run's files.
    wandb.teardown()
    raw = path.read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", raw[:7])
    assert ident == b":W&B"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(raw):
        if block - position % block < 7:  # block trailer padding
            position += block - position % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", raw[position : position + 7])
        data = raw[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:
            continue
        pending = data if kind in (1, 2) else pending + data
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def offline_run(run_dir: Path) -> dict:
    """config, summary (final values by key), run metadata and the files directory of the offline run."""
    (directory,) = (run_dir / "wandb").glob("offline-run-*")
    (log_file,) = directory.glob("run-*.wandb")
    found = {"config": {}, "summary": {}, "run": None, "files": directory / "files"}
    for record in wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found["run"] = record.run
            for item in record.run.config.update:
                found["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                found["config"][item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                found["summary"][key] = json.loads(item.value_json)
    return found


# ---------------------------------------------------------------------------------------------


def test_offline_run_records_config_manifest_metrics_plot_and_samples(tmp_path, wandb_home):
    cfg = compose_config(
        "merge=acm_ties", "eval=none", "logger.wandb.samples_logged=3", "logger.wandb.tags=[paper,t-sweep]"
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = toy_rows(run_dir)
    coefficients = write_coefficients(
        run_dir / "coefficients.json",
        AcmCoefficientsFile(
            t=0.7,
            shift="per_point_max",
            reduce="mean_of_sigmoids",
            point_names=("embed_tokens", "layers.0", "norm"),
            model_names=("finetuned[0]",),
            lambdas=np.array([[0.25, 0.5, 0.75]]),
            mi_per_sample=np.ones((1, 3, 2)),
        ),
    )
    from matplotlib.figure import Figure

    Figure(figsize=(1, 1)).savefig(coefficients.with_suffix(".png"))

    with tracking.WandbLogger.from_config(cfg, run_dir, sweep_id="2025-01-01_10-00-00") as tracker:
        assert tracker.active
        tracker.log_results(
            rows, manifest={"method": "acm_ties", "parameters": {"t": 0.7}}, coefficients_path=coefficients
        )
    assert not tracker.active

    run = offline_run(run_dir)
    assert run["run"].run_group == "2025-01-01_10-00-00"
    assert list(run["run"].tags) == ["paper", "t-sweep"]
    # Named by the method (no overrides outside Hydra); the results table's run id is in the config.
    assert run["run"].display_name == "acm_ties"
    assert run["config"]["results_run_id"].startswith("toy__acm_ties__")
    assert run["config"]["merge"]["method"] == "acm_ties" and run["config"]["merge"]["t"] == 0.7
    assert run["config"]["merge_manifest"] == {"method": "acm_ties", "parameters": {"t": 0.7}}
    assert len(run["config"]["config_hash"]) == 16
    summary = run["summary"]
    assert summary["merged/gsm8k/accuracy"] == 51.0
    assert summary["merged/gsm8k/mean_tokens"] == 450.0
    assert summary["merged/gsm8k/accuracy_std"] == pytest.approx(2**0.5)
    assert summary["finetuned[0]/gsm8k/accuracy"] == 61.0
    assert summary["merged/average/relative_length"] == pytest.approx(100.0 * (450 - 1050) / 1050)
    media = run["files"] / "media"
    assert list((media / "images" / "acm").glob("coefficients_*.png"))
    (lambdas,) = (media / "table" / "acm").glob("lambda_*.table.json")
    assert json.loads(lambdas.read_text())["data"] == [
        ["finetuned[0]", "embed_tokens", 0, 0.25],
        ["finetuned[0]", "layers.0", 1, 0.5],
        ["finetuned[0]", "norm", 2, 0.75],
    ]
    (metrics,) = (media / "table").glob("metrics_*.table.json")
    assert len(json.loads(metrics.read_text())["data"]) == 4
    (samples,) = (media / "table" / "samples").glob("gsm8k_*.table.json")
    table = json.loads(samples.read_text())
    assert table["columns"] == ["model", "role", "seed", *tracking.SAMPLE_FIELDS]
    # 3 questions x 2 models, the lowest seed of each, the same questions for both models.
    assert len(table["data"]) == 6
    assert {r[0] for r in table["data"]} == {"finetuned[0]", "merged"} and {r[2] for r in table["data"]} == {0}
    expected_ids = tracking.sample_ids([f"q{i}" for i in range(6)], 3, salt="gsm8k")
    assert [r[3] for r in table["data"][::2]] == expected_ids


def test_disabled_mode_imports_nothing_heavy(tmp_path):
    code = f"""
import sys
from omegaconf import OmegaConf
from acm_exp.config import LoggerConfig
from acm_exp.tracking import WandbLogger, validate_logger_config
cfg = OmegaConf.structured(LoggerConfig); cfg.wandb.mode = "disabled"
validate_logger_config(cfg)
with WandbLogger(cfg.wandb, {str(tmp_path)!r}, name="x") as tracker:
    tracker.log_results([dict(model="merged", role="merged", benchmark="b", seed=0, accuracy=1, mean_tokens=2, n=1)])
assert not tracker.active
heavy = sorted(m for m in ("wandb", "torch", "matplotlib") if m in sys.modules)
print("heavy:", heavy)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout
    assert not (tmp_path / "wandb").exists()


def test_wandb_failures_are_warnings_not_errors(tmp_path, wandb_home, monkeypatch, caplog):
    import wandb

    def broken_init(**kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken_init)
    with tracking.WandbLogger(logger_config(mode="online").wandb, tmp_path, name="x") as tracker:
        tracker.log_results(toy_rows(tmp_path))
    assert not tracker.active
    assert "W&B disabled for this run: init failed (RuntimeError: no network)" in caplog.text


def test_a_failing_log_call_does_not_stop_the_others(tmp_path, wandb_home, caplog):
    with tracking.WandbLogger(logger_config(mode="offline", samples_logged=2).wandb, tmp_path, name="x") as tracker:

        def explode(_):
            raise RuntimeError("boom")

        tracker._log_metrics = explode
        rows = toy_rows(tmp_path)
        rows[0]["samples_path"] = str(tmp_path / "missing.jsonl")
        tracker.log_results(rows, coefficients_path=tmp_path / "absent.json")
    assert "could not log the metrics (RuntimeError: boom)" in caplog.text
    assert "no coefficients at" in caplog.text
    assert list((tmp_path / "wandb").glob("offline-run-*/files/media/table/samples/gsm8k_*.table.json"))


def test_an_exception_in_the_run_marks_it_failed_and_propagates(tmp_path, wandb_home):
    with pytest.raises(KeyError):
        with tracking.WandbLogger(logger_config(mode="offline").wandb, tmp_path, name="x"):
            raise KeyError("pipeline error")
    (log_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    exits = [r.exit.exit_code for r in wandb_records(log_file) if r.WhichOneof("record_type") == "exit"]
    assert exits == [1]


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("mode", "onlin", "logger.wandb.mode='onlin'; expected one of ('offline', 'online', 'disabled')"),
        ("project", "a/b", "logger.wandb.project='a/b'"),
        ("project", "", "logger.wandb.project=''"),
        ("entity", "team/x", "logger.wandb.entity='team/x'"),
        ("tags", ["x" * 65], "logger.wandb.tags has"),
        ("samples_logged", -1, "logger.wandb.samples_logged=-1; expected an integer >= 0"),
    ],
)
def test_invalid_logger_values_fail_up_front(key, value, message):
    with pytest.raises(ConfigError) as error:
        tracking.validate_logger_config(logger_config(**{key: value}))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_results_dir_must_not_be_a_file(tmp_path):
    cfg = logger_config()
    cfg.results_dir = str(tmp_path / "file")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        tracking.validate_logger_config(cfg)
    tracking.validate_logger_config(logger_config())


def test_default_config_validates_and_is_offline():
    cfg = compose_config("eval=none")
    tracking.validate_logger_config(cfg.logger)
    assert cfg.logger.wandb.mode == "offline" and cfg.logger.wandb.group is None


def test_group_is_the_configured_one_else_the_sweep_id(tmp_path):
    assert tracking.WandbLogger.from_config(compose_config("eval=none"), tmp_path, sweep_id="s").group == "s"
    assert tracking.WandbLogger.from_config(compose_config("eval=none"), tmp_path).group is None
    configured = compose_config("eval=none", "logger.wandb.group=mine")
    assert tracking.WandbLogger.from_config(configured, tmp_path, sweep_id="s").group == "mine"


def test_samples_are_deterministic_and_order_independent():
    ids = [f"q{i}" for i in range(100)]
    chosen = tracking.sample_ids(ids, 10, salt="gsm8k")
    assert chosen == tracking.sample_ids(list(reversed(ids)), 10, salt="gsm8k")
    assert len(set(chosen)) == 10 and chosen != ids[:10]
    assert tracking.sample_ids(ids[:3], 10) == tracking.sample_ids(ids[:3], 3)


def test_summary_metrics_average_over_seeds_and_benchmarks(tmp_path):
    rows = toy_rows(tmp_path)
    rows += [{**r, "benchmark": "math500", "mean_tokens": 2 * r["mean_tokens"]} for r in rows]
    summary = tracking.summary_metrics(metric_frame(rows))
    assert summary["merged/average/mean_tokens"] == pytest.approx((450 + 900) / 2)
    assert summary["merged/average/relative_length"] == pytest.approx(100 * (675 - 1575) / 1575)
    assert summary["finetuned[0]/math500/relative_length"] == 0.0


# ---------------------------------------------------------------------------------------------
# W&B in a sweep: names, groups, reused points, console lines


def test_run_names_carry_the_swept_values():
    point = ["merge=acm_ties", "merge.t=0.7", "eval.limit=5", "+experiment=t_sensitivity"]
    assert tracking.run_name("acm_ties", point, swept=["merge.t"]) == "acm_ties t=0.7"
    assert tracking.run_name("ties", ["merge.k=0.2", "merge.scale=0.5"], swept=["merge.k", "merge.scale"]) == (
        "ties k=0.2 scale=0.5"
    )
    # A sweep over pairs or calibration settings names them; one over methods names the method alone.
    assert tracking.run_name("ties", ["model_pair=qwen2.5-7b", "merge=ties"], swept=["model_pair", "merge"]) == (
        "ties qwen2.5-7b"
    )
    assert tracking.run_name("acm_ties", ["calibration.per_cluster=2"], swept=["calibration.per_cluster"]) == (
        "acm_ties calibration.per_cluster=2"
    )
    # Outside a sweep: the merge parameters given.
    assert tracking.run_name("acm_ties", point) == "acm_ties t=0.7"
    assert tracking.run_name("ties") == "ties"
    assert len(tracking.run_name("ties", [f"merge.k={'9' * 200}"])) == 128


def test_swept_keys_come_from_the_sweep_definition(tmp_path):
    """Hydra writes multirun.yaml before any job starts; every task (local or SLURM) reads it."""
    sweep = tmp_path / "multirun" / "2025-01-01" / "10-00-00"
    sweep.mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create(
            {
                "hydra": {
                    "overrides": {"task": ["merge=acm_ties", "merge.t=0.5,0.7", "eval.limit=5"]},
                    "sweeper": {"params": {"calibration.per_cluster": "2,8"}},
                }
            }
        ),
        sweep / "multirun.yaml",
    )
    assert tracking.sweep_swept_keys(sweep) == ["calibration.per_cluster", "merge.t"]
    assert tracking.sweep_swept_keys(tmp_path / "elsewhere") is None
    (sweep / "multirun.yaml").write_text("hydra: [")
    assert tracking.sweep_swept_keys(sweep) is None


def test_a_sweep_point_is_named_and_grouped_by_its_sweep(tmp_path, monkeypatch):
    from acm_exp import run_identity

    sweep = tmp_path / "multirun" / "2025-01-01" / "10-00-00"
    sweep.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": ["merge.t=0.5,0.7"]}}}), sweep / "multirun.yaml")
    monkeypatch.setattr(run_identity, "detect_sweep_dir", lambda: sweep)
    monkeypatch.setattr(run_identity, "job_overrides", lambda: ["merge.t=0.7", "eval.limit=5"])
    tracker = tracking.WandbLogger.from_config(compose_config("eval=none"), tmp_path / "run")
    assert (tracker.name, tracker.group) == ("acm_ties t=0.7", "2025-01-01_10-00-00")
    assert tracker.config["results_run_id"].startswith("toy__acm_ties__")


def test_a_point_skipped_as_complete_appears_in_the_group_tagged_reused(tmp_path, wandb_home):
    """The pipeline's skip branch: a short offline run carrying the metrics already recorded."""
    from acm_exp import pipeline, results

    results_dir = tmp_path / "results"
    cfg = compose_config(
        "merge=ties", "eval=toy", "eval.limit=6", f"logger.results_dir={results_dir}", "logger.wandb.group=sweep-1"
    )
    first = tmp_path / "first"
    first.mkdir()
    rows = [{**row, "benchmark": "toy"} for row in toy_rows(first)]
    results.record_run(cfg, first, rows, results_dir=results_dir)
    outcome = pipeline.run_point(cfg, tmp_path / "second")
    assert outcome.status == "skipped"
    run = offline_run(tmp_path / "second")
    assert list(run["run"].tags) == ["reused"] and run["run"].run_group == "sweep-1"
    assert run["run"].display_name == "ties"
    assert run["summary"]["merged/toy/accuracy"] == 51.0 and run["summary"]["merged/toy/n"] == 6
    assert run["config"]["reused"]["run_dir"] == str(first.absolute())
    assert run["config"]["results_run_id"] == results.default_run_id(cfg)
    # The numbers only: the samples stay with the run that recorded them.
    assert not list(run["files"].glob("media/table/samples/*"))


def test_wandb_console_lines_go_to_the_run_log_not_stderr(tmp_path, wandb_home, monkeypatch, capfd):
    import logging

    monkeypatch.delenv("WANDB_SILENT")  # W&B's banners on: they must still not reach the terminal
    job_log = tmp_path / "__main__.log"
    handler = logging.FileHandler(job_log)
    logging.getLogger().addHandler(handler)
    try:
        with tracking.WandbLogger(logger_config(mode="offline").wandb, tmp_path / "run", name="x") as tracker:
            tracker.log_results(toy_rows(tmp_path))
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    captured = capfd.readouterr()
    assert "wandb" not in captured.err.lower(), captured.err
    text = job_log.read_text()
    assert "wandb: " in text and "wandb sync" in text  # the sync hint of an offline run
    # Without a log file (the Python API), the lines go beside the run's W&B files.
    with tracking.WandbLogger(logger_config(mode="offline").wandb, tmp_path / "api", name="y"):
        pass
    assert "wandb: " in (tmp_path / "api" / "wandb" / "console.log").read_text()
    assert "wandb" not in capfd.readouterr().err.lower()


@pytest.mark.slow
def test_the_python_api_logs_to_wandb_as_the_logger_config_asks(toy_pair, tmp_path, wandb_home):
    import acm_exp

    cache = toy_pair["base"].parent.parent.parent
    merged = acm_exp.merge_models(
        "toy:base", "toy:finetuned", "task_arithmetic", scale=0.5, run_dir=tmp_path / "merge", cache_dir=cache
    )
    acm_exp.evaluate(merged, ("toy",), limit=3, max_new_tokens=16, results_dir=tmp_path / "results", cache_dir=cache)
    run = offline_run(merged.run_dir)
    assert run["run"].display_name == "task_arithmetic scale=0.5"
    assert run["summary"]["merged/toy/n"] == 3
    quiet = acm_exp.merge_models(
        "toy:base", "toy:finetuned", "task_arithmetic", scale=0.7, run_dir=tmp_path / "quiet", cache_dir=cache
    )
    acm_exp.evaluate(
        quiet,
        ("toy",),
        limit=3,
        max_new_tokens=16,
        logger="disabled",
        results_dir=tmp_path / "results",
        cache_dir=cache,
    )
    assert not (quiet.run_dir / "wandb").exists()
