"""Hydra entry point: ``python -m acm_exp [overrides]``.

Every failure ends the same way: exit status 2 (130 for Ctrl-C) and exactly one line on stderr,
``acm_exp: error: ...``, saying what failed and what to do. A bad input names the bad value; a
runtime failure also names the log file that holds its traceback (never the console).
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
from acm_exp.failures import config_error_line, failure_line, write_traceback

log = logging.getLogger("acm_exp")

EXIT_FAILURE = 2
EXIT_INTERRUPTED = 130

register_configs()


def _run_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not running under Hydra
        return None


def _fail(error: BaseException, status: int) -> None:
    log_file = None if isinstance(error, UserError) else write_traceback(error, _run_dir())
    line = failure_line(error, log_file)
    log.error("%s", line.removeprefix("acm_exp: error: "))
    print(line, file=sys.stderr, flush=True)
    sys.exit(status)


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    from acm_exp.pipeline import run

    try:
        run(cfg)
    except KeyboardInterrupt as error:
        _fail(error, EXIT_INTERRUPTED)
    except Exception as error:  # noqa: BLE001 - the CLI's last line: every failure becomes one line
        _fail(error, EXIT_FAILURE)


def cli() -> None:
    """``python -m acm_exp`` and ``acm-exp``: Hydra's own errors (an unknown key, a wrongly typed
    value, a value outside a fixed choice) end in the same one line as ours, before any work."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    wants_full_error = bool(os.environ.get("HYDRA_FULL_ERROR"))
    # Hydra then raises its errors instead of printing them over several lines.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (HydraException, OmegaConfBaseException) as error:
        if wants_full_error:
            raise
        print(f"acm_exp: error: {config_error_line(error)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_FAILURE)


if __name__ == "__main__":
    cli()
