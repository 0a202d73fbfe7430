"""ACM's layer-wise coefficients from the MI statistics, and their mapping onto parameter names.

Per capture point k, with MI_s^k the MI at point k on calibration sample s:
    mean_of_sigmoids (default): λ^k = 1 − mean_s σ(t · (MI_s^k − shift^k))
    sigmoid_of_mean:            λ^k = 1 − σ(t · (mean_s MI_s^k − shift^k))
with shift^k = max_s MI_s^k (``per_point_max``, default), the maximum over every point and sample
of that compared model (``global_max``) or 0 (``none``). High MI (a redundant layer) → small λ.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acm_exp.acm.stats import MIStatistics
from acm_exp.coefficients_file import AcmCoefficientsFile, layer_position, read_coefficients, write_coefficients
from acm_exp.errors import ConfigError, DataError
from acm_exp.merge_parameters import ACM_PARAMETERS

log = logging.getLogger(__name__)

_LAYER_PARAMETER = re.compile(r"^model\.layers\.(\d+)\.\S+$")
_SPECIAL_PARAMETER = re.compile(r"^(?:model\.(embed_tokens|norm)|(lm_head))\.[A-Za-z_]+$")


def layer_coefficients(
    mi: np.ndarray, t: float, shift: str = "per_point_max", reduce: str = "mean_of_sigmoids"
) -> np.ndarray:
    """λ per capture point from ``mi[point, sample]`` of one compared model."""
    for parameter, value in zip(ACM_PARAMETERS, (t, shift, reduce), strict=True):
        parameter.check(value)
    values = np.asarray(mi, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise DataError(f"MI array of shape {values.shape}; expected (points, samples) with at least one of each")
    if not np.isfinite(values).all():
        raise DataError("MI array contains NaN or Inf; expected finite mutual information values")
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


@dataclass
class LayerCoefficients:
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

    def to_file(self) -> AcmCoefficientsFile:
        """What coefficients.json holds: per model and point, λ and the per-sample MI."""
        return AcmCoefficientsFile(
            t=self.t,
            shift=self.shift,
            reduce=self.reduce,
            point_names=self.point_names,
            model_names=self.model_names,
            lambdas=self.lambdas,
            mi_per_sample=self.statistics.mi,
            metadata=self.metadata,
            statistics_metadata=self.statistics.metadata,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.to_file().to_dict()

    def to_json(self, path: str | Path) -> Path:
        """Write coefficients.json: per model and point, λ, the MI summary and the per-sample MI."""
        return write_coefficients(path, self.to_file())

    @classmethod
    def from_json(cls, path: str | Path) -> LayerCoefficients:
        stored = read_coefficients(path, AcmCoefficientsFile)
        statistics = MIStatistics(
            mi=stored.mi_per_sample,
            point_names=stored.point_names,
            model_names=stored.model_names,
            metadata=stored.statistics_metadata,
        )
        return cls(
            lambdas=stored.lambdas,
            statistics=statistics,
            t=stored.t,
            shift=stored.shift,
            reduce=stored.reduce,
            metadata=stored.metadata,
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


# The name this class had before the API's result type took it (acm_exp.outcomes.Coefficients).
Coefficients = LayerCoefficients


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
) -> LayerCoefficients:
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
    return LayerCoefficients(
        lambdas=lambdas, statistics=statistics, t=float(t), shift=shift, reduce=reduce, metadata=dict(metadata or {})
    )
