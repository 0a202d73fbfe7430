"""Run a grading function in a helper process that is killed when it runs past its time limit.

sympy cannot be interrupted from outside: ``signal.alarm`` works in the main thread only and not
inside long C calls (big-integer arithmetic), so math-verify's own timeouts leave grading unbounded
in a thread pool. A child process can always be killed. The helper is one long-lived
``python -m acm_exp.eval.bounded`` process (no ``multiprocessing``: its spawn start method would
re-run the caller's ``__main__`` script); requests and answers are JSON lines on its pipes. After a
kill a new helper starts at once, so its start-up overlaps the caller's next steps.

Only functions listed in ``FUNCTIONS`` can be called, by name.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_READY = "ready"
# The package root, so that the helper imports this checkout of acm_exp.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _functions() -> dict[str, Callable[..., Any]]:
    from acm_exp.eval import grading

    return {"grade_math": grading.grade_math_unbounded, "grade_gsm8k": grading.grade_gsm8k_unbounded,
            "is_equiv": grading.is_equiv_unbounded, "extract_answer": grading.extract_answer_unbounded}


class TimeLimitExceeded(Exception):
    """The call ran past its time limit (or the helper died); the helper was restarted."""


class HelperError(Exception):
    """The called function raised in the helper process."""


class HelperUnavailable(Exception):
    """No helper process could start here."""


class _Helper:
    """One child process answering calls in order; callers take turns (a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._ready = False

    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "acm_exp.eval.bounded"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, text=True, bufsize=1,
        )
        self._ready = False

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def _read_line(self, deadline: float) -> str | None:
        """One line from the helper, or None at the deadline or when the helper died."""
        assert self._process is not None and self._process.stdout is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([self._process.stdout], [], [], remaining)
        if not readable:
            return None
        line = self._process.stdout.readline()
        return line or None

    def call(self, name: str, args: list[Any], time_limit_s: float, start_limit_s: float) -> Any:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            if not self._ready:
                if self._read_line(time.monotonic() + start_limit_s) != _READY + "\n":
                    self._stop()
                    raise HelperUnavailable("the grading helper process did not start")
                self._ready = True
            assert self._process is not None and self._process.stdin is not None
            try:
                self._process.stdin.write(json.dumps({"name": name, "args": args}) + "\n")
                self._process.stdin.flush()
            except (BrokenPipeError, OSError):
                self._stop()
                raise TimeLimitExceeded(f"{name}: the grading helper died") from None
            line = self._read_line(time.monotonic() + time_limit_s)
            if line is None:
                self._stop()
                self._start()  # start-up overlaps the caller's next steps
                raise TimeLimitExceeded(f"{name} took more than {time_limit_s} s")
            reply = json.loads(line)
            if "error" in reply:
                raise HelperError(f"{name} failed in the grading helper: {reply['error']}")
            return reply["result"]

    def close(self) -> None:
        with self._lock:
            self._stop()


_HELPER = _Helper()
# Set when the helper cannot start here (no subprocesses allowed): calls then run in-process.
_IN_PROCESS = False


def call_bounded(name: str, args: list[Any], *, time_limit_s: float, start_limit_s: float = 60.0) -> Any:
    """``FUNCTIONS[name](*args)`` in the helper process, killed after ``time_limit_s`` seconds
    (TimeLimitExceeded). Arguments and result must be JSON values.

    Where no helper process can start, the call runs in this process, without a time limit.
    """
    global _IN_PROCESS
    if not _IN_PROCESS:
        try:
            return _HELPER.call(name, args, time_limit_s, start_limit_s)
        except (OSError, HelperUnavailable) as error:
            log.warning("grading helper unavailable (%s); grading in-process without a time limit", error)
            _IN_PROCESS = True
    return _functions()[name](*args)


def close_helper() -> None:
    """Stop the helper process (a later call starts a new one)."""
    _HELPER.close()


def _serve() -> None:
    # Replies go to the real stdout; anything the grading code prints goes to stderr.
    replies = sys.stdout
    sys.stdout = sys.stderr
    functions = _functions()
    replies.write(_READY + "\n")
    replies.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"result": functions[request["name"]](*request["args"])}
        except Exception as error:  # noqa: BLE001 - reported to the caller, the helper keeps serving
            reply = {"error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    _serve()
