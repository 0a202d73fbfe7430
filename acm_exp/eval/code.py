"""What the code benchmark families (acm_exp.eval.tasks.humaneval_pro, .livecodebench) share:
the grading modes, the grade record, code extraction and the sandboxed harness driver.

Every program a grade needs runs through acm_exp.eval.sandbox; a grade never raises for what the
model wrote. Two grading modes (``eval.code_grading``):

- ``official`` (default): the benchmarks' own harnesses, so pass@1 compares with published
  numbers. LiveCodeBench as lcb_runner grades (code between the last two lines holding three
  backticks, or the whole output for base-model prompts; its stdin wrapping and call-based
  comparison; 6 s per test). HumanEval-Pro as CodeEval-Pro + Hugging Face ``code_eval`` (the
  completion ends at the first three backticks; ``exec`` with ``__name__ != "__main__"``; 3 s for
  the whole program; passed when the raw or the sanitised completion passes). The execution
  itself is acm_exp.eval.harness_driver, run inside the sandbox.
- ``lenient``: this framework's earlier grading (last Python block, prefix de-duplication,
  stdin programs run as scripts, results compared after a JSON round trip).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import acm_exp.eval.harness_driver as harness_driver
from acm_exp.config import CodeGrading
from acm_exp.errors import ConfigError
from acm_exp.eval.sandbox import ProgramResult, SandboxLimits, run_program

GRADE_PASSED = "passed"
GRADE_WRONG_ANSWER = "wrong_answer"
GRADE_NO_TESTS = "no_tests"

OFFICIAL = CodeGrading.official.value
LENIENT = CodeGrading.lenient.value
CODE_GRADING_MODES = CodeGrading.values()


def check_code_grading(mode: str) -> str:
    if mode not in CODE_GRADING_MODES:
        raise ConfigError(f"eval.code_grading={mode!r}; expected one of {CODE_GRADING_MODES}")
    return mode


@dataclass(frozen=True)
class CodeGrade:
    """passed: every test passed. extracted: the code taken from the response.
    status: "passed", "wrong_answer", "no_tests", or the sandbox status of the failing run
    ("error", "timeout", "oom", "output_limit"). detail: one line on why (for logs).
    HumanEval-Pro, official mode: raw_passed / sanitized_passed are the verdicts on the
    completion as written and cut by CodeEval-Pro's sanitiser (passed = either; the sanitised
    run is skipped, None, when the raw completion passed)."""

    passed: bool
    extracted: str
    status: str
    detail: str
    raw_passed: bool | None = None
    sanitized_passed: bool | None = None


@lru_cache(maxsize=1)
def _driver_source() -> str:
    return Path(harness_driver.__file__).read_text(encoding="utf-8")


def run_driver(
    payload: dict[str, Any], timeout_s: float, limits: SandboxLimits | None, isolation: str | None
) -> tuple[ProgramResult, list[dict[str, Any]]]:
    """Run harness_driver on `payload` in the sandbox; its records, in order. The token that
    marks them reaches the program only on stdin, never in its source."""
    token = f"ACM_EXP_RECORD_{secrets.token_hex(8)}:"
    result = run_program(
        _driver_source(),
        stdin=json.dumps({**payload, "token": token}),
        timeout_s=timeout_s,
        limits=limits,
        isolation=isolation,
    )
    records = []
    for line in result.stdout.splitlines():
        if line.startswith(token):
            try:
                records.append(json.loads(line[len(token) :]))
            except json.JSONDecodeError:
                continue
    return result, records


def missing_record(result: ProgramResult, where: str) -> tuple[str, str]:
    """(status, detail) when the driver stopped without a verdict (killed, exited, crashed)."""
    status = result.status if result.status != "ok" else "error"
    return status, f"{where}: no result ({last_line(result.stderr) or status})"


# ---------------------------------------------------------------------------------------------
# Code extraction

_FENCE_LINE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+.\-]*)")
_PYTHON_TAGS = frozenset({"python", "py", "python3", ""})


@dataclass(frozen=True)
class _FencedBlock:
    tag: str
    body: str


def _fenced_blocks(text: str) -> list[_FencedBlock]:
    """Markdown code blocks in order; an unclosed last block runs to the end of the text."""
    blocks: list[_FencedBlock] = []
    tag: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        fence = _FENCE_LINE.match(line)
        if tag is None:
            if fence:
                tag, lines = fence.group(1).lower(), []
            continue
        if fence:
            blocks.append(_FencedBlock(tag, "\n".join(lines)))
            tag = None
            continue
        lines.append(line)
    if tag is not None:
        blocks.append(_FencedBlock(tag, "\n".join(lines)))
    return blocks


def extract_code(response: str, prefix: str | None = None) -> str:
    """The program in a model response.

    `prefix` is a response prefix the model was made to continue (e.g. "```python\\n<stub>\\n");
    it is prepended unless the response already starts with it, and then the first code block
    (the one the prefix opened) is the answer. Without a prefix the last Python code block is the
    answer (reasoning models draft code before the final one). A block missing its closing fence
    runs to the end of the response; a response without any fence is taken as code.
    """
    text = response
    if prefix and not response.startswith(prefix):
        text = prefix + response
    all_blocks = _fenced_blocks(text)
    if not all_blocks:
        return text.strip("\n")
    blocks = [block for block in all_blocks if block.tag in _PYTHON_TAGS]
    if not blocks:  # only blocks in other languages
        return ""
    chosen = blocks[0] if prefix else blocks[-1]
    return chosen.body.strip("\n")


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def require_fields(example: Mapping, fields: tuple[str, ...], benchmark: str) -> None:
    missing = [name for name in fields if not isinstance(example.get(name), str)]
    if missing:
        raise ConfigError(
            f"{benchmark} example {example.get('id', example.get('question_id'))!r}: "
            f"missing text field(s) {missing}; expected {list(fields)}"
        )
