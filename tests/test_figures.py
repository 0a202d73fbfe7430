"""Paper tables and figures from a constructed results table: exact numbers, files, determinism."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from acm_exp import figures, results
from acm_exp.coefficients_file import AcmCoefficientsFile, write_coefficients

REPO = Path(__file__).resolve().parent.parent
FINISHED = "2025-01-01T01:00:00+00:00"
ACM = {
    "k": 0.8,
    "scale": 1.0,
    "shift": "per_point_max",
    "reduce": "mean_of_sigmoids",
    "acm_against": "finetuned",
    "estimator": "discrete",
    "calibration": "s1k",
    "calibration_selection": "cluster",
    "num_clusters": 20,
    "per_cluster": 5,
    "include_solution": False,
}


def write_run(results_dir: Path, run_id: str, method: str, models: dict, seeds=(0,), n=10, **config) -> None:
    """``models[(label, role)] = {benchmark: (accuracy, tokens)}`` at seed 0; seed s adds s and 10 s."""
    size = results.calibration_size(
        config.get("calibration_selection"),
        config.get("num_clusters"),
        config.get("per_cluster"),
        config.get("num_samples"),
    )
    rows = []
    for (model, role), by_benchmark in models.items():
        for benchmark, (accuracy, tokens) in by_benchmark.items():
            for seed in seeds:
                row = dict.fromkeys(results.COLUMNS)
                row.update(
                    run_id=run_id,
                    model_pair="toy",
                    base_model="toy:base",
                    finetuned_models="toy:finetuned",
                    method=method,
                    config_hash=f"hash-{run_id}",
                    git_commit="c",
                    finished_at=FINISHED,
                    model=model,
                    role=role,
                    benchmark=benchmark,
                    seed=seed,
                    accuracy=accuracy + seed,
                    mean_tokens=tokens + 10 * seed,
                    n=n,
                    calibration_samples=size,
                    **config,
                )
                rows.append(row)
    results.write_rows(results_dir, rows)


def acm_lambdas(lambdas: dict[str, float], t: float = 0.7, model: str = "finetuned[0]") -> AcmCoefficientsFile:
    """What ACM writes for one compared model with these λ (two calibration samples of MI 1)."""
    return AcmCoefficientsFile(
        t=t,
        shift="per_point_max",
        reduce="mean_of_sigmoids",
        point_names=tuple(lambdas),
        model_names=(model,),
        lambdas=np.array([list(lambdas.values())]),
        mi_per_sample=np.ones((1, len(lambdas), 2)),
    )


def merged(gsm8k: tuple[float, float], math500: tuple[float, float]) -> dict:
    return {("merged", "merged"): {"gsm8k": gsm8k, "math500": math500}}


@pytest.fixture(scope="module")
def paper_table(tmp_path_factory) -> Path:
    """Inputs and TIES over two seeds; an ACM-TIES t sweep and calibration ablations over one seed."""
    tmp_path = tmp_path_factory.mktemp("paper")
    directory = tmp_path / "results"
    inputs = {
        ("base", "base"): {"gsm8k": (70.0, 200.0), "math500": (40.0, 400.0)},
        ("finetuned[0]", "finetuned"): {"gsm8k": (90.0, 1000.0), "math500": (80.0, 3000.0)},
    }
    write_run(
        directory, "ties", "ties", {**inputs, **merged((86.0, 500.0), (74.0, 1500.0))}, seeds=(0, 1), k=0.8, scale=1.0
    )
    # Points out of plot order: the figure orders them.
    coefficients = write_coefficients(
        tmp_path / "run-t05" / "coefficients.json",
        acm_lambdas({"lm_head": 0.1, "layers.1": 0.6, "embed_tokens": 0.3, "norm": 0.2, "layers.0": 0.5}, t=0.5),
    )
    write_run(
        directory,
        "t05",
        "acm_ties",
        merged((88.0, 450.0), (76.0, 1350.0)),
        t=0.5,
        coefficients_path=str(coefficients),
        **ACM,
    )
    write_run(directory, "t09", "acm_ties", merged((87.0, 400.0), (75.0, 1200.0)), t=0.9, **ACM)
    write_run(directory, "t07", "acm_ties", merged((89.0, 420.0), (77.0, 1280.0)), t=0.7, **ACM)
    write_run(directory, "pc2", "acm_ties", merged((85.0, 600.0), (70.0, 1600.0)), t=0.7, **{**ACM, "per_cluster": 2})
    write_run(
        directory,
        "k10",
        "acm_ties",
        merged((84.0, 610.0), (71.0, 1610.0)),
        t=0.7,
        **{**ACM, "num_clusters": 10, "per_cluster": 10},
    )
    write_run(
        directory,
        "random",
        "acm_ties",
        merged((83.0, 620.0), (69.0, 1620.0)),
        t=0.7,
        **{**ACM, "calibration_selection": "random"},
    )
    return directory


def make(results_dir: Path, out: Path) -> list[figures.Outcome]:
    return figures.make_figures(results.load_results(results_dir), out)


@pytest.fixture(scope="module")
def paper_outputs(paper_table, tmp_path_factory) -> tuple[Path, list[figures.Outcome]]:
    out = tmp_path_factory.mktemp("figures")
    return out, make(paper_table, out)


def test_main_table_numbers(paper_outputs):
    out, _ = paper_outputs
    table = pd.read_csv(out / "main_table.csv")
    assert list(table["method"]) == [
        "base",
        "finetuned",
        "TIES",
        "ACM-TIES (t=0.5, selection=cluster, clusters=20, per_cluster=5)",
        "ACM-TIES (t=0.7, selection=cluster, clusters=10, per_cluster=10)",
        "ACM-TIES (t=0.7, selection=cluster, clusters=20, per_cluster=2)",
        "ACM-TIES (t=0.7, selection=cluster, clusters=20, per_cluster=5)",
        "ACM-TIES (t=0.7, selection=random, clusters=20, per_cluster=5)",
        "ACM-TIES (t=0.9, selection=cluster, clusters=20, per_cluster=5)",
    ]
    rows = table.set_index("method")
    base = rows.loc["base"]
    assert (base["gsm8k_accuracy"], base["gsm8k_tokens"], base["math500_accuracy"]) == (70.5, 205.0, 40.5)
    assert base["gsm8k_accuracy_std"] == pytest.approx(0.5**0.5)
    assert (base["avg_accuracy"], base["avg_tokens"], base["seeds"]) == (55.5, 305.0, 2)
    assert base["relative_length"] == pytest.approx(100 * (305 - 2005) / 2005)
    assert rows.loc["finetuned", "relative_length"] == 0.0
    ties = rows.loc["TIES"]
    assert (ties["avg_accuracy"], ties["avg_tokens"]) == (80.5, 1005.0)
    assert ties["relative_length"] == pytest.approx(100 * (1005 - 2005) / 2005)
    acm = rows.loc["ACM-TIES (t=0.5, selection=cluster, clusters=20, per_cluster=5)"]
    assert (acm["gsm8k_accuracy"], acm["math500_tokens"], acm["avg_accuracy"], acm["avg_tokens"]) == (88, 1350, 82, 900)
    assert pd.isna(acm["avg_accuracy_std"]) and acm["seeds"] == 1
    markdown = (out / "main_table.md").read_text()
    assert "| base " in markdown and "70.5±0.7 (205)" in markdown and "55.5±0.7 (305)" in markdown
    assert "| TIES " in markdown and "-49.9%" in markdown and "88.0 (450)" in markdown
    latex = (out / "main_table.tex").read_text()
    assert r"70.5$\pm$0.7 (205)" in latex and r"-49.9\%" in latex and r"per\_cluster=5" in latex


def test_sweep_figures_numbers(paper_outputs):
    out, outcomes = paper_outputs
    assert all(o.message is None for o in outcomes), [o.message for o in outcomes]
    t_sweep = pd.read_csv(out / "t_sensitivity.csv")
    assert t_sweep[["series", "t", "avg_accuracy", "avg_tokens"]].values.tolist() == [
        ["ACM-TIES", 0.5, 82.0, 900.0],
        ["ACM-TIES", 0.7, 83.0, 850.0],
        ["ACM-TIES", 0.9, 81.0, 800.0],
    ]
    assert set(t_sweep["benchmarks"]) == {"gsm8k math500"}
    size = pd.read_csv(out / "calibration_size.csv")
    assert size[["calibration_samples", "avg_accuracy", "avg_tokens"]].values.tolist() == [
        [40, 77.5, 1100],
        [100, 83.0, 850],
    ]
    clusters = pd.read_csv(out / "cluster_count.csv")
    assert clusters[["selection", "avg_accuracy", "avg_tokens"]].values.tolist() == [
        ["random", 76.0, 1120.0],
        ["10 clusters", 77.5, 1110.0],
        ["20 clusters", 83.0, 850.0],
    ]
    layers = pd.read_csv(out / "layer_coefficients.csv")
    assert layers[["point", "position", "lambda"]].values.tolist() == [
        ["embed_tokens", 0, 0.3],
        ["layers.0", 1, 0.5],
        ["layers.1", 2, 0.6],
        ["norm", 3, 0.2],
        ["lm_head", 4, 0.1],
    ]
    assert set(layers["t"]) == {0.5}
    pareto = pd.read_csv(out / "pareto.csv").set_index("method")
    front = sorted(pareto.index[pareto["on_frontier"]], key=lambda m: pareto.loc[m, "avg_tokens"])
    assert front == [
        "base",
        "ACM-TIES (t=0.9, selection=cluster, clusters=20, per_cluster=5)",
        "ACM-TIES (t=0.7, selection=cluster, clusters=20, per_cluster=5)",
        "finetuned",
    ]
    assert len(pareto) == 9


def test_every_figure_is_written_as_png_and_pdf(paper_outputs):
    out, outcomes = paper_outputs
    assert [o.name for o in outcomes] == list(figures.FIGURES)
    for name in set(figures.FIGURES) - {"main_table", "significance"}:
        assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    for suffix in ("csv", "md", "tex"):
        assert (out / f"main_table.{suffix}").stat().st_size > 0


def test_outputs_are_byte_identical_across_runs(paper_table, paper_outputs, tmp_path):
    first, _ = paper_outputs
    make(paper_table, tmp_path / "second")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "second").iterdir()) and len(names) == 26
    for name in names:
        assert (first / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name


def test_missing_runs_are_named_and_the_rest_is_written(tmp_path):
    directory = tmp_path / "results"
    write_run(
        directory,
        "ties",
        "ties",
        {("finetuned[0]", "finetuned"): {"gsm8k": (90.0, 1000.0)}, **{("merged", "merged"): {"gsm8k": (80.0, 500.0)}}},
        k=0.8,
        scale=1.0,
    )
    write_run(directory, "t07", "acm_ties", {("merged", "merged"): {"gsm8k": (85.0, 450.0)}}, t=0.7, **ACM)
    outcomes = {o.name: o for o in make(directory, tmp_path / "out")}
    assert outcomes["main_table"].files and outcomes["pareto"].files
    assert outcomes["t_sensitivity"].message == (
        "t-sensitivity: needs ACM runs with at least 2 distinct t values (otherwise identical configs, common "
        "benchmarks); found t=[0.7]"
    )
    assert "calibration-size: needs" in outcomes["calibration_size"].message
    assert "found calibration_samples=[100]" in outcomes["calibration_size"].message
    assert "found selection=[cluster], num_clusters=[20]" in outcomes["cluster_count"].message
    assert "layer coefficients: needs" in outcomes["layer_coefficients"].message
    assert "found 0 of 2 merged runs with a path" in outcomes["layer_coefficients"].message
    ties_only = {
        o.name: o for o in figures.make_figures(results.load_results(directory, method="ties"), tmp_path / "out2")
    }
    assert ties_only["t_sensitivity"].message.endswith("found no merged runs that use t")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "acm_exp.figures", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


def test_command_line_filters_and_exit_codes(paper_table, tmp_path):
    partial = run_cli(
        f"results_dir={paper_table}", f"out={tmp_path / 'ties'}", "method=ties", "--only", "main_table,t_sensitivity"
    )
    assert partial.returncode == 0, partial.stderr
    assert "main_table:" in partial.stdout and "skipped t-sensitivity: needs" in partial.stderr
    assert pd.read_csv(tmp_path / "ties" / "main_table.csv")["method"].tolist() == ["base", "finetuned", "TIES"]
    nothing = run_cli(f"results_dir={tmp_path / 'empty'}", f"out={tmp_path / 'none'}")
    assert nothing.returncode == 1 and "no results in" in nothing.stderr
    only_missing = run_cli(
        f"results_dir={paper_table}", f"out={tmp_path / 'x'}", "method=ties", "--only", "t_sensitivity"
    )
    assert only_missing.returncode == 1
    unknown = run_cli(f"results_dir={paper_table}", "metod=ties")
    assert unknown.returncode == 2 and "unknown results column 'metod'" in unknown.stderr


def test_layer_coefficients_read_the_file_acm_writes_and_name_a_bad_one(tmp_path, capsys):
    directory = tmp_path / "results"
    good = write_coefficients(tmp_path / "good" / "coefficients.json", acm_lambdas({"layers.0": 0.4, "norm": 0.9}))
    loose = tmp_path / "loose" / "coefficients.json"
    loose.parent.mkdir()
    loose.write_text(json.dumps({"models": {"ft": {"model.layers.0.mlp": 0.7}}}))
    for run_id, path in (("good", good), ("loose", loose)):
        write_run(
            directory, run_id, "acm_ties", merged((85.0, 450.0), (75.0, 900.0)), t=0.7, coefficients_path=str(path)
        )
    (outcome,) = figures.make_figures(results.load_results(directory), tmp_path / "out", only=["layer_coefficients"])
    assert outcome.files
    layers = pd.read_csv(tmp_path / "out" / "layer_coefficients.csv")
    assert layers[["point", "position", "lambda"]].values.tolist() == [["layers.0", 1, 0.4], ["norm", 2, 0.9]]
    assert f"skipped unreadable coefficients file {loose} has keys ['models']" in capsys.readouterr().err


def test_pareto_front():
    assert figures.pareto_front([100, 200, 150, 300, 300], [50, 60, 40, 70, 65]) == [True, True, False, True, False]


# ---------------------------------------------------------------------------------------------
# Significance of ACM against its base method

# Per benchmark and seed, per question q0..: correct or not. ACM-TIES wins 4 GSM8K questions
# (q4, q5, q6 on both seeds or one, q7 on one seed) and loses none; MATH500 is identical.
TIES_SAMPLES = {
    "gsm8k": {0: [1, 1, 1, 1, 1, 0, 0, 0, 0, 0], 1: [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]},
    "math500": {0: [1, 1, 0, 0, 1, 0, 1, 0], 1: [1, 1, 0, 0, 1, 0, 1, 0]},
}
ACM_SAMPLES = {
    "gsm8k": {0: [1, 1, 1, 1, 1, 1, 1, 1, 0, 0], 1: [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]},
    "math500": {0: [1, 1, 0, 0, 1, 0, 1, 0], 1: [1, 1, 0, 0, 1, 0, 1, 0]},
}


def write_samples_run(results_dir: Path, run_dir: Path, run_id: str, method: str, samples: dict, **config) -> None:
    """One merged model, 2 seeds; per (benchmark, seed) a samples file (seed 1 in reverse order:
    questions are matched by id) and a results row with its accuracy and samples_path."""
    rows = []
    for benchmark, by_seed in samples.items():
        for seed, correct in by_seed.items():
            path = run_dir / "samples" / f"{benchmark}__seed{seed}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            records = [
                {"id": f"q{i}", "seed": seed, "prompt": f"question {i}", "correct": bool(c)}
                for i, c in enumerate(correct)
            ]
            path.write_text("".join(json.dumps(r) + "\n" for r in (records[::-1] if seed else records)))
            row = dict.fromkeys(results.COLUMNS)
            row.update(
                run_id=run_id,
                model_pair="toy",
                base_model="toy:base",
                finetuned_models="toy:finetuned",
                method=method,
                config_hash=f"hash-{run_id}",
                git_commit="c",
                finished_at=FINISHED,
                model="merged",
                role="merged",
                benchmark=benchmark,
                seed=seed,
                accuracy=100 * sum(correct) / len(correct),
                mean_tokens=100.0,
                n=len(correct),
                samples_path=str(path),
                **config,
            )
            rows.append(row)
    results.write_rows(results_dir, rows)


@pytest.fixture()
def significance_table(tmp_path) -> Path:
    directory = tmp_path / "results"
    write_samples_run(directory, tmp_path / "run-ties", "ties", "ties", TIES_SAMPLES, k=0.8, scale=1.0)
    write_samples_run(directory, tmp_path / "run-acm", "acm", "acm_ties", ACM_SAMPLES, t=0.7, **ACM)
    return directory


def mean_over_seeds(by_seed: dict) -> list[float]:
    return [sum(values) / len(values) for values in zip(*by_seed.values(), strict=False)]


def test_significance_table_numbers(significance_table, tmp_path):
    from acm_exp import significance

    outcomes = {o.name: o for o in make(significance_table, tmp_path / "out")}
    out = tmp_path / "out"
    assert {out / f"significance.{s}" for s in ("csv", "md", "tex")} == set(outcomes["significance"].files)
    table = pd.read_csv(out / "significance.csv", keep_default_na=False, na_values=[""])
    assert list(table.columns) == list(figures.SIGNIFICANCE_COLUMNS)
    assert table[["acm", "base", "benchmark"]].values.tolist() == [
        ["ACM-TIES", "TIES", "gsm8k"],
        ["ACM-TIES", "TIES", "math500"],
        ["ACM-TIES", "TIES", "average"],
    ]
    gsm8k, math500, average = (row for _, row in table.iterrows())
    # GSM8K, per question mean over seeds: ACM 1,1,1,1,1,1,1,.5,0,0 (75 %), TIES 1,1,1,1,.5,0,0,0,0,0 (45 %).
    assert (gsm8k["n"], gsm8k["acm_accuracy"], gsm8k["base_accuracy"]) == (10, 75.0, 45.0)
    assert (gsm8k["difference"], gsm8k["wins"], gsm8k["losses"]) == (pytest.approx(30.0), 4, 0)
    assert gsm8k["sign_p"] == pytest.approx(2 * 0.5**4)
    acm_gsm8k, ties_gsm8k = mean_over_seeds(ACM_SAMPLES["gsm8k"]), mean_over_seeds(TIES_SAMPLES["gsm8k"])
    assert gsm8k["bootstrap_p"] == significance.paired_bootstrap_pvalue(acm_gsm8k, ties_gsm8k, seed=0)
    assert 0.0 < gsm8k["bootstrap_p"] < 0.1
    # MATH500: the same answers, so no evidence at all.
    assert (math500["n"], math500["acm_accuracy"], math500["difference"]) == (8, 50.0, 0.0)
    assert (math500["bootstrap_p"], math500["sign_p"], math500["wins"], math500["losses"]) == (1.0, 1.0, 0, 0)
    # Average: mean of the per-benchmark accuracies, bootstrap within benchmarks, pooled sign test.
    assert (average["n"], average["acm_accuracy"], average["base_accuracy"]) == (18, 62.5, 47.5)
    assert (average["difference"], average["sign_p"]) == (pytest.approx(15.0), pytest.approx(0.125))
    acm_math, ties_math = mean_over_seeds(ACM_SAMPLES["math500"]), mean_over_seeds(TIES_SAMPLES["math500"])
    assert average["bootstrap_p"] == significance.paired_bootstrap_pvalue(
        acm_gsm8k + acm_math, ties_gsm8k + ties_math, seed=0, strata=["gsm8k"] * 10 + ["math500"] * 8
    )
    assert set(table["note"].fillna("")) == {""}
    main = pd.read_csv(out / "main_table.csv").set_index("method")
    assert main.loc["ACM-TIES", "p_vs_base"] == average["bootstrap_p"] and pd.isna(main.loc["TIES", "p_vs_base"])
    markdown = (out / "significance.md").read_text()
    assert "| ACM-TIES | TIES   | GSM8K       |  10 |       75.0 |        45.0 |        +30.0 |" in markdown
    assert "| MATH500     |   8 |       50.0 |        50.0 |          0.0 |           1.000 |      1.000 |" in markdown
    assert "| Avg.        |  18 |       62.5 |" in markdown and " 4/0 |" in markdown and "Note" not in markdown
    assert r"\begin{tabular}{lllrrrrrrr}" in (out / "significance.tex").read_text()
    main_markdown = (out / "main_table.md").read_text()
    assert "p vs base" in main_markdown and f"| {average['bootstrap_p']:.3f} " in main_markdown


def test_significance_outputs_are_byte_identical(significance_table, tmp_path):
    make(significance_table, tmp_path / "a")
    make(significance_table, tmp_path / "b")
    for name in ("significance.csv", "significance.md", "significance.tex", "main_table.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_missing_samples_leave_the_p_value_empty_and_are_logged_once(significance_table, tmp_path, caplog):
    missing = tmp_path / "run-acm" / "samples" / "gsm8k__seed1.jsonl"
    missing.unlink()
    with caplog.at_level("WARNING", logger="acm_exp.figures"):
        outcomes = {o.name: o for o in make(significance_table, tmp_path / "out")}
    assert outcomes["main_table"].files
    table = pd.read_csv(tmp_path / "out" / "significance.csv", keep_default_na=False, na_values=[""])
    rows = table.set_index("benchmark")
    assert pd.isna(rows.loc["gsm8k", "bootstrap_p"]) and pd.isna(rows.loc["gsm8k", "n"])
    assert rows.loc["gsm8k", "note"] == figures.NO_SAMPLES
    assert pd.isna(rows.loc["average", "bootstrap_p"]) and rows.loc["average", "note"] == figures.NO_SAMPLES
    assert rows.loc["math500", "bootstrap_p"] == 1.0  # the benchmark with its samples is still tested
    warnings = [r.getMessage() for r in caplog.records if "significance" in r.getMessage()]
    assert len(warnings) == 1 and str(missing) in warnings[0] and "does not exist" in warnings[0]
    assert "\n" not in warnings[0]
    main = pd.read_csv(tmp_path / "out" / "main_table.csv").set_index("method")
    assert pd.isna(main.loc["ACM-TIES", "p_vs_base"])
    assert "no per-question samples" in (tmp_path / "out" / "significance.md").read_text()


def test_results_without_samples_paths_still_write_every_table(paper_outputs):
    out, outcomes = paper_outputs
    table = pd.read_csv(out / "significance.csv", keep_default_na=False, na_values=[""])
    assert len(table) == 6 * 3 and table["bootstrap_p"].isna().all()  # 6 ACM-TIES rows vs TIES, 2 benchmarks + avg
    assert set(table["base"]) == {"TIES"} and set(table["note"]) == {figures.NO_SAMPLES}
    assert "p vs base" in (out / "main_table.md").read_text()


def test_base_entry_is_the_one_sharing_hyper_parameters(tmp_path):
    directory = tmp_path / "results"
    gsm8k = {("merged", "merged"): {"gsm8k": (80.0, 500.0)}}
    write_run(directory, "ties08", "ties", gsm8k, k=0.8, scale=1.0)
    write_run(directory, "ties02", "ties", gsm8k, k=0.2, scale=1.0)
    write_run(directory, "ta", "task_arithmetic", gsm8k, scale=1.0)
    write_run(directory, "acm08", "acm_ties", gsm8k, t=0.7, **ACM)  # k=0.8
    write_run(directory, "acm05", "acm_ties", gsm8k, t=0.7, **{**ACM, "k": 0.5})
    write_run(directory, "acm_ta", "acm_ta", gsm8k, t=0.7, scale=0.7)
    info = figures.build_entries(results.load_results(directory)).info
    matches = [(info.loc[a, "config_hash"], info.loc[b, "config_hash"]) for a, b in figures.base_matches(info)]
    # k=0.8 finds its TIES; k=0.5 has none with its k and is compared with both; ACM-TA with TA
    # although their scales differ (the only TA entry).
    assert sorted(matches) == sorted(
        [
            ("hash-acm08", "hash-ties08"),
            ("hash-acm05", "hash-ties02"),
            ("hash-acm05", "hash-ties08"),
            ("hash-acm_ta", "hash-ta"),
        ]
    )


def test_no_base_method_entry_writes_no_significance_table(tmp_path):
    directory = tmp_path / "results"
    write_run(directory, "t07", "acm_ties", {("merged", "merged"): {"gsm8k": (85.0, 450.0)}}, t=0.7, **ACM)
    outcomes = {o.name: o for o in make(directory, tmp_path / "out")}
    assert outcomes["main_table"].files and not (tmp_path / "out" / "significance.csv").exists()
    assert "p vs base" not in (tmp_path / "out" / "main_table.md").read_text()
    # Skipped in one line saying why, as every other figure.
    assert outcomes["significance"].message == (
        "significance: needs an ACM run and a run of the method it weights (e.g. ACM-TIES and TIES) of the same "
        "model pair on a common benchmark; found ACM methods ['acm_ties'] and methods ['acm_ties']"
    )


def test_method_labels_follow_the_paper():
    assert figures.method_label("acm_ties") == "ACM-TIES"
    assert figures.method_label("aim", "ties") == "AIM-TIES"
    assert figures.method_label("aim", "task_arithmetic") == "AIM-TA"
    assert figures.method_label("sens") == "Sens-Merging"


def test_the_method_order_names_registered_methods():
    from acm_exp.figures.entries import METHOD_ORDER
    from acm_exp.merge.registry import registered_methods

    assert set(METHOD_ORDER) <= set(registered_methods())


def test_layer_coefficients_leave_out_sens_merging_weights(tmp_path, capsys):
    directory = tmp_path / "results"
    sens_json = tmp_path / "sens" / "coefficients.json"
    sens_json.parent.mkdir()
    sens_json.write_text(json.dumps({"method": "sens", "layers": [{"layer": 0, "c_base": 0.9, "c_ft": 1.1}]}))
    write_run(
        directory,
        "sens",
        "sens",
        merged((80.0, 500.0), (70.0, 900.0)),
        alpha=0.7,
        temperature=2.0,
        coefficients_path=str(sens_json),
    )
    outcome = {o.name: o for o in make(directory, tmp_path / "out")}["layer_coefficients"]
    assert "found 0 of 1 merged runs with a path" in outcome.message
    assert "unreadable" not in outcome.message + capsys.readouterr().err


def test_cost_table_from_the_results_is_exact_and_deterministic(tmp_path):
    directory = tmp_path / "results"
    inputs = {("finetuned[0]", "finetuned"): {"gsm8k": (90.0, 1000.0)}}
    costs = {
        "ties": dict(merge_s=2.0, eval_tokens_per_s=50.0),
        "acm_ties": dict(
            coefficients_s=0.5,
            coefficients_cached=True,
            coefficients_original_s=30.0,
            coefficients_original_peak_rss_gb=1.5,
            merge_s=2.5,
            eval_tokens_per_s=48.0,
        ),
        "sens": dict(coefficients_s=90.0, coefficients_peak_rss_gb=3.0, merge_s=2.2, eval_tokens_per_s=49.0),
    }
    for method, cost in costs.items():
        write_run(directory, method, method, {**inputs, **merged((80.0, 500.0), (70.0, 900.0))}, **cost)
    # A second ACM-TIES run of the same entry: the median of the two original times is reported.
    write_run(
        directory,
        "acm_ties_again",
        "acm_ties",
        merged((80.0, 500.0), (70.0, 900.0)),
        **{**costs["acm_ties"], "coefficients_original_s": 34.0},
    )
    table = results.load_results(directory)
    for out in (tmp_path / "a", tmp_path / "b"):
        (outcome,) = figures.make_figures(table, out, only=["cost_table"])
        assert {p.name for p in outcome.files} == {
            "cost_table.csv",
            "cost_table.md",
            "cost_table.tex",
            "cost_table.png",
            "cost_table.pdf",
        }
    for name in ("cost_table.csv", "cost_table.md", "cost_table.tex", "cost_table.png", "cost_table.pdf"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    frame = pd.read_csv(tmp_path / "a" / "cost_table.csv").set_index("label")
    assert list(frame.index) == ["TIES", "Sens-Merging", "ACM-TIES"]  # the paper's method order
    assert frame.loc["TIES", "coefficient time [s]"] == 0.0  # no calibration pass: zero, not unknown
    assert frame.loc["ACM-TIES", "coefficient time [s]"] == 32.0  # cached runs report the original cost
    assert frame.loc["ACM-TIES", "coefficient peak memory [GB]"] == 1.5
    assert frame.loc["Sens-Merging", "coefficient time [s]"] == 90.0  # computed in the run itself
    assert frame.loc["TIES", "evaluation tokens/s"] == 50.0


# ---------------------------------------------------------------------------------------------
# What each number rests on: complete evaluations by default, subsets labelled with their n

INPUTS = {
    ("base", "base"): {"gsm8k": (70.0, 200.0)},
    ("finetuned[0]", "finetuned"): {"gsm8k": (90.0, 1000.0)},
}


@pytest.fixture()
def with_smoke_test(tmp_path) -> Path:
    """A complete TIES run (50 of 50 questions) and a smoke test of ACM-TIES (eval.limit=3)."""
    directory = tmp_path / "results"
    complete = dict(benchmark_size=50, subset=False)
    write_run(directory, "ties", "ties", {**INPUTS, **merged((86.0, 500.0), (74.0, 1500.0))}, n=50, **complete)
    smoke = dict(benchmark_size=50, subset=True, eval_limit=3)
    write_run(
        directory, "smoke", "acm_ties", {**INPUTS, **merged((33.3, 40.0), (66.7, 90.0))}, n=3, t=0.7, **ACM, **smoke
    )
    return directory


def test_subsets_are_left_out_by_default_and_named(with_smoke_test, tmp_path):
    outcomes = {o.name: o for o in make(with_smoke_test, tmp_path / "out")}
    table = pd.read_csv(tmp_path / "out" / "main_table.csv")
    assert table["method"].tolist() == ["base", "finetuned", "TIES"]
    assert table[["gsm8k_accuracy", "gsm8k_n", "math500_n"]].values.tolist()[2] == [86.0, 50, 50]
    assert table["base" == table["method"]]["gsm8k_accuracy"].tolist() == [70.0]  # not mixed with the n=3 row
    markdown = (tmp_path / "out" / "main_table.md").read_text()
    assert markdown.startswith("Cells: accuracy % (mean response tokens)")
    assert "| GSM8K (n=50) " in markdown and "(n=3)" not in markdown
    # A figure that only the smoke test could have drawn says so.
    assert outcomes["t_sensitivity"].message.endswith(
        "(left out 4 rows of subset evaluations (eval.limit): gsm8k n=3 of 50, math500 n=3 of 50; "
        "include_subsets=true shows them)"
    )


def test_include_subsets_shows_them_apart_labelled_with_their_n(with_smoke_test, tmp_path):
    figures.make_figures(results.load_results(with_smoke_test), tmp_path / "out", include_subsets=True)
    table = pd.read_csv(tmp_path / "out" / "main_table.csv")
    # The smoke test is a model pair of its own: never averaged, compared or plotted with the rest.
    assert table[["model_pair", "method"]].values.tolist() == [
        ["toy", "base"],
        ["toy", "finetuned"],
        ["toy", "TIES"],
        ["toy (eval.limit=3)", "base"],
        ["toy (eval.limit=3)", "finetuned"],
        ["toy (eval.limit=3)", "ACM-TIES"],
    ]
    rows = table.set_index(["model_pair", "method"])
    smoke = rows.loc[("toy (eval.limit=3)", "ACM-TIES")]
    # One column per (benchmark, n): 3-question numbers never share a column with 50-question ones.
    assert (smoke["gsm8k[n=3]_accuracy"], smoke["gsm8k[n=3]_n"]) == (33.3, 3)
    assert pd.isna(smoke["gsm8k[n=50]_accuracy"]) and pd.isna(rows.loc[("toy", "TIES"), "gsm8k[n=3]_accuracy"])
    # Its Avg. is over its own pair's evaluations (the fine-tuned model lacks MATH500 there: no Δ length).
    assert smoke["avg_over"] == "gsm8k[n=3] math500[n=3]" and smoke["avg_accuracy"] == pytest.approx(50.0)
    assert rows.loc[("toy", "TIES"), "avg_over"] == "gsm8k[n=50] math500[n=50]"
    markdown = (tmp_path / "out" / "main_table.md").read_text()
    header = markdown.splitlines()[2]
    assert header.index("GSM8K (n=50)") < header.index("GSM8K (n=3)") < header.index("MATH500 (n=50)")
    assert "| toy (eval.limit=3) | ACM-TIES " in markdown
    pareto = pd.read_csv(tmp_path / "out" / "pareto.csv")
    assert pareto.groupby("model_pair")["n"].unique().map(list).to_dict() == {"toy": [50], "toy (eval.limit=3)": [3]}
    assert set(pareto["benchmarks"]) == {"gsm8k[n=50]", "gsm8k[n=3]"}


def test_only_subsets_skip_every_figure_with_the_reason(tmp_path):
    directory = tmp_path / "results"
    write_run(directory, "smoke", "ties", merged((33.3, 40.0), (66.7, 90.0)), n=3, benchmark_size=50, subset=True)
    outcomes = make(directory, tmp_path / "out")
    assert not any(o.files for o in outcomes)
    assert outcomes[0].message == (
        "main_table: no complete evaluations in the table (left out 2 rows of subset evaluations (eval.limit): "
        "gsm8k n=3 of 50, math500 n=3 of 50; include_subsets=true shows them)"
    )
    assert all("\n" not in o.message for o in outcomes)


def test_every_table_states_its_cell_format(paper_outputs):
    out, _ = paper_outputs
    for name in ("main_table", "significance", "cost_table"):
        first = (out / f"{name}.md").read_text().splitlines()[0]
        assert first.startswith("Cells: "), name
        assert (out / f"{name}.tex").read_text().startswith("% Cells: "), name
    assert "accuracy % (mean response tokens)" in (out / "main_table.md").read_text()
    assert "n: the questions" in (out / "main_table.md").read_text()


def test_command_line_include_subsets(with_smoke_test, tmp_path):
    default = run_cli(f"results_dir={with_smoke_test}", f"out={tmp_path / 'a'}", "--only", "main_table")
    assert default.returncode == 0, default.stderr
    assert "left out 4 rows of subset evaluations" in default.stderr
    included = run_cli(
        f"results_dir={with_smoke_test}", f"out={tmp_path / 'b'}", "include_subsets=true", "--only", "main_table"
    )
    assert included.returncode == 0 and "left out" not in included.stderr
    assert "| toy (eval.limit=3) | ACM-TIES " in (tmp_path / "b" / "main_table.md").read_text()
    # Options and assignments in any order, as users type them.
    after_option = run_cli(
        f"results_dir={with_smoke_test}", "--only", "main_table", f"out={tmp_path / 'c'}", "include_subsets=true"
    )
    assert after_option.returncode == 0, after_option.stderr
    assert "| toy (eval.limit=3) | ACM-TIES " in (tmp_path / "c" / "main_table.md").read_text()
    bad = run_cli(f"results_dir={with_smoke_test}", "include_subsets=yes")
    assert bad.returncode == 2 and "include_subsets='yes'; expected true or false" in bad.stderr
