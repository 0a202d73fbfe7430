"""Step 4 of grading, the mechanism: calls into the grading helper process, with a time limit.

sympy cannot be stopped from inside, in any thread, so every public grading call runs in a helper
process that is killed after ``GRADE_TIME_LIMIT_S`` (acm_exp.eval.bounded); past the limit the
call gives its fallback (a cheap extraction, and "wrong"). The helper serves the functions
``acm_exp.eval.grading`` lists in ``BOUNDED_FUNCTIONS``, by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from acm_exp.eval.grading.extract import cheap_extraction

log = logging.getLogger(__name__)

# The module whose BOUNDED_FUNCTIONS the helper process serves.
SERVED_MODULE = "acm_exp.eval.grading"
# Time limit of one public grading call (extraction, sympy and math-verify included), in seconds.
# A helper restarted after a kill takes about a second more to start, inside a 5 s budget per case.
GRADE_TIME_LIMIT_S = 3.5


def call_in_helper(name: str, args: list, fallback: Callable[[], object], time_limit_s: float) -> object:
    """``name`` run in the helper process under ``time_limit_s``; ``fallback()`` past the limit."""
    from acm_exp.eval.bounded import TimeLimitExceeded, call_bounded

    try:
        return call_bounded(SERVED_MODULE, name, args, time_limit_s=time_limit_s)
    except TimeLimitExceeded:
        log.warning("grading %s took more than %s s; counted as wrong", name, time_limit_s)
        return fallback()
    except Exception:  # noqa: BLE001 - grading must never crash an evaluation run
        log.debug("bounded grading failed", exc_info=True)
        return fallback()


def extract_answer(text: str, time_limit_s: float = GRADE_TIME_LIMIT_S) -> str | None:
    """The final answer of a response (acm_exp.eval.grading.extract), found in the helper process
    within ``time_limit_s``, else by the cheap extraction; None when there is no answer."""
    if not isinstance(text, str) or not text:
        return None
    return call_in_helper("extract_answer", [text], lambda: cheap_extraction(text), time_limit_s)
