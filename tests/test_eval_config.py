"""Suite composition with Hydra, and validate_eval_config's early, one-line errors."""

from __future__ import annotations

import pytest
from app_config import compose_config
from omegaconf import OmegaConf

from acm_exp.errors import ConfigError
from acm_exp.eval import validate_eval_config

L2S = ["gsm8k", "math500", "minerva_math", "olympiadbench", "college_math", "aime24"]
CODE = ["humaneval_pro", "livecodebench"]


@pytest.mark.parametrize(
    "suite, benchmarks",
    [
        ("l2s", L2S),
        ("code", CODE),
        ("paper", L2S + CODE),
        ("toy", ["toy"]),
        ("none", []),
    ],
)
def test_suites_compose(suite, benchmarks):
    cfg = compose_config(f"eval={suite}")
    assert cfg.eval.name == suite
    assert list(cfg.eval.benchmarks) == benchmarks
    for key, benchmark in cfg.eval.benchmarks.items():
        assert benchmark.name == key


def test_command_line_overrides_reach_benchmarks():
    cfg = compose_config("eval=l2s", "eval.limit=20", "eval.benchmarks.gsm8k.max_new_tokens=512", "eval.seeds=[0,1,2]")
    assert cfg.eval.limit == 20
    assert cfg.eval.benchmarks.gsm8k.max_new_tokens == 512
    assert cfg.eval.benchmarks.math500.max_new_tokens is None
    assert list(cfg.eval.seeds) == [0, 1, 2]


def test_a_benchmark_can_be_added_to_a_suite():
    cfg = compose_config("eval=toy", "+eval/benchmark@eval.benchmarks.math500=math500")
    assert list(cfg.eval.benchmarks) == ["toy", "math500"]


def test_typed_benchmark_fields_reject_typos():
    with pytest.raises(Exception, match="max_new_token"):
        compose_config("eval=l2s", "eval.benchmarks.gsm8k.max_new_token=5")


def test_benchmark_yaml_fields():
    benchmarks = compose_config("eval=paper").eval.benchmarks
    assert benchmarks.gsm8k.source == "openai/gsm8k" and benchmarks.gsm8k.subset == "main"
    assert benchmarks.math500.source == "HuggingFaceH4/MATH-500"
    assert benchmarks.aime24.source == "HuggingFaceH4/aime_2024"
    assert benchmarks.humaneval_pro.source == "CodeEval-Pro/humaneval-pro"
    assert benchmarks.livecodebench.source == "livecodebench/code_generation_lite"
    assert set(benchmarks.livecodebench.options) == {"release", "start_date", "end_date"}
    assert compose_config("eval=toy").eval.benchmarks.toy.source == "toy"


def test_toy_suite_runs_on_cpu_with_hf():
    cfg = compose_config("eval=toy").eval
    assert (cfg.backend, cfg.device, cfg.dtype, cfg.batch_size) == ("hf", "cpu", "float32", 32)
    # The whole generated test split: a complete evaluation, not a subset.
    assert cfg.limit is None and cfg.benchmarks.toy.options.n == 100


@pytest.mark.parametrize("suite", ["l2s", "code", "paper"])
def test_suites_validate_against_the_shared_data(suite, shared_data_dir):
    cfg = compose_config(f"eval={suite}", "eval.backend=hf", "eval.device=cpu")
    validate_eval_config(cfg.eval, shared_data_dir, prompts=["qwen25-math-cot", "cot", "chat_template"])


def test_toy_suite_validates_without_data():
    cfg = compose_config("eval=toy")
    validate_eval_config(cfg.eval, None, prompts=["toy"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("eval.backend=tgi", "eval.backend='tgi'"),
        ("eval.device=tpu", "eval.device='tpu'"),
        ("eval.dtype=fp8", "eval.dtype='fp8'"),
        ("eval.seeds=[]", "eval.seeds"),
        ("eval.seeds=[0,0]", "eval.seeds"),
        ("eval.limit=0", "eval.limit=0"),
        ("eval.batch_size=0", "eval.batch_size=0"),
        ("eval.top_p=0", "eval.top_p=0"),
        ("eval.temperature=-1", "eval.temperature=-1"),
        ("eval.models=[slow]", "unknown role"),
        ("eval.prompt=fancy", "prompt 'fancy' is unknown"),
        ("eval.num_fewshot=9", "eval.num_fewshot=9"),
        ("eval.benchmarks.gsm8k.grader=regex", "eval.benchmarks.gsm8k.grader='regex'"),
        ("eval.benchmarks.gsm8k.answer_format=xml", "answer_format='xml'"),
        ("eval.benchmarks.gsm8k.kind=essay", "kind='essay'"),
        ("eval.benchmarks.gsm8k.max_new_tokens=0", "max_new_tokens=0"),
        ("eval.vllm.gpu_memory_utilization=1.5", "gpu_memory_utilization=1.5"),
        ("+eval.benchmarks.gsm8k.options.release=v1", "options has unknown key"),
    ],
)
def test_bad_values_are_config_errors(override, message, shared_data_dir):
    cfg = compose_config("eval=l2s", "eval.backend=hf", "eval.device=cpu", override)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        validate_eval_config(cfg.eval, shared_data_dir, prompts=["cot"])


def test_missing_local_file_without_source_is_a_config_error(tmp_path):
    cfg = compose_config("eval=l2s", "eval.backend=hf", "eval.benchmarks.gsm8k.source=null")
    with pytest.raises(ConfigError, match="gsm8k.*not found"):
        validate_eval_config(cfg.eval, tmp_path)


def test_missing_local_file_with_a_hub_source_is_fine(tmp_path):
    cfg = compose_config("eval=l2s", "eval.backend=hf", "eval.device=cpu")
    validate_eval_config(cfg.eval, tmp_path)
    assert OmegaConf.select(cfg, "eval.benchmarks.gsm8k.source") == "openai/gsm8k"
