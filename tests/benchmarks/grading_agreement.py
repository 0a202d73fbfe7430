"""Agreement of acm_exp's math grader with the public grading suites, case by case.

    .venv/bin/python tests/benchmarks/grading_agreement.py \\
        --math-verify DIR --hendrycks DIR --qwen DIR --nemo DIR --mario DIR --lm-eval DIR \\
        [--site DIR] [--cache FILE] [--numeric precision|qwen] [--show N]

Each DIR is a checkout of the suite's repository (huggingface/Math-Verify, hendrycks/math,
QwenLM/Qwen2.5-Math, NVIDIA/NeMo-Skills, MARIO-Math-Reasoning/MARIO_EVAL,
EleutherAI/lm-evaluation-harness); nothing of them is copied here. The cases are read from the
suites' own tests, statically (``ast``):

- Math-Verify ``tests/*.py``: every parametrized (gold, pred, expected) whose call uses the default
  options (cases of ``precision=``, ``strict=False`` or ``allow_set_relation_comp=True`` test
  switches we do not have and are counted apart); ``pred`` is a whole response: graded by
  ``grade_math``;
- hendrycks ``modeling/math_equivalence_test.py`` and MARIO ``math_evaluation/tests/test_is_equiv.py``:
  every ``assertTrue`` / ``assertFalse`` on the grader, with the values assigned before it;
- NeMo-Skills ``tests/test_math_equal.py``: the correct and incorrect pairs, both ways round;
- Qwen2.5-Math ``evaluation/grader.py`` ``_test_math_equal``: the (commented) pairs it was tried
  on; they have no expected verdict, so Qwen's ``math_equal`` gives it;
- lm-evaluation-harness ``lm_eval/tasks/minerva_math/utils.py``: the rewrites
  ``normalize_final_answer`` documents (shorthand fractions and roots, thousands separators, unit
  words) and the few-shot solutions against their boxed answers, labelled by its ``is_equiv``.

Answer pairs go to ``is_equiv(pred, gold)``, responses to ``grade_math(response, gold)``. Every
reference grader runs in its own subprocess (``--worker``) on every case it can read, so that
the output can say where the suites agree with each other and we do not: cases whose expected
verdict every reference grader that decided it shares, while ours differs. The reference graders
need their own packages (antlr4-python3-runtime 4.11, regex, word2number, timeout-decorator):
``--site`` adds a folder of them to the workers' path; a grader that cannot load is named and
left out. ``--cache`` keeps the reference verdicts between runs (they do not change when ours do).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import operator
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SUITES = ("math-verify", "hendrycks", "qwen", "nemo", "mario", "lm-eval")
CASE_TIMEOUT_S = 10


@dataclass(frozen=True)
class Case:
    suite: str
    origin: str  # file::test (and a note)
    pred: str
    gold: str
    expected: bool | None  # None: labelled by the suite's own grader
    response: bool = False  # pred is a whole response (graded by grade_math)


# ---------------------------------------------------------------------------------------------
# Reading the suites' tests


_OPERATIONS = {ast.Div: operator.truediv, ast.Mult: operator.mul, ast.Add: operator.add, ast.Sub: operator.sub}


def _value(node: ast.AST) -> object:
    """A literal, allowing arithmetic on numbers (NeMo writes ``5 / 2``) and pytest.param(...)."""
    if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "param":
        return tuple(_value(arg) for arg in node.args)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATIONS:
        return _OPERATIONS[type(node.op)](_value(node.left), _value(node.right))
    if isinstance(node, (ast.Tuple, ast.List)):
        return [_value(element) for element in node.elts]
    return ast.literal_eval(node)


def _parametrize(function: ast.FunctionDef) -> tuple[list[str], list] | None:
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", None) == "parametrize":
            names = ast.literal_eval(decorator.args[0])
            names = [name.strip() for name in (names.split(",") if isinstance(names, str) else names)]
            rows = []
            for row in decorator.args[1].elts:
                try:
                    rows.append(_value(row))
                except (ValueError, TypeError, SyntaxError):
                    continue  # not a literal (an f-string, a config object): not a case we can read
            return names, rows
    return None


def _keywords(function: ast.FunctionDef, callee: str) -> dict[str, ast.AST]:
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == callee:
            return {keyword.arg: keyword.value for keyword in node.keywords}
    return {}


def _strip_dollars(text: str) -> str:
    text = text.strip()
    match = re.fullmatch(r"\$+(.*?)\$+", text, re.DOTALL)
    return match.group(1).strip() if match else text


def math_verify_cases(root: Path) -> tuple[list[Case], int]:
    """Default-option cases of Math-Verify's tests, and how many option cases were left out."""
    cases, left_out = [], 0
    defaults = {"precision": 6, "strict": True, "allow_set_relation_comp": False}
    for path in sorted((root / "tests").glob("test_*.py")):
        for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(function, ast.FunctionDef):
                continue
            spec = _parametrize(function)
            if spec is None or "gold" not in spec[0] or "pred" not in spec[0]:
                continue
            names, rows = spec
            label = "expected" if "expected" in names else "result" if "result" in names else None
            if label is None:
                continue
            keywords = _keywords(function, "compare_strings")
            for row in rows:
                values = dict(zip(names, row, strict=False))
                options = {}
                for option, default in defaults.items():
                    node = keywords.get(option)
                    if node is None:
                        continue
                    value = values[node.id] if isinstance(node, ast.Name) else ast.literal_eval(node)
                    if value != default:
                        options[option] = value
                if options:
                    left_out += 1
                    continue
                origin = f"{path.name}::{function.name}"
                cases.append(
                    Case("math-verify", origin, str(values["pred"]), str(values["gold"]), bool(values[label]), True)
                )
    return cases, left_out


def _assert_cases(path: Path, suite: str, gold_first: bool) -> list[Case]:
    """Cases of a unittest file: ``self.assertTrue/False(f(a, b))`` with a and b literals or names
    assigned earlier in the method, including ``for a, b in pairs:`` loops over a literal list."""
    cases: list[Case] = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for method in ast.walk(tree):
        if not isinstance(method, ast.FunctionDef) or not method.name.startswith("test"):
            continue
        _walk_statements(method.body, {}, path, suite, method.name, gold_first, cases)
    return cases


def _walk_statements(body, names: dict, path, suite, test, gold_first, cases) -> None:
    for statement in body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
            try:
                if isinstance(target, ast.Name):
                    names[target.id] = _value(statement.value)
            except (ValueError, TypeError, SyntaxError):
                names.pop(getattr(target, "id", ""), None)
        elif isinstance(statement, ast.For) and isinstance(statement.iter, ast.Name):
            targets = statement.target.elts if isinstance(statement.target, ast.Tuple) else []
            for row in names.get(statement.iter.id, []):
                scope = dict(names)
                scope.update({t.id: value for t, value in zip(targets, row, strict=False)})
                _walk_statements(statement.body, scope, path, suite, test, gold_first, cases)
        elif isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
            call = statement.value
            kind = getattr(call.func, "attr", None)
            if kind not in ("assertTrue", "assertFalse") or not call.args or not isinstance(call.args[0], ast.Call):
                continue
            inner = call.args[0]
            try:
                first, second = (names[a.id] if isinstance(a, ast.Name) else _value(a) for a in inner.args[:2])
            except (KeyError, ValueError, TypeError, SyntaxError):
                continue
            gold, pred = (first, second) if gold_first else (second, first)
            cases.append(Case(suite, f"{path.name}::{test}", str(pred), str(gold), kind == "assertTrue"))


def hendrycks_cases(root: Path) -> list[Case]:
    # is_equiv(test_in, test_out): test_out reads as the reference answer.
    return _assert_cases(root / "modeling" / "math_equivalence_test.py", "hendrycks", gold_first=False)


def mario_cases(root: Path) -> list[Case]:
    # is_equiv(ground_truth, given).
    return _assert_cases(root / "math_evaluation" / "tests" / "test_is_equiv.py", "mario", gold_first=True)


def nemo_cases(root: Path) -> list[Case]:
    cases = []
    tree = ast.parse((root / "tests" / "test_math_equal.py").read_text(encoding="utf-8"))
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef) or (spec := _parametrize(function)) is None:
            continue
        expected = "incorrect" not in function.name
        for gold, pred in spec[1]:
            if gold is None or pred is None:
                continue
            # math_equal(gt, predicted) is asserted both ways round.
            for first, second in ((gold, pred), (pred, gold)):
                cases.append(Case("nemo", f"test_math_equal.py::{function.name}", str(second), str(first), expected))
    return cases


def qwen_cases(root: Path) -> list[Case]:
    source = (root / "evaluation" / "grader.py").read_text(encoding="utf-8")
    body = source[source.index("def _test_math_equal") :]
    cases = []
    for line in body.splitlines():
        text = line.strip().lstrip("#").strip()
        call = re.match(r"print\(math_equal\((.*)\)\)$", text)
        if call:
            try:
                arguments = ast.parse(f"f({call.group(1)})").body[0].value.args
                pred, gold = (ast.literal_eval(a) for a in arguments[:2])
                cases.append(Case("qwen", "grader.py::_test_math_equal", pred, gold, None))
            except (ValueError, SyntaxError):
                pass
    pending: dict[str, str] = {}
    for line in body.splitlines():
        text = line.strip().lstrip("#").strip()
        for part in text.split(", "):
            assignment = re.match(r"(pred|gt)\s*=\s*(.+)$", part.strip())
            if assignment:
                try:
                    pending[assignment.group(1)] = ast.literal_eval(assignment.group(2).strip())
                except (ValueError, SyntaxError):
                    continue
        if {"pred", "gt"} <= pending.keys():
            cases.append(Case("qwen", "grader.py::_test_math_equal", pending["pred"], pending["gt"], None))
            pending = {}
    return list(dict.fromkeys(cases))


def lm_eval_cases(root: Path) -> list[Case]:
    path = root / "lm_eval" / "tasks" / "minerva_math" / "utils.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()
    }
    origin = "minerva_math/utils.py"
    cases = [
        Case("lm-eval", f"{origin}::normalize_final_answer", pred, gold, None)
        for pred, gold in [
            ("\\frac12", "\\frac{1}{2}"),
            ("\\frac{abc}{bef}", "\\frac{abc}{bef}"),
            ("\\sqrt2", "\\sqrt{2}"),
            ("100,000", "100000"),
            ("\\$5", "5"),
            ("5^\\circ", "5"),
            ("\\text{(B)}", "B"),
        ]
    ]
    words = [w for w in constants.get("REMOVED_EXPRESSIONS", []) if re.fullmatch(r"[a-z]{2,}", w)]
    cases += [Case("lm-eval", f"{origin}::REMOVED_EXPRESSIONS", f"12 {word}", "12", None) for word in words]
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = [getattr(k, "value", None) for k in node.keys]
            value = node.values[keys.index("solution")] if "solution" in keys else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                solution = value.value
                boxed = re.findall(r"final answer is \$(.*?)\$\. I hope", solution)
                if boxed:
                    cases.append(Case("lm-eval", f"{origin}::list_fewshot_samples", solution, boxed[-1], None, True))
    return cases


# ---------------------------------------------------------------------------------------------
# Reference graders (each in its own worker process)


def _load_grader(name: str, root: Path):
    """A function (pred, gold, response) -> bool for one reference grader."""
    if name == "math-verify":
        sys.path.insert(0, str(root / "src"))
        from math_verify import parse, verify

        def wrap(text: str) -> str:
            return text if "$" in text or "\\boxed" in text else f"${text}$"

        return lambda pred, gold, response: bool(verify(parse(wrap(gold)), parse(pred if response else wrap(pred))))
    if name == "hendrycks":
        sys.path.insert(0, str(root / "modeling"))
        from math_equivalence import is_equiv

        return lambda pred, gold, response: None if response else bool(is_equiv(pred, gold))
    if name == "qwen":
        sys.path[:0] = [str(root / "evaluation"), str(root / "evaluation" / "latex2sympy")]
        from grader import math_equal
        from parser import extract_answer, strip_string

        def qwen(pred: str, gold: str, response: bool) -> bool:
            answer = extract_answer(pred, "math") if response else strip_string(pred)
            return bool(math_equal(answer, strip_string(gold), timeout=False))

        return qwen
    if name == "nemo":
        import types

        utils = types.ModuleType("nemo_skills.utils")
        utils.get_logger_name = lambda file: "nemo_skills"
        sys.modules.setdefault("nemo_skills", types.ModuleType("nemo_skills"))
        sys.modules["nemo_skills.utils"] = utils
        sys.path.insert(0, str(root / "nemo_skills" / "evaluation"))
        from math_grader import extract_answer, math_equal

        return lambda pred, gold, response: bool(math_equal(gold, extract_answer(pred) if response else pred))
    if name == "mario":
        sys.path[:0] = [str(root)]
        from math_evaluation import is_equiv

        return lambda pred, gold, response: None if response else bool(is_equiv(gold, pred))
    if name == "lm-eval":
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "minerva_utils", root / "lm_eval" / "tasks" / "minerva_math" / "utils.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)

        def lm_eval(pred: str, gold: str, response: bool) -> bool:
            answer = module.get_unnormalized_answer(pred) if response else pred
            return bool(module.is_equiv(module.normalize_final_answer(answer), module.normalize_final_answer(gold)))

        return lm_eval
    raise ValueError(name)


class _CaseTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _CaseTimeout


def worker(name: str, root: Path) -> None:
    """Read [[pred, gold, response], ...] on stdin; write one verdict per line (true/false/null)."""
    import logging

    logging.disable(logging.CRITICAL)
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # graders print freely
    grade = _load_grader(name, root)
    signal.signal(signal.SIGALRM, _on_alarm)
    for line in sys.stdin:
        pred, gold, response = json.loads(line)
        signal.alarm(CASE_TIMEOUT_S)
        try:
            verdict = grade(pred, gold, response)
        except BaseException:  # noqa: BLE001 - a grader failing on a case abstains on it
            verdict = None
        finally:
            signal.alarm(0)
        channel.write(json.dumps(verdict) + "\n")
        channel.flush()


def reference_verdicts(
    name: str, root: Path, cases: list[Case], site: list[str], cache: dict
) -> tuple[list[bool | None], str]:
    """Verdicts of one reference grader on every case (cached), and a note when it did not load."""
    keys = [hashlib.sha1(json.dumps([name, c.pred, c.gold, c.response]).encode()).hexdigest() for c in cases]
    todo = [(key, case) for key, case in zip(keys, cases, strict=True) if key not in cache]
    note = ""
    if todo:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([*site, os.environ.get("PYTHONPATH", "")]))
        process = subprocess.Popen(
            [sys.executable, __file__, "--worker", name, "--root", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(root),
        )
        for key, case in todo:
            try:
                process.stdin.write(json.dumps([case.pred, case.gold, case.response]) + "\n")
                process.stdin.flush()
                line = process.stdout.readline()
            except BrokenPipeError:
                line = ""
            if not line:
                note = (process.stderr.read().strip().splitlines() or ["no output"])[-1][:160]
                break
            cache[key] = json.loads(line)
        process.kill()
        process.wait()
    return [cache.get(key) for key in keys], note


# ---------------------------------------------------------------------------------------------
# Our verdicts and the report


def _gold_answer(text: str) -> str:
    """The answer a Math-Verify gold holds: the text itself when it is one bare answer, else what
    our extraction finds in it (Math-Verify parses gold and prediction alike)."""
    from acm_exp.eval.grading import extract_answer, final_boxes

    stripped = _strip_dollars(text)
    if not re.search(r"\$|\\boxed|\\\[|\\\(|\n", stripped):
        return stripped
    boxes = final_boxes(text)
    if len(boxes) > 1:
        return ", ".join(boxes)
    return extract_answer(text) or stripped


def our_verdicts(cases: list[Case], numeric: str) -> list[bool]:
    from acm_exp.eval.grading import grade_math, is_equiv

    verdicts = []
    for case in cases:
        if case.response:
            verdicts.append(grade_math(case.pred, _gold_answer(case.gold), numeric=numeric)[1])
        else:
            verdicts.append(is_equiv(case.pred, case.gold, numeric=numeric))
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for suite in SUITES:
        parser.add_argument(f"--{suite}", type=Path, help=f"checkout of the {suite} repository")
    parser.add_argument("--site", action="append", default=[], help="folder of the reference graders' packages")
    parser.add_argument("--cache", type=Path, help="JSON file keeping the reference verdicts between runs")
    parser.add_argument("--numeric", default="precision", choices=["precision", "qwen"])
    parser.add_argument("--show", type=int, default=40, help="how many disagreements to list")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.root)
        return
    roots = {suite: getattr(args, suite.replace("-", "_")) for suite in SUITES}
    readers = {
        "math-verify": lambda root: math_verify_cases(root)[0],
        "hendrycks": hendrycks_cases,
        "qwen": qwen_cases,
        "nemo": nemo_cases,
        "mario": mario_cases,
        "lm-eval": lm_eval_cases,
    }
    cases: list[Case] = []
    for suite, root in roots.items():
        if root is None:
            print(f"{suite}: no checkout given, left out")
            continue
        cases += readers[suite](root)
    if roots["math-verify"] is not None:
        print(f"math-verify: {math_verify_cases(roots['math-verify'])[1]} cases of non-default options left out")

    cache = json.loads(args.cache.read_text()) if args.cache and args.cache.exists() else {}
    references: dict[str, list[bool | None]] = {}
    for name, root in roots.items():
        if root is None:
            continue
        started = time.perf_counter()
        references[name], note = reference_verdicts(name, root, cases, args.site, cache)
        decided = sum(v is not None for v in references[name])
        print(
            f"reference grader {name:12s} decided {decided:4d}/{len(cases)} cases "
            f"({time.perf_counter() - started:.0f} s)" + (f"; stopped: {note}" if note else "")
        )
    if args.cache:
        args.cache.write_text(json.dumps(cache))

    started = time.perf_counter()
    ours = our_verdicts(cases, args.numeric)
    print(f"ours: {len(cases)} cases graded in {time.perf_counter() - started:.1f} s (numeric={args.numeric})\n")

    labels = []
    for index, case in enumerate(cases):
        labels.append(
            case.expected if case.expected is not None else references.get(case.suite, [None] * len(cases))[index]
        )

    print(
        f"{'suite':12s} {'cases':>6s} {'ours':>6s} {'agree':>7s}  {'math-verify alone':>17s}  "
        f"{'misses: all':>11s} {'most':>5s}"
    )
    totals = Counter()
    unanimous: list[int] = []
    majority: list[int] = []
    for suite in SUITES:
        rows = [i for i, case in enumerate(cases) if case.suite == suite and labels[i] is not None]
        if not rows:
            continue
        agree = sum(ours[i] == labels[i] for i in rows)
        alone = sum(references.get("math-verify", [None] * len(cases))[i] == labels[i] for i in rows)
        counts = Counter()
        for i in rows:
            others = [references[name][i] for name in references if name != suite and references[name][i] is not None]
            if ours[i] == labels[i] or not others:
                continue
            if all(v == labels[i] for v in others):
                unanimous.append(i)
                counts["all"] += 1
            elif 2 * sum(v == labels[i] for v in others) > len(others):
                majority.append(i)
                counts["most"] += 1
        totals.update(cases=len(rows), agree=agree, alone=alone, **counts)
        print(
            f"{suite:12s} {len(rows):6d} {agree:6d} {100 * agree / len(rows):6.1f}%  {100 * alone / len(rows):16.1f}%  "
            f"{counts['all']:11d} {counts['most']:5d}"
        )
    print(
        f"{'all':12s} {totals['cases']:6d} {totals['agree']:6d} {100 * totals['agree'] / totals['cases']:6.1f}%  "
        f"{100 * totals['alone'] / totals['cases']:16.1f}%  {totals['all']:11d} {totals['most']:5d}"
    )

    def show(title: str, indices: list[int]) -> None:
        print(f"\n{title}: {len(indices)}")
        for i in indices[: args.show]:
            case = cases[i]
            verdicts = " ".join(f"{name}={references[name][i]}" for name in references if name != case.suite)
            print(
                f"  [{case.suite}] expected {labels[i]}, ours {ours[i]}: "
                f"pred={case.pred[-90:]!r} gold={case.gold[:70]!r}"
            )
            print(f"      others: {verdicts}")

    show("where the suites agree with each other and we do not (every other grader gives the label)", unanimous)
    show("where most other graders give the label and we do not", majority)
    rest = [i for i in range(len(cases)) if labels[i] is not None and ours[i] != labels[i]]
    show(
        "the other disagreements (the suites disagree among themselves there)",
        [i for i in rest if i not in unanimous + majority],
    )


if __name__ == "__main__":
    main()
