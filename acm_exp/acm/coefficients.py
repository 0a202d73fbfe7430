"""ACM's layer-wise coefficients from the MI statistics, and their mapping onto parameter names.

Per capture point k (DESIGN.md §1 item 4):
    mean_of_sigmoids (default): λ^k = 1 − mean_s σ(t · (MI_s^k − shift^k))
    sigmoid_of_mean:            λ^k = 1 − σ(t · (mean_s MI_s^k − shift^k))
with shift^k = max_s MI_s^k (``per_point_max``, default), the maximum over every point and sample
of that compared model (``global_max``) or 0 (``none``). High MI (a redundant layer) → small λ.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acm_exp.acm.stats import MIStatistics
from acm_exp.errors import ConfigError

log = logging.getLogger(__name__)

SHIFTS = ("per_point_max", "global_max", "none")
REDUCES = ("mean_of_sigmoids", "sigmoid_of_mean")
SPECIAL_POINTS = ("embed_tokens", "norm", "lm_head")

_LAYER_PARAMETER = re.compile(r"^model\.layers\.(\d+)\.\S+$")
_SPECIAL_PARAMETER = re.compile(r"^(?:model\.(embed_tokens|norm)|(lm_head))\.[A-Za-z_]+$")


def check_coefficient_settings(t: float, shift: str, reduce: str) -> None:
    """Raise ConfigError unless t is a finite number and shift/reduce are known."""
    if isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)) or not math.isfinite(t):
        raise ConfigError(f"merge.t={t!r}; expected a finite number (the sigmoid temperature, negative allowed)")
    if shift not in SHIFTS:
        raise ConfigError(f"merge.shift={shift!r}; expected one of {SHIFTS}")
    if reduce not in REDUCES:
        raise ConfigError(f"merge.reduce={reduce!r}; expected one of {REDUCES}")


def layer_coefficients(
    mi: np.ndarray, t: float, shift: str = "per_point_max", reduce: str = "mean_of_sigmoids"
) -> np.ndarray:
    """λ per capture point from ``mi[point, sample]`` of one compared model."""
    check_coefficient_settings(t, shift, reduce)
    values = np.asarray(mi, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ConfigError(f"MI array of shape {values.shape}; expected (points, samples) with at least one of each")
    if not np.isfinite(values).all():
        raise ConfigError("MI array contains NaN or Inf; expected finite mutual information values")
    if shift == "per_point_max":
        offset = values.max(axis=1, keepdims=True)
    elif shift == "global_max":
        offset = np.full((values.shape[0], 1), values.max())
    else:
        offset = np.zeros((values.shape[0], 1))
    # torch's sigmoid is stable for large |t·MI|, where 1/(1+exp(-z)) would overflow.
    if reduce == "mean_of_sigmoids":
        squashed = torch.sigmoid(torch.from_numpy(t * (values - offset))).mean(dim=1)
    else:
        squashed = torch.sigmoid(torch.from_numpy(t * (values.mean(axis=1) - offset[:, 0])))
    return 1.0 - squashed.numpy()


def point_for_parameter(name: str) -> str:
    """The capture point whose λ weights parameter ``name`` (a Hugging Face checkpoint name).

    Every tensor of decoder layer i (attention, MLP, both norms, biases) takes ``layers.i``; the
    embedding, the final norm and the output head take their own point.
    """
    layer = _LAYER_PARAMETER.match(name)
    if layer:
        return f"layers.{int(layer.group(1))}"
    special = _SPECIAL_PARAMETER.match(name)
    if special:
        return special.group(1) or special.group(2)
    raise ConfigError(
        f"parameter {name!r} maps to no ACM capture point; expected model.layers.<i>.*, "
        "model.embed_tokens.*, model.norm.* or lm_head.*"
    )


def layer_position(point: str, num_layers: int) -> int:
    """x position of a capture point in the layer-wise plot: embed -1, layers 0..L-1, norm L, head L+1."""
    if point == "embed_tokens":
        return -1
    if point == "norm":
        return num_layers
    if point == "lm_head":
        return num_layers + 1
    return int(point.split(".", 1)[1])


@dataclass
class Coefficients:
    """λ[model, point] for every compared model, with the MI statistics they came from."""

    lambdas: np.ndarray
    statistics: MIStatistics
    t: float
    shift: str
    reduce: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def point_names(self) -> tuple[str, ...]:
        return self.statistics.point_names

    @property
    def model_names(self) -> tuple[str, ...]:
        return self.statistics.model_names

    def for_point(self, model_index: int, point: str) -> float:
        self.statistics.for_model(model_index)  # validates the index
        return float(self.lambdas[model_index, self.statistics.point_index(point)])

    def for_parameter(self, model_index: int, name: str) -> float:
        """λ of compared model ``model_index`` for the checkpoint tensor ``name``."""
        return self.for_point(model_index, point_for_parameter(name))

    def model_weights(self, name: str) -> tuple[float, ...]:
        """λ of every compared model for tensor ``name``, in model order (the engine's model_weights)."""
        return tuple(self.for_parameter(index, name) for index in range(len(self.model_names)))

    def to_dict(self) -> dict[str, Any]:
        models = []
        for index, model in enumerate(self.model_names):
            summary = self.statistics.summary(index)
            points = {
                point: {
                    "lambda": float(self.lambdas[index, k]),
                    "mi": summary[point],
                    "mi_per_sample": [float(v) for v in self.statistics.mi[index, k]],
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
            "statistics_metadata": self.statistics.metadata,
            "models": models,
        }

    def to_json(self, path: str | Path) -> Path:
        """Write coefficients.json: per model and point, λ, the MI summary and the per-sample MI."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> Coefficients:
        data = json.loads(Path(path).read_text())
        points = tuple(data["point_names"])
        models = data["models"]
        mi = np.array([[model["points"][point]["mi_per_sample"] for point in points] for model in models])
        lambdas = np.array([[model["points"][point]["lambda"] for point in points] for model in models])
        statistics = MIStatistics(
            mi=mi,
            point_names=points,
            model_names=tuple(m["name"] for m in models),
            metadata=data.get("statistics_metadata", {}),
        )
        return cls(
            lambdas=lambdas,
            statistics=statistics,
            t=data["t"],
            shift=data["shift"],
            reduce=data["reduce"],
            metadata=data.get("metadata", {}),
        )

    def plot(self, path: str | Path) -> Path:
        """Write coefficients.png: λ per layer, one line per compared model; embed/norm/head marked."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        num_layers = sum(1 for point in self.point_names if point.startswith("layers."))
        positions = [layer_position(point, num_layers) for point in self.point_names]
        layer_mask = [point.startswith("layers.") for point in self.point_names]
        figure, axis = plt.subplots(figsize=(max(6.0, 0.25 * (num_layers + 3)), 3.6))
        for index, model in enumerate(self.model_names):
            values = self.lambdas[index]
            (line,) = axis.plot(
                [p for p, keep in zip(positions, layer_mask, strict=False) if keep],
                [v for v, keep in zip(values, layer_mask, strict=False) if keep],
                marker="o",
                markersize=3,
                label=Path(model).name or model,
            )
            special = [(p, v) for p, v, keep in zip(positions, values, layer_mask, strict=False) if not keep]
            if special:
                axis.scatter(*zip(*special, strict=False), marker="D", s=36, color=line.get_color(), zorder=3)
        labels = {-1: "embed", num_layers: "norm", num_layers + 1: "head"}
        ticks = sorted(set(positions))
        step = max(1, num_layers // 14)
        shown = [p for p in ticks if p in labels or p % step == 0]
        axis.set_xticks(shown, [labels.get(p, str(p)) for p in shown])
        axis.set_xlabel("layer")
        axis.set_ylabel("λ (ACM coefficient)")
        axis.set_title(f"ACM coefficients (t={self.t:g}, shift={self.shift}, {self.reduce})", fontsize=9)
        return save_line_plot(figure, axis, path)


def save_line_plot(figure, axis, path: Path) -> Path:
    """Grid, legend, tight layout, PNG at 150 dpi; closes the figure (the coefficient plots' finish)."""
    import matplotlib.pyplot as plt

    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
    return path


def compute_coefficients(
    statistics: MIStatistics,
    t: float,
    shift: str = "per_point_max",
    reduce: str = "mean_of_sigmoids",
    metadata: dict[str, Any] | None = None,
) -> Coefficients:
    """λ for every compared model of ``statistics``."""
    lambdas = np.stack(
        [layer_coefficients(statistics.for_model(i), t, shift, reduce) for i in range(len(statistics.model_names))]
    )
    for name, row in zip(statistics.model_names, lambdas, strict=False):
        log.info(
            "ACM coefficients for %s (t=%g, %s, %s): λ in [%.4f, %.4f], mean %.4f",
            name,
            t,
            shift,
            reduce,
            row.min(),
            row.max(),
            row.mean(),
        )
    return Coefficients(
        lambdas=lambdas, statistics=statistics, t=float(t), shift=shift, reduce=reduce, metadata=dict(metadata or {})
    )
