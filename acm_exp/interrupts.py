"""SIGTERM, SIGUSR1 and SIGUSR2 end a run the way Ctrl-C does, with one line saying what was interrupted.

SLURM sends these signals when a task reaches its time limit (``--signal``, then SIGTERM), is
preempted, requeued or cancelled (``scancel``: SIGTERM). Their default action kills the process on
the spot, leaving a hidden temporary merge directory and an unfinished W&B run. Within
``signals_interrupt()`` each of them raises ``Interrupted`` in the main thread instead: like
``KeyboardInterrupt`` it is not an ``Exception``, so nothing on the way swallows it, and every
``finally``/``except BaseException`` on the stack runs: the unfinished merge directory and partial
files are removed (they are written under temporary names), the W&B run is finished and the CLI
prints ``acm_exp: error: interrupted by SIGTERM during <stage>; ...``.

Under submitit (``hydra/launcher=slurm``) submitit's own handler for its preemption signal (USR2,
sent ``signal_delay_s`` before the time limit) is kept for later: once the run has unwound (W&B
closed, temporary files removed) ``Interrupted.hand_over()`` calls it; it pickles the task and
requeues it (``scontrol requeue``, at most ``max_num_timeout`` times after time-outs). The requeued
task runs the same sweep point in the same run directory and resumes from what the first attempt
finished: the complete merge, the cached MI statistics and every complete per-benchmark sample file.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
# submitit's handler for its preemption signal (submitit.core.job_environment.SignalHandler).
SUBMITIT_REQUEUE_HANDLER = "checkpoint_and_try_requeue"


class Interrupted(BaseException):
    """A run ended by a signal. ``requeue``: None when no scheduler requeue was attempted, else what
    submitit did ("requeued" or why it did not requeue), once ``hand_over()`` ran."""

    def __init__(self, signum: int, scheduler_handler: Callable | None = None):
        self.signum = signum
        self.requeue: str | None = None
        self._scheduler_handler = scheduler_handler
        super().__init__(self.signal_name)

    def hand_over(self) -> None:
        """Run the scheduler's handler that ours replaced (submitit's requeue), after the run unwound."""
        handler, self._scheduler_handler = self._scheduler_handler, None
        if handler is not None:
            self.requeue = _submitit_requeue(handler, self.signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        # The shell's convention for a process ended by a signal (143 for SIGTERM).
        return 128 + self.signum


_installed = threading.local()


def _is_submitit_requeue(handler: Any) -> bool:
    return getattr(handler, "__name__", "") == SUBMITIT_REQUEUE_HANDLER


def _submitit_requeue(handler: Callable, signum: int) -> str:
    """Run submitit's requeue handler; what it did."""
    try:
        handler(signum, None)
    except SystemExit:  # submitit requeued the task and asks the process to exit
        return "requeued"
    except Exception as error:  # noqa: BLE001 - submitit says why it did not requeue (UncompletedJobError)
        return f"not requeued: {' '.join(str(error).split())}"
    return "not requeued"


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM, SIGUSR1 and SIGUSR2 raise ``Interrupted`` (main thread only; nested
    uses keep the outer handlers)."""
    if threading.current_thread() is not threading.main_thread() or getattr(_installed, "active", False):
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
    raised = False

    def handler(signum, frame):
        nonlocal raised
        if raised:  # already unwinding (SLURM sends SIGTERM to a task it requeues, too)
            return
        raised = True
        scheduler = previous[signum] if _is_submitit_requeue(previous[signum]) else None
        raise Interrupted(signum, scheduler)

    for signum in HANDLED_SIGNALS:
        signal.signal(signum, handler)
    _installed.active = True
    try:
        yield
    finally:
        _installed.active = False
        for signum, old in previous.items():
            signal.signal(signum, old)
