"""The Python API (acm_exp.api): the CLI's config, validation and results from plain Python values.

The end-to-end tests run the toy pair through the API only and compare every stage with
`python -m acm_exp` on the same settings, each side with its own caches (sharing only the toy
models and the calibration embeddings), so equal results come from equal computations.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import pydoc
import re
import subprocess
import sys
from pathlib import Path

import pytest
from app_config import compose_config

import acm_exp
from acm_exp import api, overrides
from acm_exp.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
PUBLIC_NAMES = [name for name in acm_exp.__all__ if name != "__version__"]
# Small settings shared by the CLI run and the API calls: 8 calibration texts, 3 problems, 32 tokens.
PER_CLUSTER = 2
LIMIT = 3
MAX_NEW_TOKENS = 32


# ---------------------------------------------------------------------------------------------
# The package surface


def test_import_does_not_load_torch_or_the_api():
    code = "import sys, acm_exp; print('torch' in sys.modules, 'acm_exp.api' in sys.modules, acm_exp.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", acm_exp.__version__]


def test_public_names_load_lazily_from_the_api_module():
    for name in PUBLIC_NAMES:
        assert getattr(acm_exp, name) is getattr(api, name)
        assert name in dir(acm_exp)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        acm_exp.nothing_here  # noqa: B018


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_every_public_name_has_a_docstring_with_an_example(name):
    doc = inspect.getdoc(getattr(acm_exp, name)) or ""
    assert doc.splitlines()[0].strip(), f"{name} has no summary line"
    assert "Example:" in doc and ">>> " in doc, f"{name}'s docstring has no example"


def test_help_lists_every_public_name():
    text = pydoc.render_doc(acm_exp, renderer=pydoc.plaintext)
    functions = text[text.index("FUNCTIONS") :]
    classes = text[text.index("CLASSES") : text.index("FUNCTIONS")]
    for name in PUBLIC_NAMES:
        section = classes if name[0].isupper() else functions
        assert re.search(rf"^\s*(class )?{name}\(", section, re.MULTILINE), f"help(acm_exp) does not list {name}"


# ---------------------------------------------------------------------------------------------
# Plain values -> the CLI's config


@pytest.mark.parametrize(
    "value", ["toy:base", "/tmp/a b/c,d", "it's", "back\\slash\\", "[1, 2]", "x=y", "null", "0.5", "", "a'b\\'c"]
)
def test_strings_reach_the_config_verbatim(value):
    cfg, _ = overrides.compose_config(
        ["model_pair=custom", f"model_pair.base={overrides.override_value('b', value)}", "model_pair.finetuned=[x/y]"]
    )
    assert cfg.model_pair.base == value


@pytest.mark.parametrize(
    "key,value",
    [
        ("merge.dtype", None),
        ("merge.overwrite", True),
        ("calibration.max_tokens", 7),
        ("merge.k", 0.25),
        ("merge.scale", -2.5e-8),
        ("eval.seeds", [0, 1, 2]),
        ("eval.seeds", (4,)),
    ],
)
def test_numbers_lists_and_none_keep_their_type(key, value):
    from omegaconf import OmegaConf

    cfg, _ = overrides.compose_config([f"{key}={overrides.override_value(key, value)}"])
    chosen = OmegaConf.select(cfg, key)
    assert (list(chosen) if isinstance(value, (list, tuple)) else chosen) == (
        list(value) if isinstance(value, tuple) else value
    )


def test_non_finite_numbers_are_passed_as_hydra_spells_them():
    assert [overrides.override_value("merge.t", v) for v in (float("inf"), float("-inf"), float("nan"))] == [
        "inf",
        "-inf",
        "nan",
    ]


def test_a_value_of_another_type_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"^merge.k=\{'a': 1\} is a dict; expected a number"):
        overrides.override_value("merge.k", {"a": 1})


def test_a_configured_pair_is_chosen_by_its_models_else_custom():
    assert overrides.pair_overrides("toy:base", "toy:finetuned") == ["model_pair=toy"]
    assert overrides.pair_overrides("toy:base", ["toy:finetuned"]) == ["model_pair=toy"]
    cfg, _ = overrides.compose_config(
        overrides.pair_overrides("Qwen/Qwen2.5-Math-7B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    )
    assert cfg.model_pair.name == "qwen2.5-7b"
    custom = overrides.pair_overrides("org/base", ["org/ft-1", Path("/models/ft 2")])
    cfg, _ = overrides.compose_config(custom)
    assert (cfg.model_pair.name, cfg.model_pair.base, list(cfg.model_pair.finetuned)) == (
        "custom",
        "org/base",
        ["org/ft-1", "/models/ft 2"],
    )


def test_benchmarks_replace_the_pairs_suite():
    cfg, _ = overrides.compose_config(["model_pair=qwen2.5-7b"])
    chosen_benchmarks = overrides.benchmark_overrides(cfg, ("gsm8k", "toy"))
    chosen, _ = overrides.compose_config(["model_pair=qwen2.5-7b", *chosen_benchmarks])
    assert sorted(chosen.eval.benchmarks) == ["gsm8k", "toy"]
    assert chosen.eval.benchmarks.toy.source == "toy"


def test_the_default_run_directory_is_the_clis_and_never_shared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, pattern = overrides.compose_config(["model_pair=toy", "merge=ties"])
    assert re.fullmatch(r"outputs/runs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d_toy_ties", pattern)
    first, second = api._new_run_dir(None, pattern), api._new_run_dir(None, pattern)
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name == first.name + "-1"


# ---------------------------------------------------------------------------------------------
# Validation: the CLI's checks and messages, before any model is read


def cli_error(*overrides: str) -> str:
    """The message of the CLI's validation (acm_exp.pipeline.validate) for these command-line overrides."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from acm_exp.failures import config_error_line
    from acm_exp.stages import validate

    try:
        cfg = compose_config(*overrides)
    except (HydraException, OmegaConfBaseException) as error:
        # A fixed choice is an enum in the schema: Hydra rejects a bad value while composing.
        return config_error_line(error)
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    return str(error.value)


BAD_INPUTS = [
    (lambda: acm_exp.merge_models("toy:base", "toy:finetuned", "ties", k=1.5), ("merge=ties", "merge.k=1.5")),
    (
        lambda: acm_exp.merge_models("toy:base", "toy:finetuned", "dare", combine="mean"),
        ("merge=dare", "merge.combine=mean"),
    ),
    (lambda: acm_exp.merge_models("toy:base", "toy:finetuned", "no_such_method"), ("merge.method=no_such_method",)),
    (
        lambda: acm_exp.merge_models("toy:base", "toy:finetuned", "ties", tokenizer_from="merged"),
        ("merge=ties", "model_pair.tokenizer_from=merged"),
    ),
    (lambda: acm_exp.acm_coefficients("toy:base", "toy:finetuned", t=float("nan")), ("merge.t=nan",)),
    (lambda: acm_exp.acm_coefficients("toy:base", "toy:finetuned", shift="max"), ("merge.shift=max",)),
    (lambda: acm_exp.acm_coefficients("toy:base", "toy:finetuned", estimator="kde"), ("acm.estimator=kde",)),
    (lambda: acm_exp.acm_coefficients("toy:base", "/no/such/model"), ("model_pair.finetuned=[/no/such/model]",)),
    (lambda: acm_exp.select_calibration("toy", per_cluster=0), ("calibration.per_cluster=0",)),
    (lambda: acm_exp.select_calibration("toy", selection="best"), ("calibration.selection=best",)),
]


@pytest.mark.parametrize("call,cli_overrides", BAD_INPUTS)
def test_bad_values_raise_the_clis_one_line_error(call, cli_overrides, tmp_path):
    with pytest.raises(ConfigError) as error:
        call()
    assert "\n" not in str(error.value)
    assert str(error.value) == cli_error("eval=none", *cli_overrides)


@pytest.mark.slow
def test_the_error_is_the_line_the_cli_prints(tmp_path):
    with pytest.raises(ConfigError) as error:
        acm_exp.merge_models("toy:base", "toy:finetuned", "ties", k=1.5)
    completed = run_cli("merge=ties", "merge.k=1.5", "eval=none", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == f"acm_exp: error: {error.value}"


def test_evaluation_values_raise_the_clis_errors(tmp_path):
    results = f"logger.results_dir={tmp_path}"
    with pytest.raises(ConfigError) as error:
        acm_exp.evaluate("toy:base", ("toy",), limit=0, results_dir=tmp_path)
    assert str(error.value) == cli_error("eval.limit=0", results)
    with pytest.raises(ConfigError) as error:
        acm_exp.evaluate("toy:base", ("toy",), backend="tgi", results_dir=tmp_path)
    assert str(error.value) == cli_error("eval.backend=tgi", results)
    with pytest.raises(ConfigError, match=r"^benchmark 'gsm9k' is unknown; expected any of .*gsm8k"):
        acm_exp.evaluate("toy:base", ("gsm9k",))


def test_unknown_settings_and_wrong_types_are_named_in_one_line():
    with pytest.raises(ConfigError, match=r"^merge_models: unknown setting 'kk'; expected one of scale, k, p"):
        acm_exp.merge_models("toy:base", "toy:finetuned", "ties", kk=0.5)
    with pytest.raises(ConfigError, match=r"^select_calibration: unknown setting 'clusters'"):
        acm_exp.select_calibration("toy", clusters=3)
    with pytest.raises(ConfigError, match=r"^evaluate: unknown setting 'temp'"):
        acm_exp.evaluate("toy:base", temp=0.5)
    with pytest.raises(ConfigError) as error:
        acm_exp.merge_models("toy:base", "toy:finetuned", "ties", k="most")
    assert "\n" not in str(error.value) and "merge.k" in str(error.value) and "most" in str(error.value)
    with pytest.raises(ConfigError, match=r"^model_pair.base=3; expected a hub id"):
        acm_exp.merge_models(3, "toy:finetuned")


# ---------------------------------------------------------------------------------------------
# Printing


def test_results_print_as_one_line_and_as_html_tables(tmp_path):
    calibration = api.Calibration(
        texts=["Q: 1 + 2 = ?", "<b>x</b>"],
        indices=[4, 9],
        spec="toy:all",
        selection_hash="abc",
        corpus_size=10,
        settings={},
        cluster_labels=[0, 1],
    )
    assert repr(calibration) == "Calibration(toy:all: 2 of 10 rows, selection abc)" and len(calibration) == 2
    assert "<td>&lt;b&gt;x&lt;/b&gt;</td>" in calibration._repr_html_()
    rows = [
        {
            "model": "merged",
            "role": "merged",
            "benchmark": "toy",
            "seed": 0,
            "n": 3,
            "accuracy": 66.7,
            "mean_tokens": 31.0,
            "truncation_rate": 33.3,
            "reflections": 0.0,
            "samples_path": None,
        }
    ]
    result = api.EvalResult(model="toy:base", role="base", path=tmp_path, rows=rows, samples={})
    assert repr(result) == "EvalResult(toy:base [base]: toy: 66.7% / 31 tok (n=3))"
    assert result.accuracy == {"toy": 66.7} and list(result.metrics["accuracy"]) == [66.7]
    assert "<th>accuracy</th>" in result._repr_html_()
    merged = api.MergeResult(
        output_dir=tmp_path,
        manifest={
            "request_fingerprint": "f00",
            "parameters": {"k": 0.5},
            "inputs": [{"role": "base", "path": "b", "content_hash": "h"}],
        },
        timings={"merge": 1.5},
        run_dir=tmp_path,
        method="ties",
    )
    assert repr(merged) == f"MergeResult(ties(k=0.5) -> {tmp_path}, 1.5 s, fingerprint f00)"
    assert "<td>merge.k</td><td>0.5</td>" in merged._repr_html_()


# ---------------------------------------------------------------------------------------------
# End to end on the toy pair, against the CLI


def caches_sharing_the_toy_pair(toy_pair, root: Path, *names: str) -> list[Path]:
    """Empty cache roots that share the session's toy models and calibration embeddings."""
    toy_models = next(iter(toy_pair.values())).parents[1]
    embeddings = root / "embeddings"
    embeddings.mkdir(parents=True, exist_ok=True)
    caches = []
    for name in names:
        cache = root / name
        (cache / "calibration").mkdir(parents=True)
        (cache / "toy").symlink_to(toy_models, target_is_directory=True)
        (cache / "calibration" / "embeddings").symlink_to(embeddings, target_is_directory=True)
        caches.append(cache)
    return caches


def run_cli(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "acm_exp", *overrides], capture_output=True, text=True, cwd=cwd, env=env, timeout=1800
    )


def file_digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.glob("*.safetensors"))
    }


@pytest.fixture(scope="module")
def toy_runs(toy_pair, tmp_path_factory):
    """The same ACM-TIES job twice: `python -m acm_exp` and the API, each with its own caches."""
    root = tmp_path_factory.mktemp("api_vs_cli")
    cli_cache, api_cache = caches_sharing_the_toy_pair(toy_pair, root, "cli_cache", "api_cache")
    cli = {"run": root / "cli_run", "out": root / "cli_merged", "results": root / "cli_results", "cache": cli_cache}
    completed = run_cli(
        "model_pair=toy",
        "merge=acm_ties",
        "merge.t=0.7",
        f"calibration.per_cluster={PER_CLUSTER}",
        f"eval.limit={LIMIT}",
        f"eval.max_new_tokens={MAX_NEW_TOKENS}",
        f"eval.base_max_new_tokens={MAX_NEW_TOKENS}",
        "logger.wandb.mode=disabled",
        f"logger.results_dir={cli['results']}",
        f"cache_dir={cli_cache}",
        f"hydra.run.dir={cli['run']}",
        f"merge.output_dir={cli['out']}",
        cwd=root,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    from acm_exp.acm import modeling

    passes = modeling.FORWARD_PASSES
    calibration = acm_exp.select_calibration("toy", per_cluster=PER_CLUSTER, cache_dir=api_cache)
    coefficients = acm_exp.acm_coefficients(
        "toy:base", "toy:finetuned", calibration, t=0.7, cache_dir=api_cache, run_dir=root / "api_run"
    )
    merged = acm_exp.merge_models(
        "toy:base", "toy:finetuned", "acm_ties", out=root / "api_merged", coefficients=coefficients, cache_dir=api_cache
    )
    evaluated = acm_exp.evaluate(
        merged, limit=LIMIT, max_new_tokens=MAX_NEW_TOKENS, cache_dir=api_cache, results_dir=root / "api_results"
    )
    base = acm_exp.evaluate(
        "toy:base",
        ("toy",),
        limit=LIMIT,
        max_new_tokens=MAX_NEW_TOKENS,
        cache_dir=api_cache,
        results_dir=root / "api_results",
    )
    return {
        "root": root,
        "cli": cli,
        "api_cache": api_cache,
        "calibration": calibration,
        "coefficients": coefficients,
        "merged": merged,
        "evaluated": evaluated,
        "base": base,
        "api_forward_passes": modeling.FORWARD_PASSES - passes,
    }


def cli_rows(toy_runs) -> dict[str, dict]:
    table = acm_exp.load_results(toy_runs["cli"]["results"])
    return {row["model"]: row for row in table.to_dict("records")}


@pytest.mark.slow
def test_calibration_equals_the_clis(toy_runs):
    record = json.loads((toy_runs["cli"]["run"] / "calibration.json").read_text())
    calibration = toy_runs["calibration"]
    assert len(calibration) == 4 * PER_CLUSTER
    assert calibration.indices == record["indices"] and calibration.cluster_labels == record["cluster_labels"]
    assert (calibration.spec, calibration.selection_hash) == (record["spec"], record["selection_hash"])
    assert calibration.settings["per_cluster"] == PER_CLUSTER


@pytest.mark.slow
def test_coefficients_equal_the_clis(toy_runs):
    coefficients = toy_runs["coefficients"]
    cli = json.loads((toy_runs["cli"]["run"] / "coefficients.json").read_text())
    assert toy_runs["api_forward_passes"] > 0  # computed by the API, not read from the CLI's cache
    ours = coefficients.to_dict()
    assert [m["points"] for m in ours["models"]] == [m["points"] for m in cli["models"]]
    assert json.loads(coefficients.path.read_text())["models"] == cli["models"]
    assert set(coefficients.points) == {"embed_tokens", "layers.0", "layers.1", "norm", "lm_head"}
    lambdas = coefficients.lambdas["toy:finetuned"]
    assert lambdas["layers.1"] == cli["models"][0]["points"]["layers.1"]["lambda"]
    assert coefficients.for_parameter("model.layers.1.self_attn.q_proj.weight") == lambdas["layers.1"]
    assert coefficients.for_point("lm_head") == lambdas["lm_head"]
    plot = coefficients.plot(toy_runs["root"] / "lambdas.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "λ toy:finetuned" in coefficients._repr_html_() and "t=0.7" in repr(coefficients)


@pytest.mark.slow
def test_merge_equals_the_clis(toy_runs):
    merged, cli_out = toy_runs["merged"], toy_runs["cli"]["out"]
    cli_manifest = json.loads((cli_out / "merge_manifest.json").read_text())
    assert merged.fingerprint == cli_manifest["request_fingerprint"]
    assert [i["content_hash"] for i in merged.manifest["inputs"]] == [i["content_hash"] for i in cli_manifest["inputs"]]
    assert merged.parameters == cli_manifest["parameters"] and merged.manifest["acm"]["t"] == 0.7
    assert file_digests(merged.output_dir) == file_digests(cli_out) != {}
    assert merged.output_dir == toy_runs["root"] / "api_merged" and not merged.reused
    assert merged.run_dir == toy_runs["root"] / "api_run"
    assert {"merge"} <= set(merged.timings) and (merged.run_dir / "costs.json").is_file()


@pytest.mark.slow
def test_evaluation_equals_the_clis(toy_runs):
    rows = cli_rows(toy_runs)
    for result, model in ((toy_runs["evaluated"], "merged"), (toy_runs["base"], "base")):
        assert result.role == model
        [ours] = result.rows
        for column in ("accuracy", "mean_tokens", "truncation_rate", "n", "benchmark"):
            assert ours[column] == rows[model][column], (model, column)
        cli_samples = [json.loads(line) for line in Path(rows[model]["samples_path"]).read_text().splitlines()]
        assert [s["response"] for s in result.samples["toy"]] == [s["response"] for s in cli_samples]
        assert len(result.samples["toy"]) == LIMIT
    # computed by the API: the merged model's samples live in its own run directory
    assert str(toy_runs["evaluated"].rows[0]["samples_path"]).startswith(str(toy_runs["root"] / "api_run"))


@pytest.mark.slow
def test_recorded_results_match_the_clis_row(toy_runs):
    table = acm_exp.load_results(toy_runs["root"] / "api_results")
    assert list(table["model"]) == ["merged"]  # only merge results are recorded
    [ours] = table.to_dict("records")
    theirs = cli_rows(toy_runs)["merged"]
    for column in (
        "method",
        "t",
        "k",
        "scale",
        "calibration",
        "calibration_samples",
        "selection_hash",
        "accuracy",
        "mean_tokens",
        "benchmark",
    ):
        assert ours[column] == theirs[column], column
    assert toy_runs["evaluated"].results_file is not None


@pytest.mark.slow
def test_coefficients_reuse_the_clis_mi_cache_and_must_match_the_merge(toy_runs):
    from acm_exp.acm import modeling

    before = modeling.FORWARD_PASSES
    cli_cache = toy_runs["cli"]["cache"]
    hotter = acm_exp.acm_coefficients(
        "toy:base",
        "toy:finetuned",
        toy_runs["calibration"],
        t=0.9,
        cache_dir=cli_cache,
        run_dir=toy_runs["root"] / "t09",
    )
    assert modeling.FORWARD_PASSES == before  # the CLI's statistics, another t
    assert hotter.mi_cache_key == toy_runs["coefficients"].mi_cache_key
    assert hotter.for_point("layers.0") != toy_runs["coefficients"].for_point("layers.0")
    with pytest.raises(ConfigError, match=r"^merge t=0.7 differs from the coefficients' t=0.9"):
        acm_exp.merge_models("toy:base", "toy:finetuned", "acm_ties", coefficients=hotter, t=0.7, cache_dir=cli_cache)
    with pytest.raises(ConfigError, match=r"^coefficients= given, but merge method 'ties' takes no ACM"):
        acm_exp.merge_models("toy:base", "toy:finetuned", "ties", coefficients=hotter, cache_dir=cli_cache)


@pytest.mark.slow
def test_any_method_merges_and_an_identical_request_is_reused(toy_runs):
    out = toy_runs["root"] / "ta_merged"
    kwargs = dict(out=out, scale=0.5, cache_dir=toy_runs["api_cache"], run_dir=toy_runs["root"] / "ta_run")
    first = acm_exp.merge_models("toy:base", "toy:finetuned", "task_arithmetic", **kwargs)
    assert first.manifest["method"] == "task_arithmetic" and first.parameters == {"scale": 0.5}
    again = acm_exp.merge_models("toy:base", "toy:finetuned", "task_arithmetic", **kwargs)
    assert again.reused and again.fingerprint == first.fingerprint
    assert "model_pair=toy" in first.overrides and "merge.scale=0.5" in first.overrides


# ---------------------------------------------------------------------------------------------
# The README's example


def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## Python API\n") :]
    section = section[: section.index("\n## ", 1)]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.slow
def test_the_readme_example_runs(toy_runs, tmp_path):
    # The API's cache: its MI statistics are reused, the merge and the evaluation run afresh.
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "ACM_EXP_CACHE": str(toy_runs["api_cache"]),
        "ACM_EXP_RESULTS_DIR": str(tmp_path / "results"),
    }
    result = subprocess.run(
        [sys.executable, "-c", readme_example()], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=1800
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "outputs" / "runs").glob("*/*/merged/merge_manifest.json"))) == 1
    assert "{'toy': " in result.stdout and "accuracy" in result.stdout


def test_a_merges_fingerprint_ignores_where_the_coefficient_files_live():
    from acm_exp.stages import coefficient_identity

    def manifest(run: str, t: float) -> dict:
        return {
            "calibration": {"spec": "toy", "selection_hash": "s", "samples": 8},
            "acm": {
                "t": t,
                "mi_cache_key": "k",
                "coefficients": f"/{run}/coefficients.json",
                "mi_statistics": f"/{run}-cache/mi/k",
            },
        }

    assert coefficient_identity(manifest("run1", 0.7)) == coefficient_identity(manifest("run2", 0.7))
    assert coefficient_identity(manifest("run1", 0.7)) != coefficient_identity(manifest("run1", 0.9))
    assert coefficient_identity({}) == {}


def test_a_calibration_file_is_selected_with_the_clis_settings(tmp_path):
    corpus = tmp_path / "My_Corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"question": f"  question {i} ", "solution": str(i)}) + "\n" for i in range(5))
    )
    calibration = acm_exp.select_calibration(corpus, selection="all", include_solution=True, cache_dir=tmp_path)
    assert calibration.texts == [f"question {i}\n\n{i}" for i in range(5)] and calibration.indices == [0, 1, 2, 3, 4]
    assert calibration.spec == "my_corpus:all+solution" and calibration.settings["source"] == str(corpus)
    # The same selection from the command-line arguments the result names.
    from acm_exp.calibration import select_calibration

    cli = compose_config(*calibration.overrides)
    assert select_calibration(cli.calibration, cache_dir=tmp_path).texts == calibration.texts


@pytest.mark.slow
def test_the_cli_and_the_api_run_the_same_stages(tmp_path, monkeypatch):
    """The CLI's job and the API sit side by side above acm_exp.stages: both merge and evaluate through
    ``stages.merge_configured`` and ``stages.evaluate_configured``."""
    from acm_exp import pipeline, stages

    calls = []
    for name in ("merge_configured", "evaluate_configured"):
        original = getattr(stages, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            result = _original(*args, **kwargs)
            calls.append((_name, result))
            return result

        monkeypatch.setattr(pipeline, name, spy)
        monkeypatch.setattr(stages, name, spy)
    cfg = compose_config(
        "model_pair=toy",
        "merge=ties",
        "eval.models=[merged]",
        "eval.limit=2",
        f"cache_dir={tmp_path / 'cache'}",
        f"logger.results_dir={tmp_path / 'results'}",
    )
    merged_dir = pipeline.run(cfg, run_dir=tmp_path / "run")
    assert [name for name, _ in calls] == ["merge_configured", "evaluate_configured"]
    merged, evaluations = calls[0][1], calls[1][1]
    assert isinstance(merged, stages.MergedModel) and merged.output_dir == merged_dir
    assert [(result.role, result.path) for result in evaluations] == [("merged", merged_dir)]
    recorded = acm_exp.load_results(tmp_path / "results")
    assert list(recorded["accuracy"]) == [row["accuracy"] for row in evaluations[0].rows if row.get("seed") is not None]

    calls.clear()
    result = acm_exp.merge_models("toy:base", "toy:finetuned", "ties", cache_dir=tmp_path / "cache", run_dir=tmp_path)
    acm_exp.evaluate(result, limit=2, cache_dir=tmp_path / "cache", results_dir=tmp_path / "api-results")
    assert [name for name, _ in calls] == ["merge_configured", "evaluate_configured"]
    assert result.output_dir == calls[0][1].output_dir and result.inputs == calls[0][1].inputs


def test_the_api_modules_namespace_is_its_public_names():
    assert {name for name in vars(api) if not name.startswith("_")} == set(api.__all__)
    # Names that moved to their own homes keep working.
    assert api.compose_config is overrides.compose_config and api.override_value is overrides.override_value
    from acm_exp import stages

    assert api.merge_configured is stages.merge_configured and api.evaluate_configured is stages.evaluate_configured
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        api.nothing_here  # noqa: B018
