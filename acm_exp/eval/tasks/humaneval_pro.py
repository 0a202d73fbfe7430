"""HumanEval-Pro (CodeEval-Pro/humaneval-pro, 164 self-invoking problems): prompt and grading, shared
with MBPP-Pro (acm_exp.eval.tasks.mbpp_pro), CodeEval-Pro's other benchmark.

Rows come from the local file or the hub (fields id, raw_problem, raw_solution, new_problem,
new_solution, test_code; both benchmarks). The prompt asks for both stubs in one block and opens
the response with the raw problem's code (CodeEval-Pro's harness, ``eval/utils.py``: the same
instruction and response prefix for both); pass@1 runs raw_problem + completion + test_code in
the sandbox. Grading modes: see acm_exp.eval.code.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping

from acm_exp.eval.code import (
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
from acm_exp.eval.harness_driver import sanitize_humaneval_pro
from acm_exp.eval.sandbox import SandboxLimits, run_program
from acm_exp.eval.tasks.base import CodePrompt, Example, Grade, Grader, GradeSettings, TaskFamily, register

# HF code_eval's time limit for the whole program, as CodeEval-Pro's harness calls it.
HUMANEVAL_PRO_TIMEOUT_S = 3.0
# Under ChatML: the math system message would ask for \\boxed{}, which the grader ignores; the
# classic ChatML default keeps the model in its assistant role without that demand.
CODE_SYSTEM_MESSAGE = "You are a helpful assistant."


HUMANEVAL_PRO_INSTRUCTION = (
    "Write a solution of python file to the following problems, the solution of the second problem "
    "requires single or multiple calls to the first solution."
)
_HUMANEVAL_PRO_FIELDS = ("raw_problem", "new_problem", "test_code")
_DEF_NAME = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.M)


def humaneval_pro_prompt(example: Mapping, label: str = "HumanEval-Pro") -> str:
    """The CodeEval-Pro instruction: both stubs in one python block, solve both."""
    require_fields(example, _HUMANEVAL_PRO_FIELDS, label)
    raw, new = example["raw_problem"].strip(), example["new_problem"].strip()
    return f"{HUMANEVAL_PRO_INSTRUCTION}\n```python\n{raw}\n{new}\n```"


def humaneval_pro_response_prefix(example: Mapping, label: str = "HumanEval-Pro") -> str:
    """What CodeEval-Pro makes the model continue: the answer opens with the raw problem."""
    require_fields(example, _HUMANEVAL_PRO_FIELDS, label)
    return f"```python\n{example['raw_problem'].strip()}\n"


def _entry_point(raw_problem: str) -> str | None:
    """The raw problem's function: the last top-level def (earlier ones are given helpers)."""
    names = _DEF_NAME.findall(raw_problem)
    return names[-1] if names else None


def _needs_raw_problem(code: str, raw_problem: str) -> bool:
    """Whether the completion continues the raw stub rather than standing alone: it opens with
    an indented line (the raw function's body), or never defines the raw function."""
    first = next((line for line in code.splitlines() if line.strip()), "")
    if first[:1] in (" ", "\t"):
        return True
    entry = _entry_point(raw_problem)
    return entry is not None and not re.search(rf"^def\s+{re.escape(entry)}\s*\(", code, re.M)


def humaneval_pro_program(example: Mapping, code: str) -> str:
    """Completion + tests, with the raw problem in front of a completion that continues it
    (program = raw_problem + completion + test_code, as CodeEval-Pro runs it)."""
    completion = example["raw_problem"] + code if _needs_raw_problem(code, example["raw_problem"]) else code
    return f"{completion}\n\n{example['test_code']}\n"


def humaneval_pro_completion(response: str, response_prefix: str | None = None) -> str:
    """CodeEval-Pro's completion. With a response prefix (the model continued it): the text before
    the first three backticks anywhere, nothing de-duplicated. Without one (its API path): the
    text after the first "```python", cut the same way."""
    text = response if response_prefix is not None else response.split("```python", 1)[-1]
    index = text.find("```")
    return text if index == -1 else text[:index]


def humaneval_pro_official_program(example: Mapping, completion: str, continued: bool) -> str:
    """What CodeEval-Pro hands to code_eval: raw_problem + completion when the model continued the
    prefix (which opens with the raw problem), else the completion; then "\n" + test_code."""
    head = example["raw_problem"] if continued else ""
    return head + completion + "\n" + example["test_code"]


def _humaneval_official_verdict(
    program: str, timeout_s: float, limits: SandboxLimits | None, isolation: str | None
) -> tuple[bool, str, str]:
    # HF code_eval joins its worker after timeout + 1 s; the extra seconds cover the sandbox's start.
    result, records = run_driver(
        {"kind": "humaneval", "program": program, "timeout": timeout_s}, timeout_s + 3.0, limits, isolation
    )
    if not records:
        status, detail = missing_record(result, "program")
        return False, status, detail
    record = records[-1]
    if record.get("status") == "passed":
        return True, GRADE_PASSED, "all asserts passed"
    detail = str(record.get("detail", ""))
    if record.get("status") == "timeout":
        return False, "timeout", detail
    return False, GRADE_WRONG_ANSWER if "AssertionError" in detail else "error", detail


def _grade_humaneval_pro_official(
    example: Mapping,
    response: str,
    timeout_s: float,
    response_prefix: str | None,
    limits: SandboxLimits | None,
    isolation: str | None,
) -> CodeGrade:
    completion = humaneval_pro_completion(response, response_prefix)
    continued = response_prefix is not None
    raw = _humaneval_official_verdict(
        humaneval_pro_official_program(example, completion, continued), timeout_s, limits, isolation
    )
    sanitized_completion = sanitize_humaneval_pro(completion)
    if sanitized_completion == completion:
        return CodeGrade(raw[0], completion, raw[1], raw[2], raw_passed=raw[0], sanitized_passed=raw[0])
    if raw[0]:  # passed either way: the sanitised run could not change the verdict, so it is skipped
        return CodeGrade(True, completion, raw[1], raw[2], raw_passed=True, sanitized_passed=None)
    sanitized = _humaneval_official_verdict(
        humaneval_pro_official_program(example, sanitized_completion, continued), timeout_s, limits, isolation
    )
    passed, status, detail = sanitized if sanitized[0] else raw
    detail = f"{detail} (raw failed, sanitised {'passed' if sanitized[0] else 'failed'})"
    return CodeGrade(passed, completion, status, detail, raw_passed=False, sanitized_passed=sanitized[0])


def _grade_humaneval_pro_lenient(
    example: Mapping,
    response: str,
    timeout_s: float,
    response_prefix: str | None,
    limits: SandboxLimits | None,
    isolation: str | None,
) -> CodeGrade:
    code = extract_code(response, response_prefix)
    # The tests are bare asserts: a program that exits early (sys.exit, os._exit) would "pass" on
    # exit status alone, so success also needs a line only the end of the tests prints.
    token = f"ACM_EXP_TESTS_DONE_{secrets.token_hex(8)}"
    program = humaneval_pro_program(example, code) + f"print({token!r})\n"
    result = run_program(program, timeout_s=timeout_s, limits=limits, isolation=isolation)
    finished = result.stdout.rstrip().endswith(token)
    if result.ok and finished:
        return CodeGrade(True, code, GRADE_PASSED, "all asserts passed")
    if result.ok:
        return CodeGrade(False, code, GRADE_WRONG_ANSWER, "program exited before the tests finished")
    last = last_line(result.stderr)
    status = GRADE_WRONG_ANSWER if last.startswith("AssertionError") else result.status
    return CodeGrade(False, code, status, last or f"{result.status} (exit {result.returncode})")


def grade_humaneval_pro(
    example: Mapping,
    response: str,
    timeout_s: float = HUMANEVAL_PRO_TIMEOUT_S,
    response_prefix: str | None = None,
    limits: SandboxLimits | None = None,
    *,
    mode: str = OFFICIAL,
    isolation: str | None = None,
    label: str = "HumanEval-Pro",
) -> CodeGrade:
    """Pass when the program runs to its end with every assert holding.

    `response_prefix`: the prefix the model continued, if the prompt used one
    (humaneval_pro_response_prefix). Official mode: the program is raw_problem + completion
    (+ test_code), the completion cut at the first three backticks; `timeout_s` bounds the whole
    program (3 s, code_eval's default). Lenient mode: the prefix is put back in front of the
    response unless repeated, and the first code block is the answer. `isolation`: see
    acm_exp.eval.sandbox (None: $ACM_EXP_SANDBOX, else auto). ``label`` names the benchmark in errors.
    """
    require_fields(example, _HUMANEVAL_PRO_FIELDS, label)
    grade = _grade_humaneval_pro_official if check_code_grading(mode) == OFFICIAL else _grade_humaneval_pro_lenient
    return grade(example, response, timeout_s, response_prefix, limits, isolation)


def codeeval_pro_family(name: str, label: str) -> TaskFamily:
    """A CodeEval-Pro benchmark family (HumanEval-Pro, MBPP-Pro): one instruction, response prefix,
    harness and time limit (CodeEval-Pro runs both through the same ``eval/harness.py`` and HF
    ``code_eval``); ``label`` names the benchmark in errors."""

    def prompt(row: Mapping) -> str:
        return humaneval_pro_prompt(row, label)

    def response_prefix(row: Mapping) -> str:
        return humaneval_pro_response_prefix(row, label)

    def grade(example: Example, response: str, settings: GradeSettings) -> Grade:
        # Every prompt format opens the response with this prefix (acm_exp.eval.prompts): put it back.
        result = grade_humaneval_pro(
            example.row,
            response,
            timeout_s=settings.timeout_s or HUMANEVAL_PRO_TIMEOUT_S,
            response_prefix=response_prefix(example.row),
            mode=settings.code_grading,
            isolation=settings.isolation,
            label=label,
        )
        return Grade(result.extracted, bool(result.passed), result.status)

    return TaskFamily(
        name,
        grader=Grader(grade, runs_code=True),
        # The answer is the code block the prefix opens: its closing fence ends the answer.
        code_prompt=CodePrompt(prompt, CODE_SYSTEM_MESSAGE, response_prefix, stop=("\n```",)),
    )


HUMANEVAL_PRO = register(codeeval_pro_family("humaneval_pro", "HumanEval-Pro"))
# The grader under its earlier name.
grade_humaneval_pro_response = HUMANEVAL_PRO.grader.grade
