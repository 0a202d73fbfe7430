"""The official code harnesses' execution, re-implemented to run inside acm_exp's sandbox.

This file is the program the sandbox runs (as its main.py) for ``eval.code_grading=official``;
acm_exp.eval.code sends it one JSON payload on stdin and reads token-prefixed JSON records from
its stdout. Standard library only, so it runs under any interpreter the sandbox starts. Importing
it has no side effects (tests use its pure functions); ``main`` runs only as a script.

Behaviour reproduced (our own code, written from the harnesses' documented behaviour):

- LiveCodeBench, lcb_runner ``lcb_runner/evaluation/testing_util.py`` at commit 28fef95
  (2025-07-16), which includes the 2025-05-23 stdin mock (16de2a1):
  * stdin problems: a final ``if __name__ == '__main__':`` block is unwrapped; every top-level
    statement except imports goes into ``def wrapped_function()``; lcb_runner's import preamble
    comes first; per test, ``sys.stdin`` is replaced by an in-memory object whose ``read()``
    returns the whole input, ``readline()`` the next line, ``readlines()`` the input split on
    "\\n", ``buffer.read()`` the bytes and ``buffer.readline()`` always the first line; that
    object is not iterable (the newer version; ``for line in sys.stdin`` fails there);
    ``builtins.open`` is a mock_open of the input; ``SystemExit`` is swallowed; output is what
    ``sys.stdout`` received. The real file descriptor 0 is empty, so ``open(0).read()`` reads
    nothing.
  * call-based problems: preamble + code; ``Solution().<fn>`` when the text contains
    ``class Solution`` else the module's ``<fn>``; arguments are the JSON lines of the input;
    only a top-level tuple result becomes a list; the result is compared with ``==`` against
    the JSON-decoded output (so dict keys are not stringified).
  * per test an alarm of ``timeout`` seconds; the first failure stops the run.
- HumanEval-Pro, CodeEval-Pro's harness through Hugging Face ``evaluate``'s ``code_eval``
  (``metrics/code_eval/execute.py``): ``exec(program, {})``, so ``__name__`` is not
  ``"__main__"``; stdout/stderr swallowed, stdin unreadable; one timer for the whole program.

Both apply the harnesses' ``reliability_guard`` (``quit`` unavailable, destructive ``os``,
``shutil`` and ``subprocess`` functions removed; HumanEval's also removes ``exit``). The guard
is not the isolation: the sandbox around this process is.

What the harness's process has imported before its guard, a solution may import too: the import
is then a lookup in ``sys.modules``, while importing such a module afresh after the guard can
fail (numpy's import calls ``os.putenv``, which the guard removed). lcb_runner's testing_util
imports numpy at its top and its runners import torch and datasets (pandas, pyarrow, ...);
HumanEval-Pro's harness imports Hugging Face ``evaluate`` (datasets, pandas, requests, ...). So
before the guard this driver imports every module the program imports (``import x``,
``from x import y``, ``__import__("x")``, ``importlib.import_module("x")``) that is in the
standard library or in the harness's loaded set (``LOADED_BEFORE_GUARD``), and numpy whenever
the program imports anything outside the standard library (lcb_runner always has numpy, and a
package such as scipy imports it). Only what the program names is loaded: the verdicts are the
harness's, without paying for torch on every run.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import faulthandler
import io
import json
import os
import signal
import sys
import types
from decimal import Decimal, InvalidOperation
from typing import Any

LCB_FUNCTION_NAME = "wrapped_function"
# Top-level packages outside the standard library that each harness's evaluating process has
# imported when its guard runs. lcb_runner 28fef95 (lcb_runner.runner.custom_evaluator or .main,
# measured with datasets 5.2 and torch 2.13): numpy and tqdm (evaluation), torch (runner/parser.py),
# datasets (benchmarks) and what datasets imports. HumanEval-Pro (CodeEval-Pro eval/harness.py):
# Hugging Face evaluate and the packages it requires.
_DATASETS_IMPORTS = (
    "datasets dateutil dill filelock fsspec huggingface_hub multiprocess numpy packaging pandas pyarrow "
    "tqdm typing_extensions xxhash yaml anyio h11 idna sniffio cloudpickle"
).split()
LOADED_BEFORE_GUARD = {
    "lcb": frozenset([*_DATASETS_IMPORTS, "torch"]),
    "humaneval": frozenset([*_DATASETS_IMPORTS, "evaluate", "requests", "urllib3", "certifi", "charset_normalizer"]),
}
# Standard-library modules whose import prints or opens something: never loaded ahead.
_NOT_PRELOADED = frozenset({"this", "antigravity", "__hello__", "__phello__", "idlelib", "turtle", "turtledemo"})
# lcb_runner's compute_code_generation_metrics sets this for the whole evaluation process.
LCB_INT_MAX_STR_DIGITS = 50000
_RESULT_PREVIEW = 300


class TimeoutException(Exception):
    """Raised by the alarm; an Exception (not BaseException), as in both harnesses."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise TimeoutException("Timed out!")


def _set_alarm(seconds: float) -> None:
    signal.setitimer(signal.ITIMER_REAL, seconds)


# ---------------------------------------------------------------------------------------------
# Source transformations of lcb_runner's stdin path (pure; tested without a sandbox)


def clean_if_name(code: str) -> str:
    """Unwrap a final top-level ``if __name__ == '__main__':`` block; anything else is kept."""
    try:
        tree = ast.parse(code)
        last = tree.body[-1]
        if isinstance(last, ast.If) and ast.unparse(last.test).strip() == "__name__ == '__main__'":
            return ast.unparse(tree.body[:-1]) + "\n" + ast.unparse(last.body)
    except Exception:  # unparsable or empty: lcb_runner leaves the code as it is
        pass
    return code


def make_function(code: str, preamble: str) -> str:
    """Top-level imports stay at module level; every other statement goes into one function.

    Unparsable code comes back unchanged (it then fails to compile, as in lcb_runner).
    """
    try:
        tree = ast.parse(code)
        imports = [stmt for stmt in tree.body if isinstance(stmt, (ast.Import, ast.ImportFrom))]
        others = [stmt for stmt in tree.body if not isinstance(stmt, (ast.Import, ast.ImportFrom))]
        function = ast.FunctionDef(
            name=LCB_FUNCTION_NAME,
            args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]),
            body=others,
            decorator_list=[],
            lineno=-1,
        )
        return preamble + "\n" + ast.unparse(imports) + "\n" + ast.unparse(function)
    except Exception:
        return code


def stripped_lines(text: str) -> list[str]:
    """lcb_runner's output normalisation: strip the whole text, split on newlines, strip each line."""
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(token) for token in line.split()]
    except (InvalidOperation, ValueError):
        return None


def lcb_outputs_match(actual: str, expected: str) -> bool:
    """lcb_runner's stdin verdict: same number of lines; each line equal after stripping, or every
    whitespace-separated token of both lines a number and the two Decimal lists equal."""
    actual_lines, expected_lines = stripped_lines(actual), stripped_lines(expected)
    if len(actual_lines) != len(expected_lines):
        return False
    for got, want in zip(actual_lines, expected_lines, strict=False):
        if got == want:
            continue
        got_numbers, want_numbers = _decimals(got), _decimals(want)
        if got_numbers is None or want_numbers is None or got_numbers != want_numbers:
            return False
    return True


def sanitize_humaneval_pro(completion: str) -> str:
    """CodeEval-Pro's santize.py: cut at ``if __name__``, else ``# Test``, else ``# Example ``."""
    if "if __name__" in completion:
        return completion.split("if __name__", 1)[0]
    if "# Test" in completion:
        return completion.split("# Test", 1)[0]
    if "# Example" in completion:  # tested without the space, cut with it: as there
        return completion.split("# Example ", 1)[0]
    return completion


# ---------------------------------------------------------------------------------------------
# Modules loaded before the guard


def imported_modules(code: str) -> list[tuple[str, tuple[str, ...]]]:
    """(module, names taken from it) for every import of a program, in order, anywhere in its
    text: ``import a.b`` -> ("a.b", ()), ``from a import b, c`` -> ("a", ("b", "c")), and
    ``__import__`` / ``import_module`` calls with a literal name; [] when the program does not
    parse (it then fails to compile in the harness, before any import runs)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    found: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, tuple(alias.name for alias in node.names if alias.name != "*")))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
            if called in ("__import__", "import_module") and isinstance(node.args[0].value, str):
                found.append((node.args[0].value, ()))
    return list(dict.fromkeys(found))


def modules_to_preload(code: str, harness: str) -> list[tuple[str, tuple[str, ...]]]:
    """What to import before the guard for this program (see the module docstring)."""
    loaded = LOADED_BEFORE_GUARD[harness]
    chosen: list[tuple[str, tuple[str, ...]]] = []
    third_party = False
    for module, names in imported_modules(code):
        top = module.split(".")[0]
        standard = top in sys.stdlib_module_names
        third_party = third_party or not standard
        if (standard and top not in _NOT_PRELOADED) or top in loaded:
            chosen.append((module, names))
    if third_party and not any(module == "numpy" for module, _ in chosen):
        chosen.insert(0, ("numpy", ()))
    return chosen


def preload(imports: list[tuple[str, tuple[str, ...]]]) -> None:
    """Import each module and take the names imported from it (a name may be a submodule, or an
    attribute its package loads on first access, as ``concurrent.futures.ProcessPoolExecutor``);
    what is missing or fails stays unloaded: it fails the same way when the program imports it."""
    import importlib

    for module, names in imports:
        try:
            loaded = importlib.import_module(module)
        except BaseException:  # noqa: BLE001 - an import may raise anything, SystemExit included
            continue
        for name in names:
            try:
                getattr(loaded, name)
            except AttributeError:
                try:
                    importlib.import_module(f"{module}.{name}")
                except BaseException:  # noqa: BLE001
                    pass
            except BaseException:  # noqa: BLE001
                pass


# ---------------------------------------------------------------------------------------------
# In-memory stdin of lcb_runner's newer harness


class _MockBuffer:
    def __init__(self, inputs: str) -> None:
        self.inputs = inputs.encode("utf-8")

    def read(self, *args: Any) -> bytes:
        return self.inputs

    def readline(self, *args: Any) -> bytes:
        return self.inputs.split(b"\n")[0] + b"\n"


class _MockStdin:
    """read() is the whole input every time; readline() advances; other attributes come from a
    StringIO. No __iter__: special methods are not delegated, so iteration fails, as there."""

    def __init__(self, inputs: str) -> None:
        self.inputs = inputs
        self._stringio = io.StringIO(inputs)
        self.buffer = _MockBuffer(inputs)

    def read(self, *args: Any) -> str:
        return self.inputs

    def readline(self, *args: Any) -> str:
        return self._stringio.readline(*args)

    def readlines(self, *args: Any) -> list[str]:
        return self.inputs.split("\n")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stringio, name)


def _call_with_stdin(method: Any, inputs: Any) -> None:
    from unittest import mock  # imported by main before the guard; only stdin problems need it

    if isinstance(inputs, list):
        inputs = "\n".join(inputs)
    lines = iter(inputs.split("\n"))
    # Entered in lcb_runner's decorator order: the three method patches land on the process's
    # real sys.stdin (still in place then), which code holding `from sys import stdin` reads.
    with (
        mock.patch("sys.stdin.read", lambda *args: inputs),
        mock.patch("sys.stdin.readlines", lambda *args: inputs.split("\n")),
        mock.patch("sys.stdin.readline", lambda *args: next(lines)),
        mock.patch("sys.stdin", _MockStdin(inputs)),
        mock.patch("builtins.open", mock.mock_open(read_data=inputs)),
    ):
        try:
            method()
        except SystemExit:
            pass


# ---------------------------------------------------------------------------------------------
# The harnesses' reliability guard


def reliability_guard(disable_exit: bool) -> None:
    faulthandler.disable()
    if disable_exit:
        builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in (
        "kill",
        "system",
        "putenv",
        "remove",
        "removedirs",
        "rmdir",
        "fchdir",
        "setuid",
        "fork",
        "forkpty",
        "killpg",
        "rename",
        "renames",
        "truncate",
        "replace",
        "unlink",
        "fchmod",
        "fchown",
        "chmod",
        "chown",
        "chroot",
        "lchflags",
        "lchmod",
        "lchown",
        "getcwd",
        "chdir",
    ):
        setattr(os, name, None)
    import shutil
    import subprocess

    shutil.rmtree = None
    shutil.move = None
    shutil.chown = None
    subprocess.Popen = None
    builtins.help = None
    for module in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[module] = None


# ---------------------------------------------------------------------------------------------
# Runs (inside the sandbox)


def _compile(code: str, timeout: float) -> Any:
    _set_alarm(timeout)
    try:
        module = types.ModuleType("tmp_sol", "")
        exec(code, module.__dict__)
        # lcb_runner's test, on the text: it holds for stdin code too, where Solution is not a
        # module attribute (it sits inside wrapped_function), which fails there as well.
        compiled = module.Solution() if "class Solution" in code else module
        assert compiled is not None
    finally:
        _set_alarm(0)
    return compiled


def _failure(error: BaseException) -> dict[str, Any]:
    kind = "timeout" if isinstance(error, TimeoutException) else "error"
    return {"status": kind, "detail": repr(error)[:_RESULT_PREVIEW]}


def run_lcb_stdin(payload: dict, emit: Any) -> None:
    code = make_function(clean_if_name(payload["code"]), payload["preamble"])
    timeout = float(payload["timeout"])
    try:
        method = getattr(_compile(code, timeout), LCB_FUNCTION_NAME, None)
    except Exception as error:
        emit({"compile": _failure(error)})
        return
    if method is None:
        emit({"compile": {"status": "error", "detail": f"no {LCB_FUNCTION_NAME}"}})
        return
    for index, (inputs, expected) in enumerate(zip(payload["inputs"], payload["outputs"], strict=False)):
        captured = io.StringIO()
        captured.close = lambda x: 1  # lcb_runner's Capturing: close() takes an argument there
        saved = sys.stdout
        sys.stdout = captured
        failure = None
        try:
            _set_alarm(timeout)
            _call_with_stdin(method, inputs)
        except Exception as error:
            failure = _failure(error)
        finally:
            _set_alarm(0)
            sys.stdout = saved
        if failure is not None:
            emit({"i": index, **failure})
            return
        output = "\n".join(stripped_lines(captured.getvalue()))
        matched = lcb_outputs_match(output, expected)
        emit({"i": index, "status": "ok", "stdout": output if matched else output[:_RESULT_PREVIEW]})
        if not matched:
            return


def run_lcb_call(payload: dict, emit: Any) -> None:
    code = payload["preamble"] + "\n\n" + payload["code"]
    timeout = float(payload["timeout"])
    try:
        method = getattr(_compile(code, timeout), payload["fn_name"], None)
        if method is None:
            emit({"compile": {"status": "error", "detail": f"no {payload['fn_name']}"}})
            return
        calls = [[json.loads(line) for line in inputs.split("\n")] for inputs in payload["inputs"]]
        outputs = [json.loads(output) for output in payload["outputs"]]
    except Exception as error:
        emit({"compile": _failure(error)})
        return
    for index, (arguments, expected) in enumerate(zip(calls, outputs, strict=False)):
        try:
            _set_alarm(timeout)
            prediction = method(*arguments)
            _set_alarm(0)
            if isinstance(prediction, tuple):
                prediction = list(prediction)
            passed = bool(prediction == expected)
        except Exception as error:
            emit({"i": index, **_failure(error)})
            return
        finally:
            _set_alarm(0)
        emit({"i": index, "status": "ok", "passed": passed, "result": repr(prediction)[:_RESULT_PREVIEW]})
        if not passed:
            return


class _WriteOnlyStringIO(io.StringIO):
    def read(self, *args: Any, **kwargs: Any) -> str:
        raise OSError

    def readline(self, *args: Any, **kwargs: Any) -> str:
        raise OSError

    def readlines(self, *args: Any, **kwargs: Any) -> list[str]:
        raise OSError

    def readable(self, *args: Any, **kwargs: Any) -> bool:
        return False


class _RedirectStdin(contextlib._RedirectStream):  # type: ignore[name-defined]
    _stream = "stdin"


def run_humaneval(payload: dict, emit: Any) -> None:
    stream = _WriteOnlyStringIO()
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream), _RedirectStdin(stream):
            _set_alarm(float(payload["timeout"]))
            try:
                exec(payload["program"], {})
            finally:
                _set_alarm(0)
        emit({"status": "passed"})
    except TimeoutException:
        emit({"status": "timeout", "detail": "timed out"})
    except BaseException as error:
        emit({"status": "failed", "detail": f"failed: {error!r}"[:_RESULT_PREVIEW]})


RUNS = {"lcb_stdin": run_lcb_stdin, "lcb_call": run_lcb_call, "humaneval": run_humaneval}


def main() -> None:
    payload = json.loads(sys.stdin.read())
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    token = payload["token"]

    def emit(record: dict) -> None:
        channel.write(token + json.dumps(record, ensure_ascii=False) + "\n")
        channel.flush()

    # Descriptor 0 becomes empty and 1/2 a sink: what the program writes there is lost, as in the
    # harnesses' worker processes, and cannot mix with the records on the private channel.
    sink = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(sink, fd)
    if payload["kind"] != "humaneval":
        sys.set_int_max_str_digits(LCB_INT_MAX_STR_DIGITS)
    if payload["kind"] == "lcb_stdin":
        import unittest.mock  # noqa: F401 - before the guard, as lcb_runner imports it
    harness = "humaneval" if payload["kind"] == "humaneval" else "lcb"
    preload(modules_to_preload(payload.get("program") or payload.get("code") or "", harness))

    signal.signal(signal.SIGALRM, _on_alarm)
    reliability_guard(disable_exit=payload["kind"] == "humaneval")
    try:
        RUNS[payload["kind"]](payload, emit)
    except BaseException as error:  # what escapes a harness's own handlers fails the program there too
        emit({"abort": {"status": "error", "detail": repr(error)[:_RESULT_PREVIEW]}})


if __name__ == "__main__":
    main()
