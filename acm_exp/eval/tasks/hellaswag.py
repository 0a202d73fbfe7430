"""HellaSwag (Zellers et al. 2019): commonsense sentence completion, four endings, one right.

Scored as lm-evaluation-harness scores its ``hellaswag`` task (``lm_eval/tasks/hellaswag``: the
YAML and ``utils.py``), zero-shot, by log-likelihood (acm_exp.eval.loglikelihood):

- context: ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``;
- choices: ``preprocess(ending)`` for each of ``endings``, each scored as the continuation
  ``" " + choice`` (the harness's target delimiter);
- gold: ``int(label)``;
- ``preprocess``: strip, " [title]" -> ". ", drop every ``[...]`` (WikiHow artifacts), "  " -> " ".

``accuracy`` is the harness's ``acc`` (the choice of highest log-likelihood) and ``accuracy_norm``
its ``acc_norm`` (highest log-likelihood per character of the choice). Rows: the hub dataset
``Rowan/hellaswag``, split ``validation`` (10,042 rows; the test split has no labels), columns
``ind``, ``activity_label``, ``ctx``, ``ctx_a``, ``ctx_b``, ``endings``, ``label``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from acm_exp.errors import ConfigError
from acm_exp.eval.tasks.base import ChoiceQuestion, Example, TaskFamily, register

HELLASWAG_TEXT_FIELDS = ("activity_label", "ctx_a", "ctx_b")
HELLASWAG_FIELDS = (*HELLASWAG_TEXT_FIELDS, "endings", "label")


def preprocess(text: str) -> str:
    """lm-evaluation-harness's hellaswag ``preprocess``: the WikiHow bracket artifacts removed."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_context(row: Mapping) -> str:
    return preprocess(row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize())


def hellaswag_question(example: Example) -> ChoiceQuestion:
    """The harness's query, choices and gold of one row; a ConfigError names what the row lacks."""
    row = example.row
    missing = [name for name in HELLASWAG_TEXT_FIELDS if not isinstance(row.get(name), str)]
    if missing:
        raise ConfigError(f"HellaSwag row has no text in {missing}; expected the columns {HELLASWAG_FIELDS}")
    endings = row.get("endings")
    # A list from the hub or JSON, an array from a parquet file.
    if isinstance(endings, (str, bytes)) or not isinstance(endings, Iterable) or len(list(endings)) < 2:
        raise ConfigError(f"HellaSwag endings {endings!r}; expected a list of at least two endings")
    endings = [str(ending) for ending in endings]
    return ChoiceQuestion(
        context=hellaswag_context(row),
        choices=tuple(preprocess(ending) for ending in endings),
        gold=_label(example.gold, len(endings)),
    )


def _label(gold: str | None, choices: int) -> int:
    text = (gold or "").strip()
    if not re.fullmatch(r"\d+", text) or int(text) >= choices:
        raise ConfigError(f"HellaSwag label {gold!r}; expected an index 0..{choices - 1} of the endings")
    return int(text)


HELLASWAG = register(TaskFamily("hellaswag", choice_question=hellaswag_question))
