"""Real-shape stand-ins of the paper's models: the real config.json values and tokenizer, random weights.

    python -m acm_exp.stand_in OUT --pair qwen2.5-1.5b [--layers N] [--seed S] [--from-hub]

or ``acm_exp.stand_in.build_stand_in(OUT, "qwen2.5-1.5b", layers=2)``. See ``build`` for the layout,
``acm_exp.model_facts`` for the facts and their sources. Importing this package loads nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from acm_exp.stand_in.build import StandIn, build_stand_in

__all__ = ["StandIn", "build_stand_in"]


def __getattr__(name: str):
    if name in __all__:
        from acm_exp.stand_in import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
