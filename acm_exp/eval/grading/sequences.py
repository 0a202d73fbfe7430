"""Step 3b of grading: answers with several parts, element by element.

Tuples and intervals compare in order, brackets included (``(1,2]`` is not ``(1,2)``); sets
(``\\{1,2\\}``), bare lists (any separator: ``,``, ``;``, ``\\quad``, "and", "or") and unions
compare as sets: a list that repeats an element is the set it lists, unless the gold itself
repeats one (roots with multiplicity), then as multisets. A bare list against a tuple is that
tuple without its parentheses; ``p=5, q=2`` is the tuple ``(5,2)``; ``1 \\pm \\sqrt{2}`` is two values.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from acm_exp.eval.grading.normalize import compact, normalize, split_label

_BRACKETS = {"(": ")", "[": "]", "\\{": "\\}"}
# What separates the items of a list answer ("1, 2", "1; 2", "1 \quad 2", "1 and 2", "1 or 2").
_LIST_SEPARATORS = (",", ";", "\\qquad", "\\quad", "and", "or")
# Items of a tuple or an interval: "(0;-2;6)" is "(0,-2,6)".
ITEM_SEPARATORS = (",", ";")


def _separator_at(text: str, index: int, separators: tuple[str, ...]) -> str | None:
    """The separator that starts at ``index``; words and commands only as whole words."""
    for separator in separators:
        if not text.startswith(separator, index):
            continue
        if separator[-1].isalpha():
            after = index + len(separator)
            if after < len(text) and text[after].isalpha():
                continue
            if separator[0].isalpha() and index > 0 and (text[index - 1].isalpha() or text[index - 1] == "\\"):
                continue
        return separator
    return None


def split_top_level(text: str, separators: str | tuple[str, ...] = ",") -> list[str]:
    """Split at separators outside (), [], {} and \\{ \\}."""
    if isinstance(separators, str):
        separators = (separators,)
    parts: list[str] = []
    depth = 0
    start = 0
    index = 0
    while index < len(text):
        separator = _separator_at(text, index, separators) if depth == 0 else None
        if separator is not None:
            parts.append(text[start:index])
            start = index + len(separator)
            index = start
            continue
        if text.startswith("\\{", index) or text.startswith("\\}", index):
            depth += 1 if text[index + 1] == "{" else -1
            index += 2
            continue
        if text[index] == "\\":
            index += 2 if index + 1 < len(text) and not text[index + 1].isalpha() else 1
            continue
        char = text[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        index += 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


def list_items(text: str) -> list[str]:
    """Items of a bare list; empty items (a trailing "and") dropped.

    When semicolons separate the items, commas separate the parts of one item: ``p=5,q=2;p=7,q=2``
    lists the solutions (5,2) and (7,2).
    """
    if len(split_top_level(text, ";")) > 1:
        items = split_top_level(text, tuple(sep for sep in _LIST_SEPARATORS if sep != ","))
        return [as_tuple(item) for item in items if item]
    return [item for item in split_top_level(text, _LIST_SEPARATORS) if item]


def as_tuple(item: str) -> str:
    """``p=5, q=2`` -> ``(5,2)``: an item whose comma-separated parts are all labelled values."""
    parts = split_top_level(item, ",")
    if len(parts) < 2:
        return item
    values = [split_label(part) for part in parts]
    if any(label is None for label, _ in values):
        return item
    return "(" + ",".join(value for _, value in values) + ")"


def bracketed(text: str) -> tuple[str, str, str] | None:
    """(open, inner, close) when the whole text is one bracketed group, e.g. ``(1, 2]``."""
    for opening in _BRACKETS:
        if not text.startswith(opening):
            continue
        for closing in _BRACKETS.values():
            if not text.endswith(closing) or len(text) < len(opening) + len(closing):
                continue
            inner = text[len(opening) : len(text) - len(closing)]
            # "(1)(2)" is not one group: the inner part must itself be balanced.
            if _balanced(inner):
                return opening, inner, closing
    return None


def _balanced(text: str) -> bool:
    depth = 0
    index = 0
    while index < len(text):
        if text.startswith("\\{", index) or text.startswith("\\}", index):
            depth += 1 if text[index + 1] == "{" else -1
            index += 2
        else:
            if text[index] == "\\":
                index += 2 if index + 1 < len(text) and not text[index + 1].isalpha() else 1
                continue
            depth += 1 if text[index] in "([{" else -1 if text[index] in ")]}" else 0
            index += 1
        if depth < 0:
            return False
    return depth == 0


def same_set(pred_items: list[str], gold_items: list[str], equal: Callable[[str, str], bool]) -> bool:
    """Every predicted item is some gold item and every gold item some predicted one: a list
    that repeats an element (``(3,17), (3,17), (17,3)``) is the set it lists. When the gold itself
    repeats an element (roots with multiplicity, ``1, 1, 2``), the counts must agree as well."""
    gold_keys = [compact(normalize(item)) for item in gold_items]
    if len(set(gold_keys)) < len(gold_keys):
        return _same_multiset(pred_items, gold_items, equal)
    return all(any(equal(p, g) for g in gold_items) for p in pred_items) and all(
        any(equal(p, g) for p in pred_items) for g in gold_items
    )


def _same_multiset(pred_items: list[str], gold_items: list[str], equal: Callable[[str, str], bool]) -> bool:
    remaining = list(gold_items)
    for item in pred_items:
        match = next((index for index, gold in enumerate(remaining) if equal(item, gold)), None)
        if match is None:
            return False
        remaining.pop(match)
    return not remaining


def sequences_equal(
    pred: str, gold: str, equal: Callable[[str, str], bool], unordered_equal: Callable[[str, str], bool] | None = None
) -> bool | None:
    """Element-wise comparison of tuples / intervals (ordered) and sets / bare lists / unions
    (unordered, as sets); None when neither answer is such a collection.

    ``unordered_equal`` compares the elements of unordered collections (matching them costs up to
    2 n^2 comparisons, so a caller may pass a cheaper test there); defaults to ``equal``.
    """
    unordered_equal = unordered_equal or equal
    pred_union, gold_union = split_top_level(pred, "\\cup"), split_top_level(gold, "\\cup")
    if len(pred_union) > 1 or len(gold_union) > 1:
        if len(pred_union) != len(gold_union):
            return False
        return same_set(
            pred_union,
            gold_union,
            lambda p, g: bool(sequences_equal(p, g, equal, unordered_equal)) or unordered_equal(p, g),
        )
    pred_group, gold_group = bracketed(pred), bracketed(gold)
    if pred_group and gold_group:
        if pred_group[0] == "\\{" and gold_group[0] == "\\{":
            return same_set(_set_items(pred, pred_group), _set_items(gold, gold_group), unordered_equal)
        if pred_group[0] != gold_group[0] or pred_group[2] != gold_group[2]:
            return False
        pred_items = split_top_level(pred_group[1], ITEM_SEPARATORS)
        gold_items = split_top_level(gold_group[1], ITEM_SEPARATORS)
        if len(pred_items) == 1 and len(gold_items) == 1:
            # "(x+1)" is a parenthesized expression, not a 1-tuple.
            return None
        if len(pred_items) != len(gold_items):
            return False
        return all(equal(p, g) for p, g in zip(pred_items, gold_items, strict=False))
    # Bare lists ("1, 3, 5", "1 and 3") and a set spelled \{1, 3, 5\} on one side only: sets.
    pred_items = _set_items(pred, pred_group)
    gold_items = _set_items(gold, gold_group)
    if len(pred_items) == 1 and len(gold_items) == 1:
        return None
    # A bare list against a tuple: the same sequence without its parentheses ("1, 3" is (1,3)).
    for group, items, other_items in ((gold_group, pred_items, gold_items), (pred_group, gold_items, pred_items)):
        if group and group[0] == "(" and len(other_items) == 1:
            tuple_items = split_top_level(group[1], ITEM_SEPARATORS)
            if len(tuple_items) == len(items) > 1:
                pairs = (
                    zip(items, tuple_items, strict=False)
                    if group is gold_group
                    else zip(tuple_items, items, strict=False)
                )
                return all(equal(p, g) for p, g in pairs)
    return same_set(pred_items, gold_items, unordered_equal)


def _set_items(text: str, group: tuple[str, str, str] | None) -> list[str]:
    items = list_items(group[1]) if group and group[0] == "\\{" else list_items(text)
    return [expanded for item in items for expanded in _expand_plus_minus(item)]


def _expand_plus_minus(item: str) -> list[str]:
    """``1 \\pm \\sqrt{19}`` is the two values ``1 + \\sqrt{19}`` and ``1 - \\sqrt{19}``."""
    if len(re.findall(r"\\pm(?![a-zA-Z])", item)) != 1:
        return [item]
    return [re.sub(r"\\pm(?![a-zA-Z])", sign, item) for sign in ("+", "-")]


def item_count(answer: str) -> int:
    """How many items an answer lists (a set counts its elements); 1 for a single value."""
    group = bracketed(answer)
    inner = len(list_items(group[1])) if group and group[0] == "\\{" else 1
    return max(len(list_items(answer)), inner)
