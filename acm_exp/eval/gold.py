"""Gold answers per benchmark: a row's raw gold, parsed by the benchmark's ``answer_format``.

- ``plain``: the text, stripped (MATH500, AIME24, College Math);
- ``gsm8k``: the number after the last ``####``, thousands separators removed;
- ``last_boxed``: the last ``\\boxed{}`` of a worked solution (Minerva Math); a solution without one
  falls back to the same extraction as responses ("the answer is", the last math expression);
- ``list_string``: a list rendered as a Python string (OlympiadBench ``final_answer``,
  ``['$\\frac{1}{2}$', '$3$']``), its items joined by ", " with their ``$`` removed;
- ``latex_dollars``: the text without unescaped ``$``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from acm_exp.errors import ConfigError
from acm_exp.eval.grading.extract import last_boxed
from acm_exp.eval.grading.helper import extract_answer


def _gold_plain(raw: str) -> str:
    return raw.strip()


def _gold_gsm8k(raw: str) -> str:
    return raw.split("####")[-1].strip().replace(",", "")


def _gold_last_boxed(raw: str) -> str:
    return last_boxed(raw) or extract_answer(raw) or raw.strip()


def _strip_dollars(text: str) -> str:
    return re.sub(r"(?<!\\)\$", "", text).strip()


def _gold_list_string(raw: str) -> str:
    """OlympiadBench ``final_answer``: a list rendered as a string, e.g. ``['$\\frac{1}{2}$']``."""
    try:
        items = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        items = raw
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, (list, tuple)):
        items = [str(items)]
    return ", ".join(_strip_dollars(str(item)) for item in items)


def _gold_latex_dollars(raw: str) -> str:
    return _strip_dollars(raw)


GOLD_PARSERS: dict[str, Callable[[str], str]] = {
    "plain": _gold_plain,
    "gsm8k": _gold_gsm8k,
    "last_boxed": _gold_last_boxed,
    "list_string": _gold_list_string,
    "latex_dollars": _gold_latex_dollars,
}
ANSWER_FORMATS = tuple(GOLD_PARSERS)


def gold_answer(raw_gold: str, answer_format: str) -> str:
    """The gold answer of one row, parsed by the benchmark's ``answer_format``."""
    parser = GOLD_PARSERS.get(answer_format)
    if parser is None:
        raise ConfigError(f"answer_format={answer_format!r} is unknown; expected one of {ANSWER_FORMATS}")
    return parser(str(raw_gold))
