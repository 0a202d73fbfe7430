"""MI statistics: one mutual information per compared model, capture point and calibration sample."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acm_exp.errors import ConfigError, DataError


@dataclass
class MIStatistics:
    """``mi[model, point, sample]``: MI (nats) between the base's and compared model ``model``'s
    activations at capture point ``point_names[point]`` on calibration sample ``sample``."""

    mi: np.ndarray
    point_names: tuple[str, ...]
    model_names: tuple[str, ...]
    # Provenance: the cache key and directory, the spec the statistics were computed from.
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mi = np.asarray(self.mi, dtype=np.float64)
        self.point_names = tuple(self.point_names)
        self.model_names = tuple(self.model_names)
        if self.mi.ndim != 3:
            raise DataError(f"MI statistics have shape {self.mi.shape}; expected (models, points, samples)")
        expected = (len(self.model_names), len(self.point_names))
        if self.mi.shape[:2] != expected:
            raise DataError(f"MI statistics have shape {self.mi.shape}; expected {expected} models x points")
        if self.mi.shape[2] == 0:
            raise DataError("MI statistics hold no calibration sample; expected at least one")
        if not np.isfinite(self.mi).all():
            raise DataError("MI statistics contain NaN or Inf values")

    @property
    def num_samples(self) -> int:
        return self.mi.shape[2]

    def point_index(self, point: str) -> int:
        try:
            return self.point_names.index(point)
        except ValueError:
            raise ConfigError(
                f"capture point {point!r} is not in the MI statistics (points: {self.point_names[0]} ... "
                f"{self.point_names[-1]})"
            ) from None

    def for_model(self, model_index: int) -> np.ndarray:
        """mi[point, sample] of one compared model."""
        if not 0 <= model_index < len(self.model_names):
            raise ConfigError(
                f"model index {model_index}; the statistics have {len(self.model_names)} compared model(s)"
            )
        return self.mi[model_index]

    def summary(self, model_index: int) -> dict[str, dict[str, float]]:
        """Per point: mean, std, min and max of the MI over samples."""
        values = self.for_model(model_index)
        return {
            point: {
                "mean": float(row.mean()),
                "std": float(row.std()),
                "min": float(row.min()),
                "max": float(row.max()),
            }
            for point, row in zip(self.point_names, values, strict=False)
        }

    def save(self, target) -> None:
        """Write an .npz (the array and the names; metadata as JSON) to a path or a binary handle.

        Callers make it atomic."""
        np.savez(
            target,
            mi=self.mi,
            point_names=np.array(self.point_names),
            model_names=np.array(self.model_names),
            metadata=np.array(json.dumps(self.metadata, sort_keys=True)),
        )

    @classmethod
    def load(cls, path: str | Path) -> MIStatistics:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                mi=data["mi"],
                point_names=tuple(str(p) for p in data["point_names"]),
                model_names=tuple(str(m) for m in data["model_names"]),
                metadata=json.loads(str(data["metadata"])),
            )

    @classmethod
    def concatenate_models(cls, parts: list[MIStatistics]) -> MIStatistics:
        """Stack statistics computed one compared model at a time (same points and samples)."""
        if not parts:
            raise ConfigError("no MI statistics to concatenate; expected at least one compared model")
        first = parts[0]
        for part in parts[1:]:
            if part.point_names != first.point_names or part.num_samples != first.num_samples:
                raise DataError("MI statistics of different compared models disagree on capture points or samples")
        return cls(
            mi=np.concatenate([part.mi for part in parts]),
            point_names=first.point_names,
            model_names=tuple(name for part in parts for name in part.model_names),
            metadata=dict(first.metadata),
        )
