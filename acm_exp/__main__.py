"""Hydra entry point: ``python -m acm_exp [overrides]`` (``--help``: what it does and how to use it).

Every failure ends the same way: exactly one line on stderr, ``acm_exp: error: ...``, saying what
failed and what to do, and a non-zero exit status: 2 for a failure (a bad input names the bad value;
a runtime failure also names the log file that holds its traceback, never the console), 130 for
Ctrl-C, 128 + the signal's number for SIGTERM, SIGUSR1 and SIGUSR2 (143 for SIGTERM; what SLURM
sends at a time limit or on preemption: acm_exp.interrupts).

In a sweep (``-m``) a point that fails is recorded with its stage and cause (acm_exp.sweep) and the
sweep goes on; at the end a summary lists every point, and the exit status is 1 when any failed.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from acm_exp.config import register_configs
from acm_exp.errors import UserError
from acm_exp.failures import describe, failure_line, is_interruption, stage_of, write_traceback
from acm_exp.interrupts import Interrupted, signals_interrupt

log = logging.getLogger("acm_exp")

EXIT_FAILURE = 2
EXIT_INTERRUPTED = 130
HELP_FLAGS = ("--help", "-h")

register_configs()

# The rows a sweep's earlier points printed (acm_exp.pipeline.new_rows): the input models' rows are
# printed once per sweep, not once per point.
_PRINTED_ROWS: set = set()


def _run_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not running under Hydra
        return None


def _sweep_point() -> list[str] | None:
    """The overrides of the running sweep point; None outside a sweep (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return None
    return list(hydra_cfg.overrides.task) if hydra_cfg.mode == RunMode.MULTIRUN else None


def _exit_status(error: BaseException) -> int:
    if isinstance(error, Interrupted):
        return error.exit_status
    return EXIT_INTERRUPTED if isinstance(error, KeyboardInterrupt) else EXIT_FAILURE


def _report(error: BaseException, point: list[str] | None = None) -> str:
    """Log and print the failure's one line (its traceback goes to the run's log file)."""
    log_file = None if isinstance(error, UserError) or is_interruption(error) else write_traceback(error, _run_dir())
    line = failure_line(error, log_file, point=" ".join(point) if point is not None else None)
    if point is not None and not is_interruption(error):
        line += "; the sweep goes on with the next point"
    log.error("%s", line.removeprefix("acm_exp: error: "))
    print(line, file=sys.stderr, flush=True)
    return line


def _record_point(point: list[str], status: str, error: BaseException | None = None, rows=None) -> dict:
    from dataclasses import asdict

    from acm_exp.sweep import PointRecord, headline, write_record

    record = PointRecord(
        overrides=point,
        status=status,
        run_dir=str(_run_dir()),
        stage=stage_of(error) if error is not None else None,
        cause=describe(error) if error is not None and not is_interruption(error) else None,
        headline=headline(rows or []),
    )
    if error is not None and is_interruption(error):
        record.cause = failure_line(error, None).removeprefix("acm_exp: error: ")
    write_record(record)
    return asdict(record)


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> dict | None:
    """One job. Outside a sweep a failure exits here; in a sweep it is recorded and the point's record
    returned (also to the submitit launcher, from a SLURM task), so that the sweep goes on."""
    from acm_exp.sweep import FAILED, INTERRUPTED

    point = _sweep_point()
    with signals_interrupt():
        try:
            from acm_exp.pipeline import run_point

            outcome = run_point(cfg, printed=_PRINTED_ROWS if point is not None else None)
        except (KeyboardInterrupt, Interrupted) as error:
            if isinstance(error, Interrupted):
                error.hand_over()  # the run has unwound: now submitit may requeue the task
            _report(error)
            if point is not None:
                _record_point(point, INTERRUPTED, error)
            sys.exit(_exit_status(error))
        except Exception as error:  # noqa: BLE001 - the CLI's last line: every failure becomes one line
            _report(error, point)
            if point is None:
                sys.exit(EXIT_FAILURE)
            return _record_point(point, FAILED, error)
    return _record_point(point, outcome.status, rows=outcome.rows) if point is not None else None


def _launcher_failure_line(error: BaseException) -> str:
    """A failure of the sweep's launcher (not of a point): sbatch's refusal, or the cause in one line."""
    from acm_exp import sweep
    from acm_exp.slurm import sbatch_refusal

    if sweep.ACTIVE is None:
        return failure_line(error, None)
    refusal = sbatch_refusal(error, sweep.ACTIVE.launcher)
    return f"acm_exp: error: {refusal or f'the sweep launcher failed: {describe(error)}'}"


def cli() -> None:
    """``python -m acm_exp`` and ``acm-exp``: Hydra's own errors (an unknown key, a wrongly typed
    value, a value outside a fixed choice) end in the same one line as ours, before any work."""
    from acm_exp import sweep
    from acm_exp.slurm import chooses_slurm_launcher, filtered_stderr, missing_extra_error

    arguments = sys.argv[1:]
    if any(flag in arguments for flag in HELP_FLAGS):
        from acm_exp.cli_help import help_text

        print(help_text())
        return
    extra_error = missing_extra_error(arguments)
    if extra_error:
        print(f"acm_exp: error: {extra_error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_FAILURE)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    wants_full_error = bool(os.environ.get("HYDRA_FULL_ERROR"))
    # Hydra then raises its errors instead of printing them over several lines.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    if chooses_slurm_launcher(arguments):
        sys.stderr = filtered_stderr()  # sbatch's refusal is reported once, in our line
    with signals_interrupt():
        try:
            main()
        except (HydraException, OmegaConfBaseException) as error:
            if wants_full_error:
                raise
            from acm_exp.failures import config_error_line

            print(f"acm_exp: error: {config_error_line(error)}", file=sys.stderr, flush=True)
            sys.exit(EXIT_FAILURE)
        except (KeyboardInterrupt, Interrupted) as error:
            print(failure_line(error, None), file=sys.stderr, flush=True)
            sys.exit(_exit_status(error))
        except Exception as error:  # noqa: BLE001 - the launcher failed (e.g. sbatch refused the array)
            if wants_full_error:
                raise
            line = _launcher_failure_line(error)
            if not line.startswith("acm_exp: error: sbatch refused"):
                sweep.finish_active_sweep(report_failures=False)  # what the tasks that ran recorded
            print(line, file=sys.stderr, flush=True)
            sys.exit(EXIT_FAILURE)
    status = sweep.finish_active_sweep()
    if status:
        sys.exit(status)


if __name__ == "__main__":
    cli()
