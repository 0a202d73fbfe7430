"""``coefficients.json``, the per-layer weights a coefficient provider leaves in its run directory.

This module alone writes and reads the file; it imports no torch, so the figures and the W&B
tracker read it without loading the merge stack. Two kinds, told apart by ``method``:

- ACM's λ (no ``method``): ``{"t", "shift", "reduce", "point_names", "metadata",
  "statistics_metadata", "models": [{"name", "points": {point: {"lambda", "mi", "mi_per_sample"}}}]}``;
  the points are the capture points ``embed_tokens``, ``layers.<i>``, ``norm`` and ``lm_head``,
  ``mi`` summarizes ``mi_per_sample`` (mean, std, min, max).
- Sens-Merging's weights (``"method": "sens"``): ``{"method", "alpha", "temperature", "num_layers",
  "layers": [{"layer", "c_base", "c_ft", "s_base", "s_ft"}], "metadata"}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np

from acm_exp.errors import DataError
from acm_exp.paths import atomic_write

SPECIAL_POINTS = ("embed_tokens", "norm", "lm_head")
# The columns of ``AcmCoefficientsFile.lambda_rows``.
LAMBDA_COLUMNS = ("model", "point", "position", "lambda")
SENS_METHOD = "sens"
_LAYER_POINT = re.compile(r"^layers\.(\d+)$")
_SENS_LAYER_KEYS = ("c_base", "c_ft", "s_base", "s_ft")


def layer_position(point: str, num_layers: int) -> int:
    """x position of a capture point in the layer-wise plot: embed -1, layers 0..L-1, norm L, head L+1."""
    if point == "embed_tokens":
        return -1
    if point == "norm":
        return num_layers
    if point == "lm_head":
        return num_layers + 1
    return int(point.split(".", 1)[1])


def _mi_summary(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
    }


@dataclass(frozen=True)
class AcmCoefficientsFile:
    """ACM's λ[model, point] and the per-sample MI ``mi_per_sample[model, point, sample]`` it came from."""

    t: float
    shift: str
    reduce: str
    point_names: tuple[str, ...]
    model_names: tuple[str, ...]
    lambdas: np.ndarray
    mi_per_sample: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    statistics_metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        models = []
        for index, model in enumerate(self.model_names):
            points = {
                point: {
                    "lambda": float(self.lambdas[index, k]),
                    "mi": _mi_summary(self.mi_per_sample[index, k]),
                    "mi_per_sample": [float(v) for v in self.mi_per_sample[index, k]],
                }
                for k, point in enumerate(self.point_names)
            }
            models.append({"name": model, "points": points})
        return {
            "t": self.t,
            "shift": self.shift,
            "reduce": self.reduce,
            "point_names": list(self.point_names),
            "metadata": self.metadata,
            "statistics_metadata": self.statistics_metadata,
            "models": models,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> AcmCoefficientsFile:
        points = _list(data, "point_names", source)
        bad = [p for p in points if not isinstance(p, str) or not (p in SPECIAL_POINTS or _LAYER_POINT.match(p))]
        if not points or bad or len(set(points)) != len(points):
            raise _bad(
                source, f"point_names={points!r}", "distinct capture points embed_tokens, layers.<i>, norm, lm_head"
            )
        models = _list(data, "models", source)
        if not models:
            raise _bad(source, "an empty 'models' list", "one entry per compared model")
        names, lambdas, mi = [], [], []
        for index, model in enumerate(models):
            where = f"models[{index}]"
            name = _text(model, "name", source, where)
            by_point = _mapping(model, "points", source, where)
            if list(by_point) != points:
                raise _bad(source, f"{where} points {list(by_point)}", f"the point_names {points}")
            names.append(name)
            lambdas.append([_number(by_point[p], "lambda", source, f"{where}.points.{p}") for p in points])
            mi.append([_numbers(by_point[p], "mi_per_sample", source, f"{where}.points.{p}") for p in points])
        if len({len(samples) for row in mi for samples in row}) != 1:
            raise _bad(source, "mi_per_sample lists of different lengths", "one MI per calibration sample each")
        return cls(
            t=_number(data, "t", source),
            shift=_text(data, "shift", source),
            reduce=_text(data, "reduce", source),
            point_names=tuple(points),
            model_names=tuple(names),
            lambdas=np.array(lambdas),
            mi_per_sample=np.array(mi),
            metadata=_mapping(data, "metadata", source),
            statistics_metadata=_mapping(data, "statistics_metadata", source),
        )

    def lambda_rows(self) -> list[list[Any]]:
        """λ per compared model and capture point as rows of LAMBDA_COLUMNS, by model then position
        (embedding 0, decoder layer i at i + 1, final norm, lm_head)."""
        num_layers = sum(1 for point in self.point_names if _LAYER_POINT.match(point))
        rows = [
            [model, point, layer_position(point, num_layers) + 1, float(self.lambdas[index, k])]
            for index, model in enumerate(self.model_names)
            for k, point in enumerate(self.point_names)
        ]
        return sorted(rows, key=lambda row: (row[0], row[2]))


@dataclass(frozen=True)
class SensCoefficientsFile:
    """Sens-Merging's per-decoder-layer weights (c_base, c_ft) and the sensitivities they came from."""

    alpha: float
    temperature: float
    c_base: np.ndarray
    c_ft: np.ndarray
    s_base: np.ndarray
    s_ft: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        layers = [
            {"layer": index, **{key: float(getattr(self, key)[index]) for key in _SENS_LAYER_KEYS}}
            for index in range(len(self.c_base))
        ]
        return {
            "method": SENS_METHOD,
            "alpha": self.alpha,
            "temperature": self.temperature,
            "num_layers": len(layers),
            "layers": layers,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> SensCoefficientsFile:
        layers = _list(data, "layers", source)
        num_layers = _integer(data, "num_layers", source)
        if not layers or num_layers != len(layers):
            raise _bad(source, f"num_layers={num_layers} and {len(layers)} layers", "one entry per layer, at least one")
        columns: dict[str, list[float]] = {key: [] for key in _SENS_LAYER_KEYS}
        for index, layer in enumerate(layers):
            where = f"layers[{index}]"
            if _integer(layer, "layer", source, where) != index:
                raise _bad(source, f"{where}.layer={layer['layer']}", f"the layers in order ({index})")
            for key in _SENS_LAYER_KEYS:
                columns[key].append(_number(layer, key, source, where))
        return cls(
            alpha=_number(data, "alpha", source),
            temperature=_number(data, "temperature", source),
            **{key: np.array(values) for key, values in columns.items()},
            metadata=_mapping(data, "metadata", source),
        )


CoefficientsFile = AcmCoefficientsFile | SensCoefficientsFile
Kind = TypeVar("Kind", AcmCoefficientsFile, SensCoefficientsFile)


def write_coefficients(path: str | Path, coefficients: CoefficientsFile) -> Path:
    """Write ``coefficients`` as JSON (atomically); returns the path."""
    text = json.dumps(coefficients.to_dict(), indent=2) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


@overload
def read_coefficients(path: str | Path) -> CoefficientsFile: ...


@overload
def read_coefficients(path: str | Path, kind: type[Kind]) -> Kind: ...


def read_coefficients(path: str | Path, kind: type[Kind] | None = None) -> CoefficientsFile:
    """The coefficients a ``coefficients.json`` holds; DataError on a file of another shape or,
    with ``kind``, of the other kind."""
    source = str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"coefficients file {source} is unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict):
        raise _bad(source, f"a JSON {type(data).__name__}", "an object")
    if data.get("method") == SENS_METHOD:
        coefficients: CoefficientsFile = SensCoefficientsFile.from_dict(data, source)
    elif "method" not in data and "point_names" in data:
        coefficients = AcmCoefficientsFile.from_dict(data, source)
    else:
        raise _bad(source, f"keys {sorted(data)}", "ACM λ (t, point_names, models) or Sens-Merging weights")
    if kind is not None and not isinstance(coefficients, kind):
        raise _bad(source, _describe(type(coefficients)), _describe(kind))
    return coefficients


def _describe(kind: type) -> str:
    return "Sens-Merging weights" if kind is SensCoefficientsFile else "ACM λ"


def _bad(source: str, found: str, expected: str) -> DataError:
    return DataError(f"coefficients file {source} has {found}; expected {expected}")


def _field(mapping: Any, key: str, kinds: type | tuple[type, ...], expected: str, source: str, where: str) -> Any:
    name = f"{where}.{key}" if where else key
    if not isinstance(mapping, dict) or key not in mapping:
        raise _bad(source, f"no {name!r}", expected)
    value = mapping[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise _bad(source, f"{name}={value!r:.60}", expected)
    return value


def _text(mapping: Any, key: str, source: str, where: str = "") -> str:
    return _field(mapping, key, str, "a string", source, where)


def _integer(mapping: Any, key: str, source: str, where: str = "") -> int:
    return _field(mapping, key, int, "an integer", source, where)


def _number(mapping: Any, key: str, source: str, where: str = "") -> float:
    return _field(mapping, key, (int, float), "a number", source, where)


def _mapping(mapping: Any, key: str, source: str, where: str = "") -> dict[str, Any]:
    return _field(mapping, key, dict, "an object", source, where)


def _list(mapping: Any, key: str, source: str, where: str = "") -> list[Any]:
    return _field(mapping, key, list, "a list", source, where)


def _numbers(mapping: Any, key: str, source: str, where: str) -> list[float]:
    values = _list(mapping, key, source, where)
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise _bad(source, f"{where}.{key}={values!r:.60}", "a non-empty list of numbers")
    return values
