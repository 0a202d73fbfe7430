"""Sweeps: every point validated before the first runs, every point run, one summary at the end.

Before: Hydra composes each job's config only when the job starts, so a bad value in the last point
of a sweep would fail after the earlier points had run (or, on SLURM, after the array was submitted).
``ValidateSweep`` is a Hydra callback (registered in conf/config.yaml) that expands the sweep the way
Hydra's basic sweeper does (``hydra.sweeper.params`` first, then the command line, cartesian
product), composes every point and runs the pipeline's validation on it: one bad point stops the
whole sweep with a one-line error naming the point, before any weight is read or any job submitted.

During: a point that fails at run time is recorded as failed and the sweep goes on with the next one.
Every point, wherever it runs (locally, or as a SLURM array task), writes ``<run dir>/point.json``
(``PointRecord``): its overrides, its status (ran, skipped, failed, interrupted), the stage and the
one-line cause of a failure, and its headline numbers.

After: ``Summary`` collects the records of the sweep's points from the sweep directory and prints

    3 points: 2 ran, 0 skipped, 1 failed
    merge.scale  status  merged: toy                 note
    0.5          ran     84.0% / 42.9 tok (n=50)
    0.7          failed  -                           the merge failed: ...

(a point skipped as complete shows the numbers it already has; a point with no record, e.g. a SLURM
task killed before it could write one, counts as failed). ``python -m acm_exp`` exits 1 when any
point failed; rerunning the same command runs only the failed and missing points again (complete
points are skipped). ``python -m acm_exp.sweep SWEEP_DIR`` prints the same summary for a sweep
directory, e.g. of a ``slurm/array.sbatch`` array (``--points SWEEP_FILE`` names its points).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from acm_exp.errors import ConfigError

log = logging.getLogger("acm_exp")

RECORD_NAME = "point.json"
RAN, SKIPPED, FAILED, INTERRUPTED, NO_RESULT = "ran", "skipped", "failed", "interrupted", "no result"
# Exit status of a sweep in which a point failed (2 is a bad input, 130+ an interruption).
EXIT_POINTS_FAILED = 1
NOTE_WIDTH = 160


def sweep_points(params: Mapping[str, Any], overrides: Sequence[str]) -> list[list[str]]:
    """The override list of every job: ``params`` (hydra.sweeper.params) then ``overrides``,
    each sweep (``a,b``, ``range(...)``, ...) expanded, in the basic sweeper's order."""
    arguments = [f"{key}={value}" for key, value in params.items()] + list(overrides)
    axes = []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            axes.append([f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(point) for point in itertools.product(*axes)]


@dataclass
class SweepPlan:
    """The sweep this process launched: its points, its directory and when it started."""

    points: list[list[str]]
    directory: Path
    started: float
    # The launcher's settings (hydra.launcher), to say what a refused SLURM submission asked for.
    launcher: dict = field(default_factory=dict)


# The sweep being run by this process (set by ValidateSweep), for the summary at its end.
ACTIVE: SweepPlan | None = None


class ValidateSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global ACTIVE
        from hydra import compose

        from acm_exp.needs import check_resolvable
        from acm_exp.slurm import check_launcher
        from acm_exp.stages import validate

        points = sweep_points(config.hydra.sweeper.get("params") or {}, config.hydra.overrides.task)
        log.info("validating the %d points of the sweep before launching any", len(points))
        for point in points:
            try:
                point_cfg = compose(config_name=config.hydra.job.config_name, overrides=point)
                validate(point_cfg)
                check_resolvable(point_cfg, point)
            except ConfigError as error:
                print(f"acm_exp: error: sweep point [{' '.join(point)}]: {error}", file=sys.stderr)
                sys.exit(2)
        try:
            check_launcher(config.hydra.launcher)
        except ConfigError as error:
            print(f"acm_exp: error: {error}", file=sys.stderr)
            sys.exit(2)
        ACTIVE = SweepPlan(points, Path(str(config.hydra.sweep.dir)).absolute(), time.time(), _settings(config))


def _settings(config: DictConfig) -> dict:
    from omegaconf import OmegaConf

    try:
        return dict(OmegaConf.to_container(config.hydra.launcher, resolve=True))
    except Exception:  # noqa: BLE001 - only used to describe a failure; never the cause of one
        return {}


# ---------------------------------------------------------------------------------------------
# One record per point


@dataclass
class PointRecord:
    """What one sweep point did, as ``<run dir>/point.json`` records it."""

    overrides: list[str]
    status: str
    run_dir: str
    stage: str | None = None
    cause: str | None = None
    # One entry per (model, benchmark): accuracy and mean tokens (seed means), n questions.
    headline: list[dict] = field(default_factory=list)
    finished: float = field(default_factory=time.time)

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(sorted(self.overrides))


def headline(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Per (model, benchmark): mean accuracy and mean tokens over the seeds, and the questions each rests on."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("seed") is not None and row.get("accuracy") is not None:
            groups.setdefault((str(row["model"]), str(row["benchmark"])), []).append(row)
    return [
        {
            "model": model,
            "benchmark": benchmark,
            "accuracy": sum(float(r["accuracy"]) for r in group) / len(group),
            "mean_tokens": sum(float(r["mean_tokens"]) for r in group) / len(group),
            "n": int(group[0]["n"]) if group[0].get("n") is not None else None,
            "seeds": len(group),
        }
        for (model, benchmark), group in groups.items()
    ]


def write_record(record: PointRecord) -> Path:
    from acm_exp.paths import atomic_write

    text = json.dumps(asdict(record), indent=2, default=str) + "\n"
    return atomic_write(Path(record.run_dir) / RECORD_NAME, lambda handle: handle.write(text.encode()))


def read_records(directory: Path) -> list[PointRecord]:
    """Every point record under a sweep directory (unreadable ones are skipped with a warning)."""
    records = []
    for path in sorted(Path(directory).rglob(RECORD_NAME)):
        try:
            records.append(PointRecord(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError) as error:
            log.warning("skipping the unreadable sweep record %s (%s)", path, error)
    return records


# ---------------------------------------------------------------------------------------------
# The summary


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key, value


def swept_keys(points: Sequence[Sequence[str]]) -> list[str]:
    """The keys whose value differs between points, in command-line order."""
    values: dict[str, set[str]] = {}
    for point in points:
        for key, value in map(_split, point):
            values.setdefault(key, set()).add(value)
    keys = [
        key for key, seen in values.items() if len(seen) > 1 or any(key not in dict(map(_split, p)) for p in points)
    ]
    return keys


def headline_cell(entry: Mapping[str, Any]) -> str:
    """``84.0% / 42.9 tok (n=50)``: a headline entry's accuracy, mean tokens and the questions it rests
    on (with the number of seeds when several were averaged); a multiple-choice benchmark generates no
    tokens, so its cell has none."""
    seeds = entry.get("seeds") or 1
    rests_on = [f"n={entry['n']}"] if entry.get("n") is not None else []
    rests_on += [f"{seeds} seeds"] if seeds > 1 else []
    tokens = entry.get("mean_tokens")
    spent = f" / {tokens:.1f} tok" if tokens is not None and tokens == tokens else ""
    return f"{entry['accuracy']:.1f}%{spent}" + (f" ({', '.join(rests_on)})" if rests_on else "")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ]
    return "\n".join(lines)


@dataclass
class Summary:
    points: list[list[str]]
    records: list[PointRecord | None]

    @property
    def counts(self) -> dict[str, int]:
        statuses = [record.status if record else NO_RESULT for record in self.records]
        return {
            RAN: statuses.count(RAN),
            SKIPPED: statuses.count(SKIPPED),
            FAILED: sum(status not in (RAN, SKIPPED) for status in statuses),
        }

    @property
    def failed(self) -> int:
        return self.counts[FAILED]

    def headline_line(self) -> str:
        counts = self.counts
        return f"{len(self.points)} points: {counts[RAN]} ran, {counts[SKIPPED]} skipped, {counts[FAILED]} failed"

    def render(self) -> str:
        keys = swept_keys(self.points) or ["point"]
        merged_benchmarks = list(
            dict.fromkeys(
                entry["benchmark"]
                for record in self.records
                if record is not None
                for entry in record.headline
                if entry["model"] == "merged"
            )
        )
        header = [*keys, "status", *(f"merged: {benchmark}" for benchmark in merged_benchmarks), "note"]
        rows = []
        for point, record in zip(self.points, self.records, strict=True):
            values = dict(map(_split, point))
            cells = [values.get(key, "-") for key in keys] if keys != ["point"] else [" ".join(point) or "-"]
            numbers = {e["benchmark"]: e for e in (record.headline if record else []) if e["model"] == "merged"}
            cells.append(record.status if record else NO_RESULT)
            cells += [headline_cell(numbers[b]) if b in numbers else "-" for b in merged_benchmarks]
            cells.append(_note(record))
            rows.append(cells)
        parts = [self.headline_line(), _table(header, rows)]
        inputs = self.input_models()
        if inputs:
            parts.append("input models: " + "; ".join(inputs))
        return "\n".join(parts)

    def input_models(self) -> list[str]:
        """The base and fine-tuned models' numbers, each distinct result once (usually one per model)."""
        cells = [
            f"{entry['model']} {entry['benchmark']} {headline_cell(entry)}"
            for record in self.records
            for entry in (record.headline if record else [])
            if entry["model"] != "merged"
        ]
        return list(dict.fromkeys(cells))


def _note(record: PointRecord | None) -> str:
    if record is None:
        return "no record: the point did not run, or its task died before writing one (see its log)"
    if record.status in (RAN, SKIPPED):
        return "complete results already recorded" if record.status == SKIPPED else ""
    text = record.cause or "" if record.status == INTERRUPTED else f"{record.stage or 'the run'} failed: {record.cause}"
    return text if len(text) <= NOTE_WIDTH else text[: NOTE_WIDTH - 3] + "..."


def summarize(points: Sequence[Sequence[str]], directory: Path, since: float | None = None) -> Summary:
    """Each point's latest record under ``directory`` (finished after ``since`` when given)."""
    latest: dict[tuple[str, ...], PointRecord] = {}
    for record in read_records(directory):
        if since is not None and record.finished < since:
            continue
        if record.key not in latest or record.finished >= latest[record.key].finished:
            latest[record.key] = record
    points = [list(point) for point in points]
    return Summary(points, [latest.get(tuple(sorted(point))) for point in points])


def finish_active_sweep(*, report_failures: bool = True) -> int | None:
    """Print the summary of the sweep this process ran; its exit status (None: no sweep ran).
    ``report_failures``: also the one stderr line saying how many points failed."""
    if ACTIVE is None:
        return None
    summary = summarize(ACTIVE.points, ACTIVE.directory, since=ACTIVE.started)
    print(summary.render(), flush=True)
    if summary.failed and report_failures:
        print(
            f"acm_exp: error: {summary.failed} of {len(summary.points)} sweep points failed (above); rerun the "
            "same command to run only the failed and missing points again",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_POINTS_FAILED
    return 0


# ---------------------------------------------------------------------------------------------
# python -m acm_exp.sweep


def points_from_file(path: Path, extra: Sequence[str]) -> list[list[str]]:
    """The points of a slurm/array.sbatch sweep file (one line of overrides each; blank lines and #
    comments skipped), each followed by the overrides given for every line."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [[*shlex.split(line), *extra] for line in lines if line and not line.startswith("#")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m acm_exp.sweep",
        description="Summarise a sweep from the point records of its run directories: one line of counts, "
        "then one row per point (swept values, status, the merged model's accuracy and mean tokens). "
        "Exit status 1 when a point failed or has no record.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory (hydra.sweep.dir)")
    parser.add_argument(
        "--points",
        type=Path,
        help="the sweep file of a slurm/array.sbatch array (its lines are the points); default: every recorded point",
    )
    parser.add_argument("overrides", nargs="*", help="overrides given for every line of the sweep file (after --)")
    options = parser.parse_intermixed_args(argv)
    if options.points is not None:
        points = points_from_file(options.points, options.overrides)
    else:
        points = [record.overrides for record in read_records(options.sweep_dir)]
        points = [list(key) for key in dict.fromkeys(tuple(point) for point in points)]
    if not points:
        print(f"acm_exp.sweep: error: no sweep points recorded under {options.sweep_dir}", file=sys.stderr)
        return 2
    summary = summarize(points, options.sweep_dir)
    print(summary.render())
    return EXIT_POINTS_FAILED if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
