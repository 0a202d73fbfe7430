"""acm_exp: Activation-Guided Consensus Merging and long-to-short merging, from merge to paper figures.

The Python API (acm_exp.api) does what ``python -m acm_exp`` does, from plain Python values, with
the CLI's validation, caches and outputs:

- ``select_calibration(source="s1k", **settings) -> Calibration``: the calibration texts and rows.
- ``acm_coefficients(base, finetuned, calibration, t=0.7) -> Coefficients``: λ per layer.
- ``merge_models(base, finetuned, method="acm_ties", out=None, coefficients=None, **params) -> MergeResult``.
- ``evaluate(model, benchmarks=None, backend=None, limit=None) -> EvalResult``: metrics and samples.
- ``load_results(results_dir=None, **filters) -> pandas.DataFrame``: the results table.

    >>> import acm_exp
    >>> merged = acm_exp.merge_models("toy:base", "toy:finetuned", "acm_ties")
    >>> acm_exp.evaluate(merged, limit=5)

Bad values raise ``acm_exp.errors.ConfigError`` with the CLI's one-line message. The names load
on first use, so ``import acm_exp`` stays light (no torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from acm_exp.api_names import API_NAMES as _API_NAMES

__all__ = ["__version__", *_API_NAMES]

if TYPE_CHECKING:
    from acm_exp.api import (
        Calibration as Calibration,
    )
    from acm_exp.api import (
        Coefficients as Coefficients,
    )
    from acm_exp.api import (
        EvalResult as EvalResult,
    )
    from acm_exp.api import (
        MergeResult as MergeResult,
    )
    from acm_exp.api import (
        acm_coefficients as acm_coefficients,
    )
    from acm_exp.api import (
        evaluate as evaluate,
    )
    from acm_exp.api import (
        load_results as load_results,
    )
    from acm_exp.api import (
        merge_models as merge_models,
    )
    from acm_exp.api import (
        select_calibration as select_calibration,
    )
    from acm_exp.version import __version__ as __version__


def __getattr__(name: str) -> Any:
    if name == "__version__":
        # From acm_exp.version, a leaf module, on first use: reading the installed metadata costs ~45 ms.
        from acm_exp.version import __version__

        globals()[name] = __version__
        return __version__
    if name in _API_NAMES:
        value = getattr(importlib.import_module("acm_exp.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'acm_exp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API_NAMES))
