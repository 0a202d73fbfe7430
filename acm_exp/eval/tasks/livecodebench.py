"""LiveCodeBench code generation (livecodebench/code_generation_lite): loading, prompt, grading.

Problems come from the hub's jsonl files of a release (or a local copy in the hub schema),
filtered by contest date (``options``: release, start_date, end_date; recorded in every results
row). The prompt is lcb_runner's; grading runs each test in the sandbox (modes: acm_exp.eval.code).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import pickle
import re
import secrets
import zlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from acm_exp.errors import ConfigError
from acm_exp.eval.code import (
    GRADE_NO_TESTS,
    GRADE_PASSED,
    GRADE_WRONG_ANSWER,
    OFFICIAL,
    CodeGrade,
    check_code_grading,
    extract_code,
    last_line,
    missing_record,
    require_fields,
    run_driver,
)
from acm_exp.eval.sandbox import SandboxLimits, run_program
from acm_exp.eval.tasks.base import CodePrompt, Example, Grade, Grader, GradeSettings, TaskFamily, register

logger = logging.getLogger(__name__)

# lcb_runner's per-test time limit.
LIVECODEBENCH_TIMEOUT_S = 6.0
LIVECODEBENCH_OPTIONS = ("release", "start_date", "end_date")

LIVECODEBENCH_HUB_ID = "livecodebench/code_generation_lite"
_LCB_FILES = ("test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl")
# The dataset script's version configs: release_vN is cumulative (files 1..N), vN is file N alone,
# vN_vM files N..M; release_latest is every file.
LIVECODEBENCH_RELEASES: dict[str, tuple[str, ...]] = {
    **{f"release_v{n}": _LCB_FILES[:n] for n in range(1, len(_LCB_FILES) + 1)},
    "release_latest": _LCB_FILES,
    **{f"v{n}": (_LCB_FILES[n - 1],) for n in range(1, len(_LCB_FILES) + 1)},
    **{
        f"v{a}_v{b}": _LCB_FILES[a - 1 : b]
        for a in range(1, len(_LCB_FILES) + 1)
        for b in range(a + 1, len(_LCB_FILES) + 1)
    },
}
_DATA_SUFFIXES = (".jsonl", ".parquet")

LIVECODEBENCH_SYSTEM_MESSAGE = (
    "You are an expert Python programmer. You will be given a question (problem specification) and "
    "will generate a correct Python program that matches the specification and passes all tests."
)
_LCB_FORMAT_WITH_STARTER = (
    "You will use the following starter code to write the solution to the "
    "problem and enclose your code within delimiters."
)
_LCB_FORMAT_STDIN = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly "
    "test on the sample inputs). Enclose your code within delimiters as follows. Ensure that when "
    "the python program runs, it reads the inputs, runs the algorithm and writes output to STDOUT."
)

# lcb_runner's testing_util prepends this to every solution (LeetCode starter code uses List,
# Optional, ... without importing them) and raises the recursion limit.
LIVECODEBENCH_MODULES = (
    "string",
    "re",
    "datetime",
    "collections",
    "heapq",
    "bisect",
    "copy",
    "math",
    "random",
    "statistics",
    "itertools",
    "functools",
    "operator",
    "io",
    "sys",
    "json",
)
LIVECODEBENCH_IMPORTS = "\n".join(
    [f"from {m} import *" for m in (*LIVECODEBENCH_MODULES, "builtins", "typing")]
    + [f"import {m}" for m in LIVECODEBENCH_MODULES]
    + ["sys.setrecursionlimit(50000)", ""]
)


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Loads only pickle's primitive types (str, bytes, numbers, lists, dicts, ...): every
    global lookup is refused, so a crafted pickle cannot reach a callable."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def decode_private_tests(value: Any, question_id: str = "?") -> list[dict]:
    """private_test_cases as a list of {input, output, testtype}: plain JSON, or
    base64(zlib(pickle(json string))) as most rows of the lite release store them."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise ConfigError(
            f"LiveCodeBench {question_id}: private_test_cases of type {type(value).__name__}; expected a string"
        )
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        payload = _NoGlobalsUnpickler(io.BytesIO(zlib.decompress(base64.b64decode(value)))).load()
    except (pickle.UnpicklingError, zlib.error, ValueError, EOFError, TypeError) as error:
        raise ConfigError(
            f"LiveCodeBench {question_id}: private_test_cases is neither JSON nor base64(zlib(pickle(str))): {error}"
        ) from error
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8")
    if not isinstance(payload, str):
        raise ConfigError(
            f"LiveCodeBench {question_id}: decoded private_test_cases is a "
            f"{type(payload).__name__}; expected a JSON string"
        )
    return json.loads(payload)


def _as_json(value: Any, default: Any) -> Any:
    if value is None or value == "":
        return default
    return json.loads(value) if isinstance(value, str) else value


def decode_livecodebench_row(row: Mapping) -> dict[str, Any]:
    """A dataset row with its JSON/pickled fields decoded (idempotent on decoded rows)."""
    question_id = str(row.get("question_id", "?"))
    decoded = dict(row)
    decoded["public_test_cases"] = _as_json(row.get("public_test_cases"), [])
    decoded["private_test_cases"] = (
        decode_private_tests(row["private_test_cases"], question_id)
        if row.get("private_test_cases") not in (None, "")
        else []
    )
    decoded["metadata"] = _as_json(row.get("metadata"), {})
    decoded["starter_code"] = row.get("starter_code") or ""
    if isinstance(row.get("contest_date"), datetime):
        decoded["contest_date"] = row["contest_date"].isoformat()
    return decoded


def _parse_date(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as error:
        raise ConfigError(f"LiveCodeBench {name}={value!r}: expected an ISO date like 2024-08-01") from error


def _contest_datetime(row: Mapping) -> datetime:
    value = row.get("contest_date")
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError as error:
        raise ConfigError(
            f"LiveCodeBench {row.get('question_id', '?')}: contest_date {value!r}; expected an ISO datetime"
        ) from error


def _iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=64):
            yield from batch.to_pylist()
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise ConfigError(f"LiveCodeBench file {path} line {number}: not JSON ({error})") from error


def _release_files(release: str) -> tuple[str, ...]:
    if release not in LIVECODEBENCH_RELEASES:
        raise ConfigError(
            f"LiveCodeBench release {release!r}: expected one of release_v1..release_v6, release_latest, vN or vN_vM"
        )
    return LIVECODEBENCH_RELEASES[release]


def _local_files(directory: Path, release: str) -> list[Path]:
    """The release's files in a local copy: test*.jsonl (or .parquet of the same stem) at the top,
    or the hub's parquet-conversion layout <release>/**/*.parquet, or else every data file."""
    wanted = _release_files(release)
    found: list[Path] = []
    missing: list[str] = []
    for name in wanted:
        stem = Path(name).stem
        candidates = [directory / f"{stem}{suffix}" for suffix in _DATA_SUFFIXES]
        present = [c for c in candidates if c.is_file()]
        (found.append(present[0]) if present else missing.append(name))
    if found and missing:
        raise ConfigError(f"LiveCodeBench {directory}: release {release} needs {list(wanted)}; missing {missing}")
    if found:
        return found
    release_dir = directory / release
    if release_dir.is_dir():
        files = sorted(p for p in release_dir.rglob("*") if p.suffix in _DATA_SUFFIXES)
        if files:
            return files
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in _DATA_SUFFIXES)
    if not files:
        raise ConfigError(
            f"LiveCodeBench {directory}: no .jsonl or .parquet files; expected the release files {list(wanted)}"
        )
    logger.info("LiveCodeBench %s: no release files for %s; loading all %d data files", directory, release, len(files))
    return files


def _hub_files(repo_id: str, release: str) -> list[Path]:
    """Download the release's jsonl files (HF cache; offline mode reuses it). Never runs the
    dataset's loading script, which recent `datasets` releases refuse."""
    from huggingface_hub import HfApi, hf_hub_download

    names = list(_release_files(release))
    if release == "release_latest":  # newer releases add test7.jsonl, ...
        listed = HfApi().list_repo_files(repo_id, repo_type="dataset")
        names = sorted(
            (n for n in listed if re.fullmatch(r"test\d*\.jsonl", n)), key=lambda n: int(re.sub(r"\D", "", n) or 1)
        )
    return [Path(hf_hub_download(repo_id, name, repo_type="dataset")) for name in names]


def _source_files(source: str, release: str) -> list[Path]:
    path = Path(source).expanduser()
    if path.is_dir():
        return _local_files(path, release)
    if path.is_file():
        if path.suffix not in _DATA_SUFFIXES:
            raise ConfigError(f"LiveCodeBench source {source!r}: expected a .jsonl or .parquet file")
        return [path]
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", source) and not source.startswith((".", "/")):
        return _hub_files(source, release)
    raise ConfigError(
        f"LiveCodeBench source {source!r}: no such file or directory; expected a local "
        f"directory/file or a hub id like {LIVECODEBENCH_HUB_ID}"
    )


# The problems the DeepSeek-R1 report evaluated its distilled models on: LiveCodeBench 2024-08 to
# 2025-01 (both ends inclusive, compared as lcb_runner compares them); release_v5 is the release
# of that time (release_v6 only adds Feb-Apr 2025).
LIVECODEBENCH_DEFAULT_RELEASE = "release_v5"
LIVECODEBENCH_DEFAULT_START = "2024-08-01"
LIVECODEBENCH_DEFAULT_END = "2025-01-31"


def livecodebench_window(options: Mapping) -> tuple[str, str | None, str | None]:
    """(release, start_date, end_date) from a benchmark's options: absent keys take the defaults
    above; an explicit null leaves that end of the window open."""
    release = str(options.get("release", LIVECODEBENCH_DEFAULT_RELEASE))
    start = options.get("start_date", LIVECODEBENCH_DEFAULT_START)
    end = options.get("end_date", LIVECODEBENCH_DEFAULT_END)
    return release, None if start is None else str(start), None if end is None else str(end)


def load_livecodebench(
    source: str,
    release: str = LIVECODEBENCH_DEFAULT_RELEASE,
    start_date: str | None = None,
    end_date: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """LiveCodeBench problems with decoded tests and metadata, in file order.

    source: a local directory (test.jsonl ... test6.jsonl or parquet), a single data file, or a hub
    id (livecodebench/code_generation_lite). Problems are kept when start_date <= contest_date <=
    end_date (ISO dates, both inclusive as in lcb_runner); `limit` keeps the first n after that.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"LiveCodeBench limit={limit!r}: expected a non-negative integer or None")
    start, end = _parse_date(start_date, "start_date"), _parse_date(end_date, "end_date")
    problems: list[dict[str, Any]] = []
    for path in _source_files(str(source), release):
        for row in _iter_rows(path):
            if limit is not None and len(problems) >= limit:
                return problems
            contest = _contest_datetime(row)
            if (start is not None and contest < start) or (end is not None and contest > end):
                continue
            problems.append(decode_livecodebench_row(row))
    logger.info("LiveCodeBench %s (%s): %d problems", source, release, len(problems))
    return problems


def _is_functional(example: Mapping) -> bool:
    metadata = _as_json(example.get("metadata"), {})
    return bool(isinstance(metadata, dict) and metadata.get("func_name"))


def livecodebench_prompt(example: Mapping) -> str:
    """lcb_runner's generic user prompt (pair it with LIVECODEBENCH_SYSTEM_MESSAGE if the
    format has a system turn): starter code for functional problems, stdin/stdout otherwise."""
    require_fields(example, ("question_content",), "LiveCodeBench")
    prompt = f"### Question:\n{example['question_content']}\n\n"
    starter = example.get("starter_code") or ""
    if starter:
        prompt += f"### Format: {_LCB_FORMAT_WITH_STARTER}\n```python\n{starter}\n```\n\n"
    else:
        prompt += f"### Format: {_LCB_FORMAT_STDIN}\n```python\n# YOUR CODE HERE\n```\n\n"
    return prompt + "### Answer: (use the provided format with backticks)\n\n"


def stdout_matches(actual: str, expected: str) -> bool:
    """lcb_runner's stdin comparison: line by line after stripping surrounding whitespace
    (leading/trailing empty lines ignored); a differing line still matches when all its tokens
    are numbers equal as Decimals ("2.50" == "2.5"). The one implementation is the sandbox driver's."""
    from acm_exp.eval.harness_driver import lcb_outputs_match

    return lcb_outputs_match(actual, expected)


def _all_tests(example: Mapping) -> list[dict]:
    decoded = decode_livecodebench_row(example)
    return list(decoded["public_test_cases"]) + list(decoded["private_test_cases"])


def _with_output_room(limits: SandboxLimits | None, expected_chars: int) -> SandboxLimits:
    # Some tests legitimately print megabytes; the cap must not fail a correct answer.
    base = limits or SandboxLimits()
    needed = 2 * expected_chars + 64 * 1024
    return dataclasses.replace(base, max_output_bytes=max(base.max_output_bytes, needed))


def _grade_stdin(
    code: str, tests: list[dict], timeout_s: float, limits: SandboxLimits | None, isolation: str | None
) -> CodeGrade:
    program = LIVECODEBENCH_IMPORTS + "\n" + code + "\n"
    for index, test in enumerate(tests):
        expected = str(test.get("output", ""))
        result = run_program(
            program,
            stdin=str(test.get("input", "")),
            timeout_s=timeout_s,
            limits=_with_output_room(limits, len(expected)),
            isolation=isolation,
        )
        where = f"test {index + 1}/{len(tests)}"
        if result.status != "ok":
            return CodeGrade(False, code, result.status, f"{where}: {last_line(result.stderr) or result.status}")
        if not stdout_matches(result.stdout, expected):
            return CodeGrade(False, code, GRADE_WRONG_ANSWER, f"{where}: wrong output")
    return CodeGrade(True, code, GRADE_PASSED, f"{len(tests)} tests passed")


# Runs inside the sandbox after the solution. Reads {"calls", "expected"} from stdin (before the
# solution runs, see _functional_program), calls Solution().<name>(*args) per test under a
# per-test alarm and prints one token-prefixed JSON line per test; it stops at the first result
# that differs (only to save time: the harness re-checks every result itself).
_FUNCTIONAL_DRIVER = """
def __acm_exp_run_tests(token, func_name, per_test_s):
    import contextlib as _contextlib, io as _io, json as _json, signal as _signal, sys as _sys

    class _TestTimeout(BaseException):
        pass

    def _on_alarm(signum, frame):
        raise _TestTimeout()

    def _plain(value):
        if hasattr(value, "tolist"):
            return value.tolist()
        if hasattr(value, "item"):
            return value.item()
        raise TypeError(f"result of type {type(value).__name__} is not JSON data")

    out = _sys.__stdout__
    _signal.signal(_signal.SIGALRM, _on_alarm)
    for index, args in enumerate(__acm_exp_tests["calls"]):
        record = {"i": index}
        try:
            _signal.setitimer(_signal.ITIMER_REAL, per_test_s)
            with _contextlib.redirect_stdout(_io.StringIO()):
                value = getattr(Solution(), func_name)(*args)
            _signal.setitimer(_signal.ITIMER_REAL, 0)
            record["result"] = _json.loads(_json.dumps(value, default=_plain))
        except _TestTimeout:
            record["error"] = "timeout"
        except BaseException as error:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
            record["error"] = repr(error)[:300]
        out.write(token + _json.dumps(record) + "\\n")
        out.flush()
        if "error" in record or record["result"] != __acm_exp_tests["expected"][index]:
            return


__acm_exp_run_tests(@TOKEN@, @FUNC_NAME@, @PER_TEST_S@)
"""


def _functional_program(code: str, func_name: str, token: str, per_test_s: float) -> str:
    # Tests come on stdin and are read before the solution's own top-level code runs.
    reader = (
        "import json as __acm_exp_json, sys as __acm_exp_sys\n"
        "__acm_exp_tests = __acm_exp_json.loads(__acm_exp_sys.stdin.read())\n"
    )
    driver = (
        _FUNCTIONAL_DRIVER.replace("@TOKEN@", repr(token))
        .replace("@FUNC_NAME@", repr(func_name))
        .replace("@PER_TEST_S@", repr(per_test_s))
    )
    return reader + LIVECODEBENCH_IMPORTS + "\n" + code + "\n" + driver


def _normalize(value: Any) -> Any:
    # lcb_runner: "don't penalize model if it produces tuples instead of lists" (JSON has no tuples).
    return json.loads(json.dumps(value))


def _grade_functional(
    code: str, tests: list[dict], func_name: str, timeout_s: float, limits: SandboxLimits | None, isolation: str | None
) -> CodeGrade:
    try:
        calls = [[json.loads(line) for line in str(test["input"]).split("\n")] for test in tests]
        expected = [_normalize(json.loads(str(test["output"]))) for test in tests]
    except (KeyError, json.JSONDecodeError) as error:
        raise ConfigError(f"LiveCodeBench functional tests for {func_name}: not JSON lines ({error})") from error
    token = f"ACM_EXP_RESULT_{secrets.token_hex(8)}:"
    payload = json.dumps({"calls": calls, "expected": expected})
    program = _functional_program(code, func_name, token, timeout_s)
    expected_chars = sum(len(str(test["output"])) for test in tests)
    # The per-test alarm enforces timeout_s per call; the whole run gets every test's budget.
    result = run_program(
        program,
        stdin=payload,
        timeout_s=timeout_s * len(tests) + 2.0,
        limits=_with_output_room(limits, expected_chars),
        isolation=isolation,
    )
    records = {}
    for line in result.stdout.splitlines():
        if line.startswith(token):
            try:
                record = json.loads(line[len(token) :])
                records[int(record["i"])] = record
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
    for index, want in enumerate(expected):
        where = f"test {index + 1}/{len(tests)}"
        record = records.get(index)
        if record is None:
            status = result.status if result.status != "ok" else GRADE_WRONG_ANSWER
            reason = last_line(result.stderr) or "no result (the program ended early)"
            return CodeGrade(False, code, status, f"{where}: {reason}")
        if "error" in record:
            status = "timeout" if record["error"] == "timeout" else "error"
            return CodeGrade(False, code, status, f"{where}: {record['error']}")
        if record.get("result") != want:
            return CodeGrade(False, code, GRADE_WRONG_ANSWER, f"{where}: wrong result")
    return CodeGrade(True, code, GRADE_PASSED, f"{len(tests)} tests passed")


def extract_livecodebench_code(response: str, base_model_style: bool = False) -> str:
    """lcb_runner's extraction: the lines between the last two lines that contain three backticks
    (whatever their tag); "" with fewer than two. Base-model style: the whole output, stripped."""
    if base_model_style:
        return response.strip()
    lines = response.split("\n")
    fences = [index for index, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return ""
    return "\n".join(lines[fences[-2] + 1 : fences[-1]])


def _official_output_room(limits: SandboxLimits | None, expected_chars: int) -> SandboxLimits:
    # Records carry each passing test's output JSON-escaped (a newline takes two characters).
    return _with_output_room(limits, 2 * expected_chars)


def _grade_livecodebench_official(
    code: str,
    tests: list[dict],
    func_name: str | None,
    timeout_s: float,
    limits: SandboxLimits | None,
    isolation: str | None,
) -> CodeGrade:
    inputs = [str(test.get("input", "")) for test in tests]
    outputs = [str(test.get("output", "")) for test in tests]
    payload = {
        "kind": "lcb_call" if func_name else "lcb_stdin",
        "code": code,
        "fn_name": func_name,
        "preamble": LIVECODEBENCH_IMPORTS,
        "timeout": timeout_s,
        "inputs": inputs,
        "outputs": outputs,
    }
    # lcb_runner's global limit on one problem's worker: (timeout + 1) per test, plus 5 s.
    overall_s = (timeout_s + 1.0) * len(tests) + 5.0
    result, records = run_driver(payload, overall_s, _official_output_room(limits, sum(map(len, outputs))), isolation)
    by_test = {record["i"]: record for record in records if isinstance(record.get("i"), int)}
    for record in records:
        for stage in ("compile", "abort"):
            if stage in record:
                return CodeGrade(
                    False, code, record[stage].get("status", "error"), f"{stage}: {record[stage].get('detail', '')}"
                )
    for index, expected in enumerate(outputs):
        where = f"test {index + 1}/{len(tests)}"
        record = by_test.get(index)
        if record is None:
            status, detail = missing_record(result, where)
            return CodeGrade(False, code, status, detail)
        if record.get("status") != "ok":
            return CodeGrade(False, code, record.get("status", "error"), f"{where}: {record.get('detail', '')}")
        # The harness re-checks stdin outputs itself; call results were compared with == in the
        # program's own process, as lcb_runner compares them (objects need not survive a transfer).
        passed = record.get("passed") if func_name else stdout_matches(str(record.get("stdout", "")), expected)
        if not passed:
            return CodeGrade(False, code, GRADE_WRONG_ANSWER, f"{where}: wrong answer")
    return CodeGrade(True, code, GRADE_PASSED, f"{len(tests)} tests passed")


def grade_livecodebench(
    example: Mapping,
    response: str,
    timeout_s: float = LIVECODEBENCH_TIMEOUT_S,
    limits: SandboxLimits | None = None,
    *,
    mode: str = OFFICIAL,
    base_model_style: bool = False,
    isolation: str | None = None,
) -> CodeGrade:
    """Pass when the response's program passes every public and private test.

    `example`: a row as load_livecodebench returns it (or a raw dataset row). `timeout_s` is per
    test, as in lcb_runner. `base_model_style`: the prompt was a completion (base-model) prompt,
    whose whole output is the code (official mode). `isolation`: see acm_exp.eval.sandbox.
    """
    official = check_code_grading(mode) == OFFICIAL
    code = extract_livecodebench_code(response, base_model_style) if official else extract_code(response)
    tests = _all_tests(example)
    if not tests:
        return CodeGrade(False, code, GRADE_NO_TESTS, "the example has no test cases")
    if not code.strip():
        return CodeGrade(False, code, GRADE_WRONG_ANSWER, "no code in the response")
    func_name = str(_as_json(example.get("metadata"), {})["func_name"]) if _is_functional(example) else None
    if official:
        return _grade_livecodebench_official(code, tests, func_name, timeout_s, limits, isolation)
    if func_name:
        return _grade_functional(code, tests, func_name, timeout_s, limits, isolation)
    return _grade_stdin(code, tests, timeout_s, limits, isolation)


def load_livecodebench_rows(cfg: Mapping, path: Path | None) -> list[dict[str, Any]]:
    source = str(path) if path is not None else cfg.get("source")
    if not source:
        raise ConfigError(f"benchmark {cfg['name']}: no LiveCodeBench source; expected a hub id or a local file")
    release, start_date, end_date = livecodebench_window(dict(cfg.get("options") or {}))
    return [dict(row) for row in load_livecodebench(source, release=release, start_date=start_date, end_date=end_date)]


def grade_livecodebench_response(example: Example, response: str, settings: GradeSettings) -> Grade:
    result = grade_livecodebench(
        example.row,
        response,
        timeout_s=settings.timeout_s or LIVECODEBENCH_TIMEOUT_S,
        mode=settings.code_grading,
        isolation=settings.isolation,
    )
    return Grade(result.extracted, bool(result.passed), result.status)


def livecodebench_result_columns(cfg: Mapping) -> dict[str, Any]:
    release, start, end = livecodebench_window(cfg.get("options") or {})
    return {"lcb_release": release, "lcb_start_date": start, "lcb_end_date": end}


LIVECODEBENCH = register(
    TaskFamily(
        "livecodebench",
        load_rows=load_livecodebench_rows,
        options=LIVECODEBENCH_OPTIONS,
        # A local copy is in the hub schema (tests pickled), decoded by the loader.
        checks_local_rows=False,
        grader=Grader(grade_livecodebench_response, runs_code=True),
        code_prompt=CodePrompt(livecodebench_prompt, LIVECODEBENCH_SYSTEM_MESSAGE),
        result_columns=livecodebench_result_columns,
    )
)
