"""The Python API's public names, declared once.

``acm_exp/__init__.py`` offers them lazily (``import acm_exp`` loads no torch) and ``acm_exp.api``
takes them as its ``__all__``; this leaf module lets both read the list without importing each other.
"""

API_NAMES = (
    "Calibration",
    "Coefficients",
    "EvalResult",
    "MergeResult",
    "acm_coefficients",
    "evaluate",
    "load_results",
    "merge_models",
    "select_calibration",
)
