"""The CLI's job: validate → resolve models → coefficients → merge → evaluate → record.

``python -m acm_exp`` composes the config with Hydra and calls ``run``. The stages are the Python API's
own calls on the composed config (``acm_exp.api.merge_configured``, ``evaluate_configured``; the API's
public functions compose a config from plain values and make the same calls), so a job and an API
call with the same settings share caches, manifests and metrics. What the job adds:
- a run whose config hash already has complete results is skipped (``force=true`` redoes it);
- the results are recorded in the local table and W&B, and printed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from acm_exp import costs
from acm_exp.api import evaluate_configured, merge_configured
from acm_exp.stages import Steps, merged_output_dir, validate, write_costs

log = logging.getLogger("acm_exp")


def run_directory() -> Path:
    from hydra.core.hydra_config import HydraConfig

    # Hydra (version_base=None) does not chdir: the run directory must be asked for explicitly.
    return Path(HydraConfig.get().runtime.output_dir)


def run(cfg: DictConfig, run_dir: Path | None = None) -> Path:
    """Run one configured job; returns the merged model's directory."""
    from acm_exp.results import config_hash, has_complete_results, record_run, resolve_results_dir
    from acm_exp.tracking import WandbLogger

    _label_pair(cfg)
    method = validate(cfg)
    run_dir = Path(run_dir or run_directory()).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("run directory: %s", run_dir)
    OmegaConf.save(cfg, run_dir / "resolved_config.yaml", resolve=True)
    results_dir = resolve_results_dir(cfg.logger.results_dir)
    benchmarks = list(cfg.eval.benchmarks)
    if (
        benchmarks
        and not cfg.force
        and has_complete_results(results_dir, config_hash(cfg), benchmarks, seeds=list(cfg.eval.seeds))
    ):
        log.info(
            "skipping: results for config %s are complete in %s (force=true redoes the run)",
            config_hash(cfg),
            results_dir,
        )
        print(f"skipped: complete results already in {results_dir}")
        return merged_output_dir(cfg, run_dir)

    started = datetime.now(timezone.utc)
    steps = Steps()
    with WandbLogger.from_config(cfg, run_dir) as tracker, costs.ledger() as book:
        merged = merge_configured(cfg, method, run_dir, steps)
        print(f"merged model: {merged.output_dir}")
        evaluations = evaluate_configured(cfg, merged.inputs, merged.output_dir, run_dir, steps) if benchmarks else []
        rows = [row for evaluation in evaluations for row in evaluation.rows]
        costs_path = write_costs(book, run_dir)
        if rows:
            with steps("recording the results"):
                table_path = record_run(
                    cfg,
                    run_dir,
                    rows,
                    manifest=merged.manifest or None,
                    coefficients_path=merged.coefficients_path,
                    started_at=started,
                    results_dir=results_dir,
                    costs=book.to_dict(),
                )
                tracker.log_results(
                    rows,
                    manifest=merged.manifest or None,
                    coefficients_path=merged.coefficients_path,
                    costs=book.to_dict(),
                )
            print(summary_table(rows))
            print(f"results: {table_path}")
    log.info("stage costs: %s", costs_path)
    return merged.output_dir


def _label_pair(cfg: DictConfig) -> None:
    from acm_exp.toy import is_toy_id

    # The toy pair's name must not stick to other models given on the command line.
    if cfg.model_pair.name == "toy" and not is_toy_id(cfg.model_pair.base):
        cfg.model_pair.name = "custom"


def summary_table(rows: list[dict]) -> str:
    """Accuracy and mean response tokens per model and benchmark (seed means when several)."""
    import pandas as pd

    frame = pd.DataFrame([row for row in rows if row.get("seed") is not None])
    if frame.empty:
        return ""
    grouped = frame.groupby(["model", "benchmark"], sort=False)[["accuracy", "mean_tokens"]].mean().reset_index()
    grouped["cell"] = [
        f"{acc:5.1f}% / {tokens:6.1f} tok" for acc, tokens in zip(grouped.accuracy, grouped.mean_tokens, strict=True)
    ]
    table = grouped.pivot(index="model", columns="benchmark", values="cell")
    order = list(dict.fromkeys(frame["model"]))
    return table.loc[order].to_string()
