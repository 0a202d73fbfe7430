"""Step 1 of grading: find the final answer in a response.

The last ``\\boxed{...}`` / ``\\fbox{...}`` (braces matched), else "the answer is ...", else the last
LaTeX or math expression as math-verify's ``parse`` finds it; None when there is no answer. A
"the answer is" sentence after the last box wins over the box: a reader takes the answer stated
last. ``final_boxes`` returns the final run of boxes that together form one answer
(``\\boxed{1}, \\boxed{2}``), which grading compares as one list when the gold has several parts.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_ANSWER_IS = re.compile(r"the\s+(?:final\s+)?answer\s+is\s*:?\s*", re.IGNORECASE)
# The sentence ends at a line break, or at a period followed by a space or the end of the text
# (a period between digits is a decimal point).
_SENTENCE_END = re.compile(r"\n|\.(?=\s|$)")
# Longer responses are cut to their end before math-verify reads them: its regexes over
# megabytes of degenerate output take seconds.
_MAX_RESPONSE_CHARS = 200_000


def unescaped_braces(text: str, start: int = 0):
    """(index, "{" or "}") of every brace from ``start`` on, skipping escapes (``\\{``) and other
    control sequences, as TeX does."""
    index = start
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char in "{}":
            yield index, char
        index += 1


def braced_group(text: str, open_index: int) -> tuple[str, int] | None:
    """The content of the group opening at text[open_index] == "{" and the index after it; None
    when the group never closes (a truncated response)."""
    depth = 0
    for index, char in unescaped_braces(text, open_index):
        depth += 1 if char == "{" else -1
        if depth == 0:
            return text[open_index + 1 : index], index + 1
    return None


def balanced_braces(text: str) -> bool:
    """Whether every brace of ``text`` (escapes skipped) has its partner."""
    return braced_group("{" + text + "}", 0) == (text, len(text) + 2)


def _brace_pairs(text: str) -> dict[int, int]:
    """The index of the matching "}" of every "{" that has one, in one pass (skipping escapes).

    One pass, not one scan per box: degenerate responses repeat "\\boxed{" thousands of times.
    """
    pairs: dict[int, int] = {}
    open_indices: list[int] = []
    for index, char in unescaped_braces(text):
        if char == "{":
            open_indices.append(index)
        elif open_indices:
            pairs[open_indices.pop()] = index
    return pairs


def _box_content(text: str, start: int, pairs: dict[int, int]) -> tuple[str, int] | None:
    """The argument of the box command that ends at ``start`` (a braced group or a bare token) and
    the index after it."""
    index = start
    while index < len(text) and text[index] in " \t":
        index += 1
    if index < len(text) and text[index] == "{":
        close = pairs.get(index)
        return (text[index + 1 : close].strip(), close + 1) if close is not None else None
    if index == start:
        # "\\boxedx" is another command name, not a box.
        return None
    match = re.match(r"[^\s$]+", text[index:])
    return (match.group(0).strip(), index + match.end()) if match else None


def boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every complete, non-empty ``\\boxed{}`` / ``\\fbox{}`` (or ``\\boxed x``)."""
    starts = [(match.start(), match.end()) for match in _BOX_START.finditer(text)]
    pairs = _brace_pairs(text) if starts else {}
    found = []
    for start, content_start in starts:
        argument = _box_content(text, content_start, pairs)
        if argument and argument[0]:
            found.append((start, argument[1], argument[0]))
    return found


def last_boxed(text: str) -> str | None:
    """The content of the last complete, non-empty ``\\boxed{}`` / ``\\fbox{}`` (or ``\\boxed x``)."""
    found = boxes(text)
    return found[-1][2] if found else None


# Text between two boxes of one answer: separators, connectives, math delimiters and a label
# ("\\boxed{1} and \\boxed{2}", "x = \\boxed{2} or x = \\boxed{3}"), nothing else.
_BOX_GAP_MAX_CHARS = 80
_BOX_GAP = re.compile(
    r"(?:[\s,;.$&]|\\[()\[\]]|\\\\|\\q?quad(?![a-zA-Z])|\\text\{\s*(?:and|or)\s*\}|(?<![a-zA-Z])(?:and|or)(?![a-zA-Z])"
    r"|(?<![a-zA-Z])[a-zA-Z](?:_\{?\w+\}?)?\s*=)*"
)


# Or words that name the parts, joined by "and", within one sentence (no digit, no period):
# "\\boxed{1} papers and \\boxed{2} bins", "\\boxed{(3,3)} \\text{ for part (a) and } \\boxed{(1,1)}".
# (A word is taken whole, so that the pattern never backtracks inside it.)
_WORDY_BOX_GAP = re.compile(
    r"(?:[\s,;:$&]|\\[()\[\]]|\\q?quad(?![a-zA-Z])|\\text\{[^{}\d.]*\}|[a-zA-Z]+(?![a-zA-Z])|\([a-zA-Z]\))*"
)
_AND = re.compile(r"(?<![a-zA-Z])and(?![a-zA-Z])")


def _one_answer_gap(gap: str) -> bool:
    if len(gap) > _BOX_GAP_MAX_CHARS:
        return False
    return bool(_BOX_GAP.fullmatch(gap) or (_WORDY_BOX_GAP.fullmatch(gap) and _AND.search(gap)))


def final_boxes(text: str) -> list[str]:
    """The contents of the final run of boxes that together form the answer: boxes separated only
    by separators or "and"/"or" (``\\boxed{(2,2)} and \\boxed{(6,2)}``), or by words naming the
    parts joined by "and" (``\\boxed{1} papers and \\boxed{2} bins``); repeats dropped."""
    found = boxes(text)
    if not found:
        return []
    run = [found[-1]]
    for box in reversed(found[:-1]):
        if not _one_answer_gap(text[box[1] : run[0][0]]):
            break
        run.insert(0, box)
    return list(dict.fromkeys(content for _, _, content in run))


def _answer_is(text: str) -> str | None:
    """What follows the last "the answer is", up to the end of its sentence or line."""
    matches = list(_ANSWER_IS.finditer(text))
    for match in reversed(matches):
        rest = text[match.end() :]
        end = _SENTENCE_END.search(rest)
        answer = _unwrapped((rest[: end.start()] if end else rest).strip().rstrip(".").strip())
        if answer:
            return answer
    return None


# Quotes (also escaped: \") and math delimiters around a whole answer are punctuation
# ('is "$12$ and $13$".', 'is \\((-6, 10)\\).').
_WRAPPERS = (('\\"', '\\"'), ('"', '"'), ("'", "'"), ("\\(", "\\)"), ("\\[", "\\]"))


def _unwrapped(answer: str) -> str:
    previous = None
    while answer != previous:
        previous = answer
        for opening, closing in _WRAPPERS:
            if answer.startswith(opening) and answer.endswith(closing) and len(answer) >= len(opening + closing):
                answer = answer[len(opening) : len(answer) - len(closing)].strip()
        answer = answer.strip("\"'").strip()
    return answer


def _last_math_expression(text: str) -> str | None:
    """The answer math-verify's ``parse`` finds in free text: the last LaTeX expression or number
    (``\\frac{10}{9}``, ``1 000``, ``-[0,1)``), as it matched it; None when there is none (a digit
    inside a word is no answer)."""
    from math_verify import parse

    parsed = parse(text, extraction_mode="first_match", parsing_timeout=None)
    matched = next((item for item in reversed(parsed) if isinstance(item, str)), None)
    return matched.strip() if matched and matched.strip() else None


def _final_statement(text: str) -> str | None:
    """The last box, or "the answer is ..." when it comes after the last box (a reader takes the
    answer stated last: "... \\boxed{255} ... The final answer is $10,455$")."""
    found = boxes(text)
    answer_is = list(_ANSWER_IS.finditer(text))
    if found and (not answer_is or answer_is[-1].start() < found[-1][1]):
        return found[-1][2]
    return _answer_is(text) or (found[-1][2] if found else None)


def cheap_extraction(text: str) -> str | None:
    """Extraction without sympy: the last box or "the answer is", whichever comes last."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return _final_statement(text)
    except Exception:  # noqa: BLE001 - grading must never crash an evaluation run
        log.debug("answer extraction failed", exc_info=True)
        return None


def extract_answer_unbounded(text: str) -> str | None:
    """``extract_answer`` in this process, without a time limit (the helper process runs this)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        if len(text) > _MAX_RESPONSE_CHARS:
            text = text[-_MAX_RESPONSE_CHARS:]
        return _final_statement(text) or _last_math_expression(text)
    except Exception:  # noqa: BLE001 - grading must never crash an evaluation run
        log.debug("answer extraction failed", exc_info=True)
        return None
