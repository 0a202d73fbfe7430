"""MBPP-Pro (CodeEval-Pro/mbpp-pro, 378 self-invoking problems), CodeEval-Pro's second benchmark.

Each problem pairs an MBPP problem (``raw_problem`` + ``raw_solution``) with a harder one whose
solution calls it (``new_problem`` + ``new_solution``), tested by ``test_code`` (bare asserts); the
fields and the split (``train``) are HumanEval-Pro's. CodeEval-Pro prompts and grades both
benchmarks alike (``eval/utils.py``: ``map_mbpp_pro_problem`` is ``map_humaneval_pro_problem``;
``eval/harness.py``: ``raw_problem + completion``, then ``"\\n" + test_code``, through HF
``code_eval`` with its 3 s limit), so the family is acm_exp.eval.tasks.humaneval_pro's under
its own name.
"""

from __future__ import annotations

from acm_exp.eval.tasks.base import register
from acm_exp.eval.tasks.humaneval_pro import codeeval_pro_family

MBPP_PRO = register(codeeval_pro_family("mbpp_pro", "MBPP-Pro"))
