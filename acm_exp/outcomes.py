"""The Python API's results: typed, printable in a terminal (``repr``) and in a notebook (``_repr_html_``).

Each is what one API call (``acm_exp.select_calibration``, ``acm_coefficients``, ``merge_models``,
``evaluate``) or one CLI job's stage produced.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import os

    import pandas as pd

    from acm_exp.acm import Coefficients as LayerCoefficients
    from acm_exp.acm.provider import CoefficientPlan

PathLike = Union[str, "os.PathLike[str]"]
HTML_TEXT_CHARS = 160
HTML_MAX_ROWS = 40


# ---------------------------------------------------------------------------------------------
# Rendering


def _short(text: Any, limit: int = HTML_TEXT_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _html_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows[:HTML_MAX_ROWS]
    )
    more = f"<p>… {len(rows) - HTML_MAX_ROWS} more rows</p>" if len(rows) > HTML_MAX_ROWS else ""
    note_html = f"<p>{html.escape(note)}</p>" if note else ""
    return (
        f"<div><strong>{html.escape(title)}</strong>{note_html}<table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>{more}</div>"
    )


def _key_value_html(title: str, items: Mapping[str, Any]) -> str:
    return _html_table(title, ("", ""), [(key, value) for key, value in items.items()])


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Calibration:
    """A calibration selection: the texts fed to the models, the corpus rows they came from and the
    settings that picked them (``settings``: the resolved ``calibration`` config).

    Example:
        >>> calibration = acm_exp.select_calibration("toy", per_cluster=2)
        >>> len(calibration), calibration.spec
        (8, 'toy[:400]:cluster(k=4,per=2,seed=42)')
        >>> calibration.texts[0]
        '8 + 3 + 4 + 8'
    """

    texts: list[str]
    indices: list[int]
    spec: str
    selection_hash: str
    corpus_size: int
    settings: dict[str, Any]
    cluster_labels: list[int] | None = None
    overrides: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return (
            f"Calibration({self.spec}: {len(self.texts)} of {self.corpus_size} rows, selection {self.selection_hash})"
        )

    def _repr_html_(self) -> str:
        labels = self.cluster_labels or [""] * len(self.texts)
        rows = [
            (index, label, _short(text)) for index, label, text in zip(self.indices, labels, self.texts, strict=False)
        ]
        return _html_table(repr(self), ("row", "cluster", "text"), rows)


@dataclass(frozen=True)
class Coefficients:
    """ACM's λ per capture point (embedding, each decoder layer, final norm, head) and fine-tuned
    model, from the MI between the base's and that model's activations on the calibration texts.

    ``lambdas[model][point]``; ``for_parameter(name)`` gives the λ a checkpoint tensor is merged
    with. The run directory holds ``coefficients.json`` (``path``; λ, MI summary and per-sample MI,
    the same file the CLI writes), ``coefficients.png`` and ``calibration.json``.

    Example:
        >>> calibration = acm_exp.select_calibration("toy", per_cluster=2)
        >>> coefficients = acm_exp.acm_coefficients("toy:base", "toy:finetuned", calibration, t=0.7)
        >>> coefficients.for_parameter("model.layers.1.mlp.up_proj.weight")  # layer 1's λ
        0.5095...
        >>> coefficients.to_dict()["models"][0]["points"]["lm_head"]["lambda"]
        0.5448...
    """

    base: str
    finetuned: tuple[str, ...]
    acm: LayerCoefficients = field(repr=False)
    calibration: Calibration = field(repr=False)
    against: str
    method: str
    run_dir: Path
    path: Path
    timings: dict[str, float] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    # The CLI overrides that fix how these coefficients were computed (t, shift, reduce, acm.*,
    # calibration.*): a merge with these coefficients composes them too.
    settings_overrides: tuple[str, ...] = field(default=(), repr=False)
    plan: CoefficientPlan | None = field(default=None, repr=False, compare=False)

    @property
    def t(self) -> float:
        return self.acm.t

    @property
    def points(self) -> tuple[str, ...]:
        return tuple(self.acm.point_names)

    @property
    def lambdas(self) -> dict[str, dict[str, float]]:
        return {
            model: {point: self.acm.for_point(index, point) for point in self.points}
            for index, model in enumerate(self.acm.model_names)
        }

    @property
    def mi_cache_key(self) -> str | None:
        return self.acm.statistics.metadata.get("cache_key")

    def for_point(self, point: str, model: int = 0) -> float:
        """λ of capture point ``point`` (``layers.3``, ``embed_tokens``, ``norm``, ``lm_head``)."""
        return self.acm.for_point(model, point)

    def for_parameter(self, name: str, model: int = 0) -> float:
        """λ of the checkpoint tensor ``name`` (every tensor of decoder layer i takes layer i's λ)."""
        return self.acm.for_parameter(model, name)

    def to_dict(self) -> dict[str, Any]:
        """What ``coefficients.json`` holds: t, shift, reduce, and per model and point λ and MI."""
        return self.acm.to_dict()

    def plot(self, path: PathLike | None = None) -> Path:
        """Draw λ per layer (one line per fine-tuned model) to ``path`` (default: the run's
        ``coefficients.png``); returns the PNG's path (``IPython.display.Image(path)`` shows it)."""
        return self.acm.plot(Path(path) if path is not None else self.run_dir / "coefficients.png")

    def __repr__(self) -> str:
        values = [value for model in self.lambdas.values() for value in model.values()]
        return (
            f"Coefficients(t={self.t:g}, {self.acm.shift}, {self.acm.reduce}, {len(self.points)} points "
            f"x {len(self.finetuned)} model(s), λ in [{min(values):.4f}, {max(values):.4f}], {self.path})"
        )

    def _repr_html_(self) -> str:
        models = list(self.acm.model_names)
        mean_mi = {
            (index, point): self.acm.statistics.summary(index)[point]
            for index in range(len(models))
            for point in self.points
        }
        rows = [
            (
                point,
                *(f"{self.acm.for_point(index, point):.4f}" for index in range(len(models))),
                *(_short(mean_mi[index, point], 40) for index in range(len(models))),
            )
            for point in self.points
        ]
        header = ("point", *(f"λ {model}" for model in models), *(f"MI {model}" for model in models))
        return _html_table(repr(self), header, rows)


@dataclass(frozen=True)
class MergeResult:
    """A finished merge: its output directory, ``merge_manifest.json`` (method, parameters, inputs
    with content hashes, ``request_fingerprint``), seconds per stage and the run directory.

    Example:
        >>> merged = acm_exp.merge_models("toy:base", "toy:finetuned", "ties", k=0.5)
        >>> merged.output_dir.name, merged.manifest["parameters"]["k"]
        ('merged', 0.5)
        >>> sorted(merged.timings)
        ['coefficients', 'merge']
    """

    output_dir: Path
    manifest: dict[str, Any] = field(repr=False)
    timings: dict[str, float]
    run_dir: Path
    method: str
    reused: bool = False
    coefficients: Coefficients | None = field(default=None, repr=False)
    coefficients_path: Path | None = field(default=None, repr=False)
    costs: dict[str, Any] = field(default_factory=dict, repr=False)
    overrides: tuple[str, ...] = ()
    # The input models' local directories, base first (what the CLI's job then evaluates).
    inputs: tuple[Path, ...] = field(default=(), repr=False)

    @property
    def fingerprint(self) -> str | None:
        """What identifies the merge's result (method, parameters, inputs, coefficient settings)."""
        return self.manifest.get("request_fingerprint")

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.manifest.get("parameters") or {})

    def __repr__(self) -> str:
        parameters = ", ".join(f"{key}={value}" for key, value in self.parameters.items())
        status = "reused" if self.reused else f"{sum(self.timings.values()):.1f} s"
        return (
            f"MergeResult({self.method}({parameters}) -> {self.output_dir}, {status}, fingerprint {self.fingerprint})"
        )

    def _repr_html_(self) -> str:
        inputs = {
            entry.get("role", "?"): f"{entry.get('path')} ({entry.get('content_hash')})"
            for entry in self.manifest.get("inputs", [])
        }
        items = {
            "method": self.method,
            **{f"merge.{k}": v for k, v in self.parameters.items()},
            **inputs,
            "output": self.output_dir,
            "fingerprint": self.fingerprint,
            "reused": self.reused,
            **{f"{stage} (s)": seconds for stage, seconds in self.timings.items()},
            "run_dir": self.run_dir,
        }
        return _key_value_html(f"MergeResult: {self.method}", items)


def _questions(row: Mapping[str, Any]) -> str:
    """'n=50', or 'n=5 of 1319' for a subset (eval.limit)."""
    size = row.get("benchmark_size")
    return f"n={row['n']}" if size is None or int(size) <= int(row["n"]) else f"n={row['n']} of {size}"


@dataclass(frozen=True)
class EvalResult:
    """One model's evaluation: metric rows (accuracy %, mean response tokens, truncation rate, per
    benchmark and seed, plus the seed mean with several seeds) and the per-sample records (prompt,
    response, extracted and gold answer, correctness, tokens) per benchmark.

    Example:
        >>> result = acm_exp.evaluate("toy:finetuned", ("toy",), limit=5)
        >>> result.accuracy
        {'toy': ...}
        >>> sorted(result.samples["toy"][0])[:4]
        ['correct', 'extracted', 'finish_reason', 'generated_tokens']
    """

    model: str
    role: str
    path: Path
    rows: list[dict[str, Any]] = field(repr=False)
    samples: dict[str, list[dict[str, Any]]] = field(repr=False)
    timings: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None
    results_file: Path | None = None
    overrides: tuple[str, ...] = ()

    def _summary_rows(self) -> list[dict[str, Any]]:
        several = {row["benchmark"] for row in self.rows if row.get("seed") is None}
        return [row for row in self.rows if (row.get("seed") is None) == (row["benchmark"] in several)]

    @property
    def metrics(self) -> pd.DataFrame:
        """The metric rows as a table (one row per benchmark and seed, and the seed mean)."""
        import pandas as pd

        return pd.DataFrame(self.rows).drop(columns=["samples_path"], errors="ignore")

    @property
    def accuracy(self) -> dict[str, float]:
        """Accuracy (%) per benchmark (the seed mean when several seeds ran)."""
        return {row["benchmark"]: float(row["accuracy"]) for row in self._summary_rows()}

    def __repr__(self) -> str:
        cells = ", ".join(
            f"{row['benchmark']}: {row['accuracy']:.1f}% / {row['mean_tokens']:.0f} tok ({_questions(row)})"
            for row in self._summary_rows()
        )
        return f"EvalResult({self.model} [{self.role}]: {cells})"

    def _repr_html_(self) -> str:
        columns = (
            "benchmark",
            "seed",
            "n",
            "benchmark_size",
            "accuracy",
            "mean_tokens",
            "truncation_rate",
            "reflections",
        )
        rows = [tuple(_short(row.get(column), 40) for column in columns) for row in self.rows]
        return _html_table(f"EvalResult: {self.model} [{self.role}]", columns, rows, note=str(self.path))
