"""Run a grading function in a helper process that is killed when it runs past its time limit.

sympy cannot be interrupted from outside: ``signal.alarm`` works in the main thread only and not
inside long C calls (big-integer arithmetic), so math-verify's own timeouts leave grading unbounded
in a thread pool. A child process can always be killed. The helper is one long-lived
``python -m acm_exp.eval.bounded`` process (no ``multiprocessing``: its spawn start method would
re-run the caller's ``__main__`` script); requests and answers are JSON lines on its pipes. After a
kill the helper forks a new worker from its warm state, in milliseconds.

The helper serves the functions a module lists in its ``BOUNDED_FUNCTIONS`` (name -> function; the
grading module, acm_exp.eval.grading) and calls its ``BOUNDED_WARM_UP`` once; only those can be
called, by name. The module is named by the caller, so this one stays independent of it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import select
import signal
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


def _served(module: str) -> Any:
    return importlib.import_module(module)


class TimeLimitExceeded(Exception):
    """The call ran past its time limit (or the helper died); the helper was restarted."""


class HelperError(Exception):
    """The called function raised in the helper process."""


class HelperUnavailable(Exception):
    """No helper process could start here."""


class _Helper:
    """The helper process and its current worker; callers take turns (a lock).

    The helper imports and warms up once, then forks a worker that answers calls; when a call
    runs past its limit the worker is killed and the helper forks the next one from its warm
    state, in milliseconds. Each worker announces itself with a ``ready <pid>`` line.
    """

    def __init__(self, module: str) -> None:
        self._module = module
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._worker_pid: int | None = None
        self._request_id = 0

    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "acm_exp.eval.bounded", self._module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
            bufsize=1,
        )
        self._worker_pid = None

    def _stop(self) -> None:
        if self._worker_pid is not None:
            _kill(self._worker_pid)
            self._worker_pid = None
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def _read_line(self, deadline: float) -> str | None:
        """One line from the worker or helper, or None at the deadline or when the helper died."""
        assert self._process is not None and self._process.stdout is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([self._process.stdout], [], [], remaining)
        if not readable:
            return None
        return self._process.stdout.readline() or None

    def _ready_worker(self, start_limit_s: float) -> None:
        if self._process is None or self._process.poll() is not None:
            self._start()
        deadline = time.monotonic() + start_limit_s
        while self._worker_pid is None:
            line = self._read_line(deadline)
            if line is None:
                self._stop()
                raise HelperUnavailable("the grading helper process did not start")
            if line.startswith(_READY + " "):
                self._worker_pid = int(line.split()[1])
            # Anything else is a late answer of a killed worker: dropped.

    def call(self, name: str, args: list[Any], time_limit_s: float, start_limit_s: float) -> Any:
        with self._lock:
            self._ready_worker(start_limit_s)
            assert self._process is not None and self._process.stdin is not None
            self._request_id += 1
            try:
                self._process.stdin.write(json.dumps({"id": self._request_id, "name": name, "args": args}) + "\n")
                self._process.stdin.flush()
            except (BrokenPipeError, OSError):
                self._stop()
                raise TimeLimitExceeded(f"{name}: the grading helper died") from None
            deadline = time.monotonic() + time_limit_s
            while True:
                line = self._read_line(deadline)
                if line is None:
                    if self._worker_pid is not None:
                        _kill(self._worker_pid)  # the helper forks the next worker
                    self._worker_pid = None
                    raise TimeLimitExceeded(f"{name} took more than {time_limit_s} s")
                if line.startswith(_READY + " "):
                    # The worker died (e.g. out of memory) and the helper forked a new one.
                    self._worker_pid = int(line.split()[1])
                    raise TimeLimitExceeded(f"{name}: the grading worker died")
                reply = json.loads(line)
                if reply.get("id") == self._request_id:
                    break
            if "error" in reply:
                raise HelperError(f"{name} failed in the grading helper: {reply['error']}")
            return reply["result"]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# One helper process per served module.
_HELPERS: dict[str, _Helper] = {}
# Set when the helper cannot start here (no subprocesses allowed): calls then run in-process.
_IN_PROCESS = False


def call_bounded(module: str, name: str, args: list[Any], *, time_limit_s: float, start_limit_s: float = 60.0) -> Any:
    """``module.BOUNDED_FUNCTIONS[name](*args)`` in the helper process, killed after ``time_limit_s``
    seconds (TimeLimitExceeded). Arguments and result must be JSON values.

    Where no helper process can start, the call runs in this process, without a time limit.
    """
    global _IN_PROCESS
    if not _IN_PROCESS:
        try:
            helper = _HELPERS.setdefault(module, _Helper(module))
            return helper.call(name, args, time_limit_s, start_limit_s)
        except (OSError, HelperUnavailable) as error:
            log.warning("grading helper unavailable (%s); grading in-process without a time limit", error)
            _IN_PROCESS = True
    return _served(module).BOUNDED_FUNCTIONS[name](*args)


def _serve_calls(functions: dict[str, Callable[..., Any]], replies: Any) -> None:
    """The worker: answer calls from stdin until it closes."""
    replies.write(f"{_READY} {os.getpid()}\n")
    replies.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"id": request["id"], "result": functions[request["name"]](*request["args"])}
        except Exception as error:  # noqa: BLE001 - reported to the caller, the worker keeps serving
            reply = {"id": request["id"], "error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def _serve(module: str) -> None:
    """The helper: import and warm up once, then fork one worker after another."""
    # Replies go to the real stdout; anything the grading code prints goes to stderr.
    replies = sys.stdout
    sys.stdout = sys.stderr
    served = _served(module)
    functions = served.BOUNDED_FUNCTIONS
    # The first sympy / math-verify call of a process builds parsers and caches (seconds): pay it
    # once here, so that every forked worker starts warm.
    for name, args in getattr(served, "BOUNDED_WARM_UP", ()):
        try:
            functions[name](*args)
        except Exception:  # noqa: BLE001 - a failed warm-up only costs the first call time
            pass
    while True:
        pid = os.fork()
        if pid == 0:
            try:
                _serve_calls(functions, replies)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return  # stdin closed: the caller is gone
        _drain_stdin()


def _drain_stdin() -> None:
    """Drop what a killed worker left unread: the caller writes its next call only after the next
    worker's ``ready`` line, so anything waiting now belongs to the call that was given up."""
    os.set_blocking(0, False)
    try:
        while os.read(0, 1 << 16):
            pass
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(0, True)


if __name__ == "__main__":
    _serve(sys.argv[1])
