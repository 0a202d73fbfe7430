"""The paper's experiments as configs (conf/experiment/): every sweep point composes and validates,
each experiment regenerates what README.md's "Reproduce the paper" says and carries the paper's
models, benchmarks, method rows and hyper-parameters (arXiv 2505.14009 v1: Tables 1-5, Figures 2-6),
the baselines' settings are checked before any work, and each experiment runs end to end on the toy
pair (`model_pair=toy eval=toy`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from app_config import compose_config

from acm_exp.errors import ConfigError
from acm_exp.results import calibration_size, load_results
from acm_exp.stages import validate
from acm_exp.sweep import sweep_points

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted(path.stem for path in (REPO / "conf" / "experiment").glob("*.yaml"))
TOY = ("model_pair=toy", "eval=toy")
# LIMO is hub-only: on an offline machine the toy check compares s1K with the toy corpus instead.
OFFLINE_SWEEPS = {"calibration_source": ("hydra.sweeper.params.calibration='s1k,toy'", "calibration.max_tokens=64")}


def experiment_points(experiment: str, *overrides: str) -> list[list[str]]:
    """The overrides of every job that `python -m acm_exp -m +experiment=<name> ...` launches."""
    arguments = (f"+experiment={experiment}", *overrides)
    params = compose_config(*arguments, hydra_config=True).hydra.sweeper.params
    return sweep_points(params, arguments)


def test_every_experiment_is_a_sweep():
    assert set(EXPERIMENTS) == {
        "l2s_1p5b",
        "l2s_7b",
        "l2s_14b",
        "l2s_32b",
        "t_sensitivity",
        "calibration_size",
        "calibration_source",
        "clusters",
        "general_llama",
        "weight_coefficients",
    }
    for experiment in EXPERIMENTS:
        assert len(experiment_points(experiment)) > 1, experiment


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("pair", ["real", "toy"])
def test_every_sweep_point_composes_and_validates(experiment, pair):
    extra = TOY if pair == "toy" else ()
    for point in experiment_points(experiment, *extra):
        cfg = compose_config(*point)
        validate(cfg)
        if pair == "toy":
            assert cfg.model_pair.name == "toy" and cfg.eval.name == "toy", point


# ---------------------------------------------------------------------------------------------
# Against README.md's table and the paper

SIX_MATH = {"gsm8k", "math500", "minerva_math", "olympiadbench", "college_math", "aime24"}
# experiment -> (base model, fine-tuned models, benchmarks, the swept values), from the paper:
# Table 1 (7B), Table 2 + Figure 6 (1.5B), Table 4 + Table 7 (14B), Table 5 (32B), Table 3 (LLaMA),
# Figure 2 (TA's alpha on 14B, AIME24), Figure 4 (t on 7B).
PAPER = {
    "l2s_7b": (
        "Qwen/Qwen2.5-Math-7B",
        ["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"],
        SIX_MATH,
        ["average", "task_arithmetic", "ties", "dare", "dare_ta", "dare_ties", "aim", "sens", "acm_ta", "acm_ties"],
    ),
    "l2s_1p5b": (
        "Qwen/Qwen2.5-Math-1.5B",
        ["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"],
        SIX_MATH | {"livecodebench"},
        ["average", "task_arithmetic", "ties", "aim", "sens", "acm_ta", "acm_ties"],
    ),
    "l2s_14b": (
        "Qwen/Qwen2.5-14B",
        ["deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"],
        {"gsm8k", "math500", "aime24", "humaneval_pro"},
        ["average", "task_arithmetic", "ties", "aim", "sens", "acm_ta", "acm_average"],
    ),
    "l2s_32b": (
        "Qwen/Qwen2.5-32B",
        ["deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"],
        {"gsm8k", "math500", "aime24"},
        ["task_arithmetic", "ties", "acm_ta"],
    ),
    "general_llama": (
        "meta-llama/Llama-2-7b-hf",
        ["TIGER-Lab/MAmmoTH-7B", "codellama/CodeLlama-7b-hf"],
        {"gsm8k", "hellaswag", "mbpp_pro"},
        ["task_arithmetic", "ties", "acm_ta", "acm_ties"],
    ),
    "weight_coefficients": (
        "Qwen/Qwen2.5-14B",
        ["deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"],
        {"aime24"},
        ["0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"],
    ),
    "t_sensitivity": (
        "Qwen/Qwen2.5-Math-7B",
        ["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"],
        SIX_MATH,
        ["0.5", "0.6", "0.7", "0.8", "0.9"],
    ),
}


def swept_values(experiment: str, *overrides: str) -> list[str]:
    """The value of the swept key at each point, in sweep order."""
    return [point[0].split("=", 1)[1] for point in experiment_points(experiment, *overrides)]


def readme_table() -> dict[str, list[str]]:
    """README.md's "Reproduce the paper" table: experiment -> the values of its `swept` column."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## Reproduce the paper", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`\w+`", cells[1]):
            rows[cells[1].strip("`")] = re.findall(r"`([^`]+)`", cells[2])
    return rows


def test_readme_lists_every_experiment_with_its_points():
    table = readme_table()
    assert set(table) == set(EXPERIMENTS)
    for experiment, values in table.items():
        assert swept_values(experiment) == values, experiment


@pytest.mark.parametrize("experiment", sorted(PAPER))
def test_experiments_carry_the_papers_models_benchmarks_and_rows(experiment):
    base, finetuned, benchmarks, values = PAPER[experiment]
    cfg = compose_config(f"+experiment={experiment}")
    assert (cfg.model_pair.base, list(cfg.model_pair.finetuned)) == (base, finetuned)
    assert set(cfg.eval.benchmarks) == benchmarks
    assert swept_values(experiment) == values
    if experiment.startswith(("l2s_", "general_")):
        # The tables' input-model rows.
        assert list(cfg.eval.models) == ["base", "finetuned", "merged"]


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        # Section 4.2: TA 0.2; TIES "0.7 and 0.2" (mask rate, scaling as the L2S code orders them); t = -1.8.
        ("task_arithmetic", {"scale": 0.2}),
        ("ties", {"k": 0.7, "scale": 0.2}),
        ("acm_ta", {"scale": 0.2, "t": -1.8}),
        ("acm_ties", {"k": 0.7, "scale": 0.2, "t": -1.8}),
        ("acm_average", {"t": -1.8}),
        ("acm_dare", {"t": -1.8}),
    ],
)
def test_llama_setting_takes_the_papers_section_4_2_values(method, expected):
    merge = merge_of("general_llama", method)
    assert {name: merge[name] for name in expected} == expected


def test_figure_2_sweeps_task_arithmetics_alpha_and_figure_4_acm_ties_t():
    points = experiment_points("weight_coefficients")
    assert {compose_config(*point).merge.method for point in points} == {"task_arithmetic"}
    assert [compose_config(*point).merge.scale for point in points] == [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert [compose_config(*point).merge.t for point in experiment_points("t_sensitivity")] == [
        0.5,
        0.6,
        0.7,
        0.8,
        0.9,
    ]


def merge_of(experiment: str, method: str):
    return compose_config(f"+experiment={experiment}", f"merge={method}").merge


@pytest.mark.parametrize(
    ("experiment", "method", "expected"),
    [
        ("l2s_1p5b", "ties", {"k": 0.8, "scale": 1.0}),
        ("l2s_7b", "acm_ties", {"k": 0.8, "scale": 1.0, "t": 0.7}),
        ("l2s_14b", "ties", {"k": 0.2, "scale": 0.5}),
        ("l2s_14b", "acm_ties", {"k": 0.2, "scale": 0.5}),
        ("l2s_14b", "aim", {"k": 0.2, "scale": 0.5, "omega": 0.4, "base_method": "ties"}),
        ("l2s_32b", "ties", {"k": 0.25, "scale": 0.55}),
        ("l2s_32b", "aim", {"k": 0.25, "scale": 0.55}),
        ("l2s_7b", "task_arithmetic", {"scale": 0.7}),
        ("l2s_14b", "task_arithmetic", {"scale": 0.7}),
        ("l2s_1p5b", "dare", {"p": 0.3}),
        ("l2s_14b", "dare", {"p": 0.4}),
        ("l2s_1p5b", "sens", {"alpha": 0.4, "temperature": 3.0}),
        ("l2s_7b", "sens", {"alpha": 0.7, "temperature": 2.0}),
        ("l2s_14b", "sens", {"alpha": 0.8, "temperature": 6.0}),
        ("l2s_32b", "sens", {"alpha": 0.8, "temperature": 6.0}),
    ],
)
def test_l2s_experiments_carry_the_papers_hyper_parameters(experiment, method, expected):
    merge = merge_of(experiment, method)
    assert {name: merge[name] for name in expected} == expected


def test_command_line_values_win_over_the_papers_defaults():
    cfg = compose_config("+experiment=l2s_14b", "merge=ties", "merge.k=0.3")
    assert (cfg.merge.k, cfg.merge.scale) == (0.3, 0.5)


def test_l2s_sweeps_every_method_of_the_table_and_evaluates_the_inputs():
    methods = [point[0].removeprefix("merge=") for point in experiment_points("l2s_7b")]
    # The paper's Table 1 has three DARE rows (DARE, DARE-TA, DARE-TIES), as the L2S code computes them.
    assert methods == [
        "average",
        "task_arithmetic",
        "ties",
        "dare",
        "dare_ta",
        "dare_ties",
        "aim",
        "sens",
        "acm_ta",
        "acm_ties",
    ]
    cfg = compose_config("+experiment=l2s_7b")
    assert list(cfg.eval.models) == ["base", "finetuned", "merged"]
    assert sorted(cfg.eval.benchmarks) == sorted(
        ["gsm8k", "math500", "minerva_math", "olympiadbench", "college_math", "aime24"]
    )
    assert cfg.model_pair.base == "Qwen/Qwen2.5-Math-7B"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("merge=aim", "merge.omega=1.5"), "merge.omega=1.5; expected a number in [0, 1]"),
        (("merge=aim", "merge.base_method=acm_ties"), "merge.base_method='acm_ties'; expected a plain merge method"),
        (("merge=aim", "merge.base_method=nope"), "merge.base_method='nope'; expected a plain merge method"),
        (("merge=sens", "merge.alpha=2"), "merge.alpha=2.0; expected a number in [0, 1]"),
        (("merge=sens", "merge.temperature=0"), "merge.temperature=0.0; expected a positive number"),
        (("merge=sens", "sens.base_answers=medium"), "sens.base_answers='medium'; expected one of ('long', 'short')"),
        (
            ("merge=sens", "sens.short_answer_template=x"),
            "sens.short_answer_template='x'; expected a template containing",
        ),
        (
            ("merge=sens", "sens.prompt_template='Q: {q}'"),
            "sens.prompt_template='Q: {q}' is not a template with only {question}",
        ),
        (("merge=sens", "sens.dtype=fp8"), "sens.dtype='fp8'; expected one of"),
        (("merge=sens", "sens.max_tokens=1"), "sens.max_tokens=1; expected an integer >= 2"),
        (("merge=sens", "model_pair=llama2-7b"), "merge=sens merges one fine-tuned model; model_pair.finetuned has 2"),
    ],
)
def test_bad_baseline_settings_fail_validation_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(*overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_aim_reads_its_base_methods_parameters():
    from acm_exp.merge import get_method, used_parameters

    aim = ("omega", "base_method", "relax", "tied_embedding")
    assert used_parameters(get_method("aim"), "ties") == (*aim, "scale", "k")
    assert used_parameters(get_method("aim"), "task_arithmetic") == (*aim, "scale")


def calibration_sizes(experiment: str) -> list[int]:
    sizes = []
    for point in experiment_points(experiment):
        calibration = compose_config(*point).calibration
        sizes.append(
            calibration_size(
                calibration.selection, calibration.num_clusters, calibration.per_cluster, calibration.num_samples
            )
        )
    return sizes


def test_calibration_ablations_sweep_what_they_say():
    assert calibration_sizes("calibration_size") == [20, 50, 100, 200, 300]
    assert calibration_sizes("clusters") == [120, 120, 120, 120]
    selections = [compose_config(*point).calibration for point in experiment_points("clusters")]
    assert [(c.selection, c.num_clusters) for c in selections][1:] == [
        ("cluster", 10),
        ("cluster", 20),
        ("cluster", 30),
    ]
    assert selections[0].selection == "random"
    assert [p[0] for p in experiment_points("calibration_source")] == ["calibration=s1k", "calibration=limo"]


# ---------------------------------------------------------------------------------------------
# End to end on the toy pair


def run_experiment(experiment: str, tmp_path: Path, cache_dir: Path, results_dir: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "acm_exp",
        "-m",
        f"+experiment={experiment}",
        *TOY,
        *OFFLINE_SWEEPS.get(experiment, ()),
        "eval.limit=3",
        "logger.wandb.mode=disabled",
        f"logger.results_dir={results_dir}",
        f"cache_dir={cache_dir}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, timeout=1800, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def toy_cache(toy_pair) -> Path:
    return next(iter(toy_pair.values())).parents[2]


def assert_one_run_per_point(results_dir: Path, points: list) -> None:
    rows = load_results(results_dir)
    merged = rows[rows["role"] == "merged"]
    assert merged["run_id"].nunique() == len(points)
    assert set(merged["benchmark"]) == {"toy"} and (merged["n"] == 3).all()


@pytest.mark.slow
@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if not e.startswith("l2s_")])
def test_experiment_runs_end_to_end_on_the_toy_pair(experiment, tmp_path, toy_cache):
    run_experiment(experiment, tmp_path, toy_cache, tmp_path / "results")
    assert_one_run_per_point(
        tmp_path / "results", experiment_points(experiment, *TOY, *OFFLINE_SWEEPS.get(experiment, ()))
    )
    if experiment == "general_llama":
        assert set(load_results(tmp_path / "results")["role"]) == {"base", "finetuned", "merged"}


@pytest.mark.slow
def test_l2s_experiments_run_end_to_end_on_the_toy_pair(tmp_path, toy_cache):
    results_dir = tmp_path / "results"
    run_experiment("l2s_7b", tmp_path / "l2s_7b", toy_cache, results_dir)
    points = experiment_points("l2s_7b", *TOY)
    assert_one_run_per_point(results_dir, points)
    rows = load_results(results_dir)
    assert set(rows["role"]) == {"base", "finetuned", "merged"}
    merged = rows[rows["role"] == "merged"]
    # Ten merges; the three DARE rows are one method (dare) combined three ways (average, ta, ties).
    assert merged["config_hash"].nunique() == len(points) == 10
    assert merged["method"].nunique() == 8
    assert sorted(merged.loc[merged["method"] == "dare", "combine"].unique()) == ["average", "ta", "ties"]
    # On the toy pair no per-size default applies, so the other sizes' points are 7B's runs: they
    # find their results complete and skip them; 14B's ACM-Average is the one new run.
    for experiment in ("l2s_1p5b", "l2s_14b", "l2s_32b"):
        result = run_experiment(experiment, tmp_path / experiment, toy_cache, results_dir)
        size_points = experiment_points(experiment, *TOY)
        new = [point for point in size_points if point[0] == "merge=acm_average"]
        assert result.stdout.count("skipped: complete results") == len(size_points) - len(new), experiment


# ---------------------------------------------------------------------------------------------
# Every sweep point is validated before the first job


def test_sweep_points_expand_like_hydras_basic_sweeper():
    assert sweep_points({"merge": "ties,dare"}, ["merge.k=0.2,0.5", "eval=none", "~merge.p"]) == [
        ["merge=ties", "merge.k=0.2", "eval=none", "~merge.p"],
        ["merge=ties", "merge.k=0.5", "eval=none", "~merge.p"],
        ["merge=dare", "merge.k=0.2", "eval=none", "~merge.p"],
        ["merge=dare", "merge.k=0.5", "eval=none", "~merge.p"],
    ]
    assert sweep_points({}, ["seed=range(0,3)"]) == [["seed=0"], ["seed=1"], ["seed=2"]]


def test_a_bad_sweep_point_stops_the_sweep_before_any_job(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "acm_exp",
            "-m",
            "merge=ties",
            "merge.k=0.5,1.5",
            "eval=none",
            "logger=disabled",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("acm_exp: error:")]
    assert errors == [
        "acm_exp: error: sweep point [merge=ties merge.k=1.5 eval=none logger=disabled]: "
        "merge.k=1.5; expected a fraction in [0, 1)"
    ]
    assert not (tmp_path / "sweep").exists() and "Launching" not in result.stdout + result.stderr
