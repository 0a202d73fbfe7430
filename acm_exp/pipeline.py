"""The CLI's job: validate → resolve models → coefficients → merge → evaluate → record.

``python -m acm_exp`` composes the config with Hydra and calls ``run_point`` (``run`` returns just the
merged model's directory). The job runs the stage functions the Python API runs too
(``acm_exp.stages.merge_configured``, ``evaluate_configured``; the API composes a config from plain
values and makes the same calls), so a job and an API call with the same settings share caches,
manifests and metrics. What the job adds:
- a run whose config hash already has complete results is skipped (``force=true`` redoes it); its
  recorded rows are what it reports;
- the results are recorded in the local table and W&B, and printed (in a sweep, the input models'
  rows only the first time: they are the same for every point).

Importing this module loads no torch: validation runs first, so a bad value is reported in well under
two seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import acm_exp.costs as costs
from acm_exp.needs import check_resolvable
from acm_exp.paths import resolve_results_dir
from acm_exp.stages import Steps, evaluate_configured, merge_configured, merged_output_dir, validate, write_costs

log = logging.getLogger("acm_exp")

RAN, SKIPPED = "ran", "skipped"


@dataclass
class RunOutcome:
    """What one job did: ``status`` "ran" or "skipped" (complete results already recorded), the merged
    model's directory, and its results rows (for a skipped run, the ones already in the table)."""

    status: str
    merged_dir: Path
    config_hash: str
    results_dir: Path
    rows: list[dict] = field(default_factory=list)


def run_directory() -> Path:
    from hydra.core.hydra_config import HydraConfig

    # Hydra (version_base=None) does not chdir: the run directory must be asked for explicitly.
    return Path(HydraConfig.get().runtime.output_dir)


def run(cfg: DictConfig, run_dir: Path | None = None) -> Path:
    """Run one configured job; returns the merged model's directory."""
    return run_point(cfg, run_dir).merged_dir


def run_point(cfg: DictConfig, run_dir: Path | None = None, *, printed: set | None = None) -> RunOutcome:
    """Run one configured job (one sweep point). ``printed``: rows already printed by earlier points of
    the same sweep (updated here), so the unchanged base and fine-tuned rows are not printed again."""
    _label_pair(cfg)
    method = validate(cfg)
    from acm_exp.run_identity import config_hash
    from acm_exp.tracking import WandbLogger, log_reused_run

    if cfg.eval.benchmarks:  # the results table (pandas) only where there are results; a merge-only run has none
        from acm_exp.results import has_complete_results, record_run

    run_dir = Path(run_dir or run_directory()).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("run directory: %s", run_dir)
    OmegaConf.save(cfg, run_dir / "resolved_config.yaml", resolve=True)
    results_dir = resolve_results_dir(cfg.logger.results_dir)
    hash_ = config_hash(cfg)
    benchmarks = list(cfg.eval.benchmarks)
    if (
        benchmarks
        and not cfg.force
        and has_complete_results(results_dir, hash_, benchmarks, seeds=list(cfg.eval.seeds))
    ):
        log.info("skipping: results for config %s are complete in %s (force=true redoes the run)", hash_, results_dir)
        print(f"skipped: complete results already in {results_dir}")
        rows = recorded_rows(results_dir, hash_)
        # The sweep's W&B group still shows the point: a short run with its recorded metrics, tagged reused.
        log_reused_run(cfg, run_dir, rows)
        return RunOutcome(SKIPPED, merged_output_dir(cfg, run_dir), hash_, results_dir, rows)

    # Every model and dataset the run reads must be local, cached or reachable before anything heavy starts.
    check_resolvable(cfg, _task_overrides())
    started = datetime.now(timezone.utc)
    steps = Steps()
    rows: list[dict] = []
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
            print(summary_table(new_rows(rows, printed)))
            print(f"results: {table_path}")
    log.info("stage costs: %s", costs_path)
    return RunOutcome(RAN, merged.output_dir, hash_, results_dir, rows)


def _task_overrides() -> list[str] | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not running under Hydra (the API, tests)
        return None


def recorded_rows(results_dir: Path, hash_: str) -> list[dict]:
    """The rows the results table holds for a config hash (what a skipped run reports)."""
    from acm_exp.results import load_results

    table = load_results(results_dir, config_hash=hash_)
    return table.astype(object).where(table.notna(), None).to_dict(orient="records")


def new_rows(rows: list[dict], printed: set | None) -> list[dict]:
    """``rows`` without the input models' rows already in ``printed`` (which is updated); all of them
    when ``printed`` is None. A merged model's rows are always new."""
    if printed is None:
        return rows
    kept = []
    for row in rows:
        # The samples file names the evaluation: the same input model evaluated the same way.
        key = (row.get("model"), row.get("benchmark"), row.get("seed"), str(row.get("samples_path")))
        if row.get("model") != "merged" and key in printed:
            continue
        printed.add(key)
        kept.append(row)
    return kept


def _label_pair(cfg: DictConfig) -> None:
    from acm_exp.toy import is_toy_id

    # The toy pair's name must not stick to other models given on the command line.
    if cfg.model_pair.name == "toy" and not is_toy_id(cfg.model_pair.base):
        cfg.model_pair.name = "custom"


def summary_table(rows: list[dict]) -> str:
    """Accuracy and mean response tokens per model and benchmark (seed means when several), each with
    the number of questions it rests on, as the sweep summary shows them."""
    import pandas as pd

    from acm_exp.sweep import headline, headline_cell

    entries = headline(rows)
    if not entries:
        return ""
    cells = pd.DataFrame([{**entry, "cell": headline_cell(entry)} for entry in entries])
    table = cells.pivot(index="model", columns="benchmark", values="cell").fillna("-")
    return table.loc[list(dict.fromkeys(cells["model"]))].to_string()
