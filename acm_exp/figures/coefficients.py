"""(e) ACM's layer-wise coefficients: λ per capture point, read from the runs' coefficients.json."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from acm_exp.coefficients_file import LAMBDA_COLUMNS, AcmCoefficientsFile, read_coefficients
from acm_exp.errors import DataError
from acm_exp.figures.entries import Entries, merged_info, plain_method
from acm_exp.figures.output import RC_PARAMS, MissingRuns, new_figure, save_figure, write_csv


def lambda_frame(coefficients: AcmCoefficientsFile) -> pd.DataFrame:
    """λ per compared model and capture point: columns model, point, position (embedding 0,
    decoder layer i at i + 1, final norm, lm_head), lambda."""
    return pd.DataFrame(coefficients.lambda_rows(), columns=list(LAMBDA_COLUMNS))


def write_layer_coefficients(entries: Entries, out_dir: Path) -> tuple[Path, ...]:
    merged = merged_info(entries)
    # ACM methods (those weighting a plain method) write λ; Sens-Merging's coefficients.json holds
    # other per-layer weights.
    is_acm = merged["method"].map(lambda method: plain_method(str(method)) is not None)
    with_path = merged[merged["coefficients_path"].notna() & is_acm]
    frames, problems = [], []
    for _entry, row in with_path.iterrows():
        path = Path(str(row["coefficients_path"])).with_suffix(".json")
        try:
            coefficients = lambda_frame(read_coefficients(path, AcmCoefficientsFile))
        except DataError as error:
            problems.append(str(error))
            continue
        frames.append(coefficients.assign(model_pair=row["pair"], label=row["label"], t=row["t"], _order=row["order"]))
    if not frames:
        detail = f"; unreadable: {'; '.join(problems)}" if problems else ""
        raise MissingRuns(
            f"layer coefficients: needs ACM runs whose coefficients_path points to a readable "
            f"coefficients.json; found {len(with_path)} of {len(merged)} merged runs with a path"
            f"{detail}"
        )
    for problem in problems:
        print(f"layer coefficients: skipped unreadable {problem}", file=sys.stderr)
    data = pd.concat(frames).sort_values(["_order", "model", "position"], kind="mergesort")
    data = data[["model_pair", "label", "t", "model", "point", "position", "lambda"]].reset_index(drop=True)
    csv = write_csv(data, out_dir / "layer_coefficients.csv")
    return (csv, *plot_coefficients(data, stem=out_dir / "layer_coefficients"))


def plot_coefficients(data: pd.DataFrame, *, stem: Path) -> tuple[Path, Path]:
    import matplotlib

    with matplotlib.rc_context(RC_PARAMS):
        figure, (axis,) = new_figure(1, width=6.0, height=3.2)
        several_pairs = data["model_pair"].nunique() > 1
        several_models = data["model"].nunique() > 1
        for (pair, label, model), line in data.groupby(["model_pair", "label", "model"], sort=False):
            name = (f"{pair}: " if several_pairs else "") + label + (f" [{model}]" if several_models else "")
            axis.plot(line["position"], line["lambda"], marker="o", label=name)
        ticks = data.drop_duplicates("position").sort_values("position")
        step = max(1, len(ticks) // 16)  # keep 28- and 64-layer models readable
        shown = ticks.iloc[::step]
        axis.set_xticks(
            shown["position"], [p.replace("layers.", "") for p in shown["point"]], rotation=45, fontsize="small"
        )
        axis.set_xlabel("capture point (embedding, decoder layer, final norm, lm_head)")
        axis.set_ylabel("λ")
        axis.legend(fontsize="small")
        axis.set_title("Layer-wise ACM coefficients")
        return save_figure(figure, stem)
