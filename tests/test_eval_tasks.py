"""Benchmark families (acm_exp.eval.tasks): the registry, and a family defined here run end to end
through the generic code path (benchmarks -> prompts -> evaluate_model -> graders -> metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_config import compose_config
from model_factory import save_tokenizer
from omegaconf import OmegaConf, open_dict

from acm_exp import results
from acm_exp.config import BenchmarkConfig
from acm_exp.errors import ConfigError
from acm_exp.eval import evaluate_model
from acm_exp.eval.backends import Generation
from acm_exp.eval.benchmarks import Example, load_benchmark
from acm_exp.eval.graders import GRADERS
from acm_exp.eval.runner import validate_eval_config
from acm_exp.eval.tasks import (
    Grade,
    Grader,
    GradeSettings,
    TaskFamily,
    fewshot_name,
    get_task,
    grader_name,
    register,
    task_of,
    unregister,
)

# ---------------------------------------------------------------------------------------------
# A tiny family, as README.md's "Add a benchmark" shows it: module + YAML.

CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid"}


def load_capitals(cfg, path: Path | None) -> list[dict]:
    count = int((cfg.get("options") or {}).get("n", len(CAPITALS)))
    return [{"country": c, "capital": k} for c, k in list(CAPITALS.items())[:count]]


def grade_capital(example: Example, response: str, settings: GradeSettings) -> Grade:
    words = response.replace(".", " ").split()
    extracted = words[-1] if words else None
    return Grade(extracted, extracted == example.gold)


CAPITALS_FAMILY = TaskFamily(
    "capitals",
    load_rows=load_capitals,
    options=("n",),
    generates_rows=True,
    grader=Grader(grade_capital, runs_code=False),
    exemplars=(("What is the capital of Germany?", "The answer is Berlin."),),
)

# grader and fewshot_set are left to the task's own.
CAPITALS_YAML = """
name: capitals
task: capitals
kind: math
question_field: country
answer_field: capital
options:
  n: 2
"""


@pytest.fixture
def capitals_family():
    register(CAPITALS_FAMILY)
    yield CAPITALS_FAMILY
    unregister(CAPITALS_FAMILY.name)


def capitals_benchmark():
    return OmegaConf.merge(OmegaConf.structured(BenchmarkConfig), OmegaConf.create(CAPITALS_YAML))


def eval_with_capitals(*overrides: str):
    eval_cfg = compose_config("eval=none", *overrides).eval
    with open_dict(eval_cfg.benchmarks):
        eval_cfg.benchmarks["capitals"] = capitals_benchmark()
    return eval_cfg


class ParisBackend:
    """Answers every prompt with Paris; keeps the prompts and stop strings it was given."""

    name = "paris"

    def __init__(self):
        self.prompts: list[str] = []
        self.stops: tuple[str, ...] = ()

    def generate(self, prompts, settings):
        self.prompts += prompts
        self.stops = settings.stop
        return [Generation("The answer is Paris.", 5, "stop") for _ in prompts]

    def close(self):
        pass


def test_a_family_defined_in_a_test_runs_end_to_end(capitals_family, tmp_path):
    tokenizer_dir = tmp_path / "tokenizer"
    save_tokenizer(tokenizer_dir)
    eval_cfg = eval_with_capitals("eval.backend=hf", "eval.device=cpu", "eval.num_fewshot=1")
    backend = ParisBackend()

    rows = evaluate_model(
        tokenizer_dir,
        label="m",
        role="base",
        prompt="cot",
        eval_cfg=eval_cfg,
        out_dir=tmp_path / "out",
        backend_factory=lambda *_: backend,
    )

    assert [(r["benchmark"], r["n"], r["accuracy"]) for r in rows] == [("capitals", 2, 50.0)]
    assert backend.prompts[0] == (
        "Question: What is the capital of Germany?\nAnswer: The answer is Berlin.\n\nQuestion: France\nAnswer:"
    )
    assert backend.stops == ("\nQuestion:",)
    records = [json.loads(line) for line in (tmp_path / "out" / "samples" / "capitals.jsonl").read_text().splitlines()]
    assert [(r["gold"], r["extracted"], r["correct"]) for r in records] == [
        ("Paris", "Paris", True),
        ("Rome", "Paris", False),
    ]


def test_a_registered_family_lends_its_grader_and_is_validated(capitals_family):
    assert GRADERS["capitals"] is capitals_family.grader
    assert [e.gold for e in load_benchmark(capitals_benchmark())] == ["Paris", "Rome"]
    eval_cfg = eval_with_capitals()
    eval_cfg.benchmarks["capitals"].options = {"release": "v1"}
    with pytest.raises(
        ConfigError, match=r"capitals.options has unknown key\(s\) \['release'\]; expected any of \('n',\)"
    ):
        validate_eval_config(eval_cfg, prompts=["cot"])


def test_without_the_family_the_benchmark_is_a_one_line_config_error():
    with pytest.raises(
        ConfigError,
        match=r"benchmark capitals: task family 'capitals' is unknown; expected one of \('gsm8k', 'hellaswag'",
    ) as error:
        task_of(capitals_benchmark())
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r"family 'nope' is unknown; expected one of \('gsm8k', .*, 'toy'\)"):
        get_task("nope")


SHIPPED_FAMILIES = [
    ("gsm8k", "gsm8k"),
    ("math500", "math"),
    ("aime24", "math"),
    ("minerva_math", "math"),
    ("olympiadbench", "math"),
    ("college_math", "math"),
    ("humaneval_pro", "humaneval_pro"),
    ("mbpp_pro", "mbpp_pro"),
    ("livecodebench", "livecodebench"),
    ("hellaswag", "hellaswag"),
    ("toy", "toy"),
]


def test_every_shipped_benchmark_yaml_is_listed_here():
    shipped = {path.stem for path in (Path(__file__).parent.parent / "conf" / "eval" / "benchmark").glob("*.yaml")}
    assert shipped == {name for name, _ in SHIPPED_FAMILIES}


@pytest.mark.parametrize(("benchmark", "family"), SHIPPED_FAMILIES)
def test_shipped_configs_name_their_task(benchmark, family):
    cfg = compose_config(f"+eval/benchmark@eval.benchmarks.{benchmark}={benchmark}", "eval=none").eval
    assert cfg.benchmarks[benchmark].task == family
    assert task_of(cfg.benchmarks[benchmark]).name == family


@pytest.mark.parametrize(("benchmark", "family"), [("gsm8k", "gsm8k"), ("humaneval_pro", "humaneval_pro")])
def test_configs_without_task_keep_their_family(benchmark, family):
    # An older config: task null, grader spelled out.
    cfg = compose_config(
        f"+eval/benchmark@eval.benchmarks.{benchmark}={benchmark}",
        "eval=none",
        f"eval.benchmarks.{benchmark}.task=null",
    ).eval
    with open_dict(cfg):
        cfg.benchmarks[benchmark].grader = family
    assert task_of(cfg.benchmarks[benchmark]).name == family


def test_grader_and_fewshot_set_default_to_the_tasks_own():
    gsm8k = {"name": "g", "task": "gsm8k"}
    assert (grader_name(gsm8k), fewshot_name(gsm8k)) == ("gsm8k", "gsm8k")
    # A task without exemplars shows the math family's; one without a grader lends none.
    code = {"name": "h", "task": "humaneval_pro"}
    assert (grader_name(code), fewshot_name(code)) == ("humaneval_pro", "math")
    assert grader_name({"name": "t", "task": "toy"}) is None
    # Spelled out, they borrow another family's.
    assert (grader_name({**gsm8k, "grader": "math"}), fewshot_name({**gsm8k, "fewshot_set": "math"})) == (
        "math",
        "math",
    )


def test_a_task_without_a_grader_needs_one_named():
    eval_cfg = compose_config("eval=toy").eval
    eval_cfg.benchmarks.toy.grader = None
    with pytest.raises(ConfigError, match=r"eval.benchmarks.toy.grader is null and task 'toy' has no grader") as error:
        validate_eval_config(eval_cfg, prompts=["toy"])
    assert "\n" not in str(error.value)


def test_config_hash_reads_grader_fewshot_set_and_task_in_one_form():
    """An older config (task null, grader and fewshot_set spelled out) and the shipped one (task
    named, the two left to it) hash alike; a task other than the implied one changes the hash."""
    shipped = compose_config("merge=ties", "eval=paper")
    older = compose_config("merge=ties", "eval=paper")
    for benchmark in older.eval.benchmarks.values():
        benchmark.grader = grader_name(benchmark)
        benchmark.fewshot_set = fewshot_name(benchmark)
        benchmark.task = None
    assert results.config_hash(older) == results.config_hash(shipped)
    # The value recorded before eval/tasks existed (commit ba8bd69 and earlier, when the toy suite had
    # eval.limit=50).
    recorded = compose_config("merge=ties", "eval=toy", "eval.limit=50")
    assert results.config_hash({"eval": OmegaConf.to_container(recorded.eval, resolve=True)}) == "d9d723634c5917fc"
    toy = compose_config("merge=ties", "eval=toy")
    assert results.config_hash(compose_config("merge=ties", "eval=toy", "eval.benchmarks.toy.task=toy")) == (
        results.config_hash(toy)
    )
    retasked = compose_config("merge=ties", "eval=toy", "eval.benchmarks.toy.task=math")
    assert results.config_hash(retasked) != results.config_hash(toy)


def test_example_and_the_registry_keep_their_old_import_names():
    from acm_exp.eval import benchmarks, tasks
    from acm_exp.eval.tasks import base

    assert benchmarks.Example is tasks.Example is base.Example
    assert tasks.GRADERS is base.GRADERS and tasks.register is base.register
