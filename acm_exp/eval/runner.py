"""Evaluate one model on the configured suite: prompts -> generations -> grades -> records -> metrics
(multiple-choice benchmarks: contexts -> the choices' log-likelihoods -> picks -> records -> metrics).

``validate_eval_config`` checks every cheap thing up front; ``evaluate_model`` loads the model only
when some (benchmark, seed) has no complete samples file yet, and frees it before returning.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acm_exp.costs import measure
from acm_exp.devices import check_device, dtype_name
from acm_exp.errors import ConfigError
from acm_exp.eval.backends import (
    Backend,
    Generation,
    SamplingSettings,
    check_backend,
    load_backend,
    load_tokenizer,
)
from acm_exp.eval.benchmarks import load_benchmark, validate_benchmark
from acm_exp.eval.graders import GRADERS, Grade, grade_all
from acm_exp.eval.grading import DEFAULT_NUMERIC_RULE, check_numeric_rule
from acm_exp.eval.loglikelihood import choose
from acm_exp.eval.metrics import benchmark_metrics, count_reflections, count_tokens, metric_rows
from acm_exp.eval.prompts import (
    build_prompt,
    choice_question,
    get_prompt,
    is_multiple_choice,
    stop_strings,
    validate_prompt,
)
from acm_exp.eval.samples import read_cost, reusable_records, samples_path, write_atomic, write_cost, write_records
from acm_exp.eval.tasks.base import ChoiceQuestion, Example, grader_name

log = logging.getLogger(__name__)

ROLES = ("base", "finetuned", "merged")
METRICS_FILE = "metrics.json"

# (model_path, eval_cfg, tokenizer, max_model_len) -> a loaded backend; tests inject fakes here.
BackendFactory = Callable[[Path, Any, Any, int | None], Backend]


@dataclass
class Job:
    """One (benchmark, seed) generation pass and, once done or reused, its records."""

    benchmark: str
    cfg: Any
    seed: int
    examples: list[Example]
    prompts: list[str]
    max_new_tokens: int
    path: Path
    records: list[dict[str, Any]] | None = field(default=None)
    # Multiple-choice benchmarks: each example's context, choices and gold index (scored, not generated).
    questions: list[ChoiceQuestion] | None = field(default=None)
    # The benchmark's full size: more than len(examples) when eval.limit took a subset.
    benchmark_size: int | None = field(default=None)


# ---------------------------------------------------------------------------------------------
# Validation


def validate_eval_config(eval_cfg: Any, data_dir: Path | str | None = None, *, prompts: Iterable[str] = ()) -> None:
    """Raise ConfigError on any bad eval value before a model loads.

    ``prompts``: the prompt names the run will use (the model pair's per-role prompts); each is
    checked against every benchmark, as is ``eval.prompt`` when set.
    """
    data_dir = Path(data_dir) if data_dir is not None else None
    unknown_roles = sorted(set(eval_cfg.models) - set(ROLES))
    if unknown_roles:
        raise ConfigError(f"eval.models has unknown role(s) {unknown_roles}; expected any of {ROLES}")
    check_backend(eval_cfg.backend)
    # The checks without the torch objects: only a CUDA device needs torch here (is it visible?).
    check_device(eval_cfg.device, "eval.device")
    dtype_name(eval_cfg.dtype, "eval.dtype", allow_auto=True)
    _check_positive("eval.batch_size", eval_cfg.batch_size)
    _check_positive("eval.max_new_tokens", eval_cfg.max_new_tokens)
    _check_positive("eval.base_max_new_tokens", eval_cfg.base_max_new_tokens)
    _check_positive("eval.grading_workers", eval_cfg.grading_workers)
    if eval_cfg.limit is not None:
        _check_positive("eval.limit", eval_cfg.limit)
    seeds = list(eval_cfg.seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"eval.seeds={seeds}; expected a non-empty list of distinct non-negative integers")
    if not (math.isfinite(eval_cfg.temperature) and eval_cfg.temperature >= 0):
        raise ConfigError(f"eval.temperature={eval_cfg.temperature}; expected a number >= 0 (0 = greedy)")
    if not 0 < eval_cfg.top_p <= 1:
        raise ConfigError(f"eval.top_p={eval_cfg.top_p}; expected a number in (0, 1]")
    if eval_cfg.num_fewshot < 0:
        raise ConfigError(f"eval.num_fewshot={eval_cfg.num_fewshot}; expected an integer >= 0")
    _validate_vllm(eval_cfg.vllm)
    validate_code_grading(eval_cfg)
    check_numeric_rule(math_numeric_rule(eval_cfg))
    prompt_names = [eval_cfg.prompt] if eval_cfg.prompt else list(dict.fromkeys(prompts))
    for name in prompt_names:
        get_prompt(name)
    for key, benchmark in eval_cfg.benchmarks.items():
        validate_benchmark(key, benchmark, data_dir)
        for name in prompt_names:
            validate_prompt(name, benchmark, eval_cfg.num_fewshot)


def validate_code_grading(eval_cfg: Any) -> None:
    """Code benchmarks: the grading mode, their time limits, and working isolation (fails closed:
    without usable bubblewrap and no explicit eval.sandbox=none this raises, before any model loads)."""
    from acm_exp.eval.code import check_code_grading
    from acm_exp.eval.sandbox import resolve_isolation

    check_code_grading(eval_cfg.get("code_grading", "official"))
    code_benchmarks = [key for key, cfg in eval_cfg.benchmarks.items() if _runs_code(cfg)]
    for key in code_benchmarks:
        timeout_s = eval_cfg.benchmarks[key].get("timeout_s")
        if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ConfigError(
                f"eval.benchmarks.{key}.timeout_s={timeout_s}; expected a positive number of "
                "seconds or null (the benchmark's official limit)"
            )
    if code_benchmarks:
        resolve_isolation(eval_cfg.get("sandbox"))


def code_sandbox_record(eval_cfg: Any) -> dict[str, Any] | None:
    """For records and manifests: the isolation code benchmarks ran under, the grading mode, and
    whether isolation was waived (eval.sandbox=none / ACM_EXP_SANDBOX=none); None without code."""
    from acm_exp.eval.sandbox import isolation_record

    if not any(_runs_code(cfg) for cfg in eval_cfg.benchmarks.values()):
        return None
    return {**isolation_record(eval_cfg.get("sandbox")), "code_grading": eval_cfg.get("code_grading", "official")}


def _runs_code(benchmark_cfg: Any) -> bool:
    """Whether the benchmark's grader runs model-written programs (needs the sandbox)."""
    grader = grader_name(benchmark_cfg)
    return not is_multiple_choice(benchmark_cfg) and grader in GRADERS and GRADERS[grader].runs_code


def math_numeric_rule(eval_cfg: Any) -> str:
    """eval.grading.numeric (configs written before it existed: the default rule)."""
    return (eval_cfg.get("grading") or {}).get("numeric", DEFAULT_NUMERIC_RULE)


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value}; expected a positive integer")


def _validate_vllm(vllm_cfg: Any) -> None:
    _check_positive("eval.vllm.tensor_parallel_size", vllm_cfg.tensor_parallel_size)
    utilization = vllm_cfg.gpu_memory_utilization
    if utilization is not None and not 0 < utilization <= 1:
        raise ConfigError(f"eval.vllm.gpu_memory_utilization={utilization}; expected (0, 1] or null (platform default)")
    _check_positive("eval.vllm.cpu_kvcache_space_gib", vllm_cfg.cpu_kvcache_space_gib)
    if vllm_cfg.max_model_len is not None:
        _check_positive("eval.vllm.max_model_len", vllm_cfg.max_model_len)


# ---------------------------------------------------------------------------------------------
# Evaluation


def max_new_tokens_for(benchmark_cfg: Any, role: str, eval_cfg: Any) -> int:
    """A benchmark's own max_new_tokens, else the role's (the fast base model gets its own budget)."""
    if benchmark_cfg.get("max_new_tokens"):
        return int(benchmark_cfg["max_new_tokens"])
    return int(eval_cfg.base_max_new_tokens if role == "base" else eval_cfg.max_new_tokens)


def plan_jobs(
    eval_cfg: Any, *, role: str, prompt: str, tokenizer: Any, out_dir: Path, data_dir: Path | None
) -> list[Job]:
    """Every (benchmark, seed) pass with its examples and prompts; complete samples files are attached."""
    seeds = list(eval_cfg.seeds)
    jobs = []
    for key, benchmark_cfg in eval_cfg.benchmarks.items():
        examples = load_benchmark(benchmark_cfg, data_dir, eval_cfg.limit)
        prompts = [build_prompt(prompt, ex, benchmark_cfg, tokenizer, eval_cfg.num_fewshot) for ex in examples]
        questions = (
            [choice_question(ex, benchmark_cfg) for ex in examples] if is_multiple_choice(benchmark_cfg) else None
        )
        ids = [ex.id for ex in examples]
        size = benchmark_size(benchmark_cfg, data_dir, eval_cfg.limit, len(examples))
        for seed in seeds:
            path = samples_path(out_dir / "samples", key, seed, several_seeds=len(seeds) > 1)
            job = Job(
                key,
                benchmark_cfg,
                seed,
                examples,
                prompts,
                max_new_tokens_for(benchmark_cfg, role, eval_cfg),
                path,
                questions=questions,
                benchmark_size=size,
            )
            job.records = reusable_records(path, ids, prompts)
            if job.records is not None:
                log.info("%s seed %d: reusing %d samples from %s", key, seed, len(job.records), path)
            jobs.append(job)
    return jobs


def benchmark_size(benchmark_cfg: Any, data_dir: Path | None, limit: int | None, evaluated: int) -> int:
    """How many questions the benchmark has (what a results row's ``n`` is compared with): the
    evaluated ones, unless ``eval.limit`` may have cut it, which takes one more read of the rows."""
    if limit is None or evaluated < limit:
        return evaluated
    return len(load_benchmark(benchmark_cfg, data_dir))


def context_length_needed(jobs: Iterable[Job], tokenizer: Any) -> int:
    """Longest prompt plus its generation budget over the jobs (vLLM's max_model_len when unset)."""
    needed: dict[str, int] = {}
    for job in jobs:
        if job.benchmark in needed:  # seeds of one benchmark share their prompts
            continue
        if job.questions is not None:
            # Scoring: the whole context + continuation is the prompt, and one token follows it.
            needed[job.benchmark] = 1 + max(
                len(tokenizer(q.context + continuation, add_special_tokens=True)["input_ids"])
                for q in job.questions
                for continuation in q.continuations
            )
        else:
            longest = max(len(tokenizer(p, add_special_tokens=True)["input_ids"]) for p in job.prompts)
            needed[job.benchmark] = longest + job.max_new_tokens
    return max(needed.values(), default=0)


def make_records(job: Job, generations: list[Generation], grades: list[Grade], tokenizer: Any) -> list[dict]:
    return [
        {
            "id": example.id,
            "seed": job.seed,
            "prompt": prompt,
            "response": generation.text,
            "extracted": grade.extracted,
            "gold": example.gold,
            "correct": grade.correct,
            "grade_status": grade.status,
            "tokens": count_tokens(tokenizer, generation.text),
            "generated_tokens": generation.num_tokens,
            "finish_reason": generation.finish_reason,
            "reflections": count_reflections(generation.text),
        }
        for example, prompt, generation, grade in zip(job.examples, job.prompts, generations, grades, strict=True)
    ]


def choice_records(job: Job, loglikelihoods: list[list[float]]) -> list[dict]:
    """Records of a multiple-choice pass: ``correct`` is lm-evaluation-harness's acc, ``correct_norm``
    its acc_norm; nothing was generated, so ``tokens`` is NaN (no response length) and the response
    is the chosen choice."""
    records = []
    for example, question, scores in zip(job.examples, job.questions or [], loglikelihoods, strict=True):
        pick, pick_norm = choose(question, scores)
        records.append(
            {
                "id": example.id,
                "seed": job.seed,
                "prompt": question.context,
                "response": question.choices[pick],
                "extracted": str(pick),
                "gold": example.gold,
                "correct": pick == question.gold,
                "correct_norm": pick_norm == question.gold,
                "extracted_norm": str(pick_norm),
                "loglikelihoods": list(scores),
                "grade_status": "",
                "tokens": math.nan,
                "generated_tokens": 0,
                "finish_reason": "stop",
                "reflections": 0,
            }
        )
    return records


def run_choice_job(job: Job, backend: Backend, *, label: str) -> list[dict]:
    """Score every choice of every question in one backend call, then pick as the harness does."""
    questions = job.questions or []
    requests = [(q.context, continuation) for q in questions for continuation in q.continuations]
    log.info("%s: scoring %s (%d questions, %d choices)", label, job.benchmark, len(questions), len(requests))
    scores = backend.loglikelihoods(requests)
    if len(scores) != len(requests):
        raise RuntimeError(f"backend {backend.name} returned {len(scores)} scores for {len(requests)} choices")
    per_question, start = [], 0
    for question in questions:
        per_question.append(scores[start : start + len(question.choices)])
        start += len(question.choices)
    return choice_records(job, per_question)


def run_job(job: Job, backend: Backend, *, prompt: str, eval_cfg: Any, tokenizer: Any, label: str) -> list[dict]:
    if job.questions is not None:
        return run_choice_job(job, backend, label=label)
    settings = SamplingSettings(
        max_new_tokens=job.max_new_tokens,
        temperature=float(eval_cfg.temperature),
        top_p=float(eval_cfg.top_p),
        seed=job.seed,
        stop=stop_strings(prompt, job.cfg),
    )
    log.info(
        "%s: generating %s seed %d (%d prompts, max %d new tokens)",
        label,
        job.benchmark,
        job.seed,
        len(job.prompts),
        job.max_new_tokens,
    )
    generations = backend.generate(job.prompts, settings)
    if len(generations) != len(job.prompts):
        raise RuntimeError(
            f"backend {backend.name} returned {len(generations)} generations for {len(job.prompts)} prompts"
        )
    grades = grade_all(
        grader_name(job.cfg),
        job.examples,
        [g.text for g in generations],
        timeout_s=job.cfg.get("timeout_s"),
        workers=int(eval_cfg.grading_workers),
        desc=f"grading {job.benchmark}",
        code_grading=eval_cfg.get("code_grading", "official"),
        isolation=eval_cfg.get("sandbox"),
        math_numeric=math_numeric_rule(eval_cfg),
    )
    return make_records(job, generations, grades, tokenizer)


def default_backend_factory(model_path: Path, eval_cfg: Any, tokenizer: Any, max_model_len: int | None) -> Backend:
    return load_backend(
        model_path, eval_cfg, tokenizer=tokenizer, seed=int(list(eval_cfg.seeds)[0]), max_model_len=max_model_len
    )


def evaluate_model(
    model_path: str | Path,
    *,
    label: str,
    role: str,
    prompt: str,
    eval_cfg: Any,
    out_dir: Path,
    data_dir: Path | None = None,
    backend_factory: BackendFactory | None = None,
) -> list[dict]:
    """Evaluate one model on every benchmark and seed of ``eval_cfg``; returns the metric rows.

    Writes ``<out_dir>/samples/<benchmark>[__seed<k>].jsonl`` (reused when complete) and
    ``<out_dir>/metrics.json``. Rows: see acm_exp.eval.metrics (keys model, role, benchmark, seed,
    num_seeds, n, accuracy, mean_tokens, truncation_rate, reflections and their ``_std``), plus
    ``samples_path`` (the per-sample file of a per-seed row; None on aggregate rows).
    """
    if role not in ROLES:
        raise ConfigError(f"role={role!r}; expected one of {ROLES}")
    validate_eval_config(eval_cfg, data_dir, prompts=[prompt])
    prompt = eval_cfg.prompt or prompt
    out_dir = Path(out_dir)
    data_dir = Path(data_dir) if data_dir is not None else None
    tokenizer = load_tokenizer(model_path)
    jobs = plan_jobs(eval_cfg, role=role, prompt=prompt, tokenizer=tokenizer, out_dir=out_dir, data_dir=data_dir)
    pending = [job for job in jobs if job.records is None]
    if pending:
        factory = backend_factory or default_backend_factory
        backend = factory(Path(model_path), eval_cfg, tokenizer, context_length_needed(pending, tokenizer))
        try:
            # Log-likelihoods do not depend on the seed: a multiple-choice benchmark is scored once.
            scored: dict[str, list[dict]] = {}
            for job in pending:
                with measure("generation", model=label, benchmark=job.benchmark, seed=job.seed) as cost:
                    if job.benchmark in scored:
                        job.records = [{**record, "seed": job.seed} for record in scored[job.benchmark]]
                    else:
                        job.records = run_job(
                            job, backend, prompt=prompt, eval_cfg=eval_cfg, tokenizer=tokenizer, label=label
                        )
                    if job.questions is not None:
                        scored[job.benchmark] = job.records
                    cost.tokens = sum(int(record.get("generated_tokens") or 0) for record in job.records)
                    write_records(job.path, job.records)
                write_cost(job.path, cost.as_original())
        finally:
            backend.close()
    generated = {id(job) for job in pending}
    for job in jobs:
        if id(job) not in generated:
            with measure("generation", model=label, benchmark=job.benchmark, seed=job.seed) as cost:
                cost.note_cache_hit(read_cost(job.path))
    per_benchmark: dict[str, dict[int, dict]] = {}
    for job in jobs:
        per_benchmark.setdefault(job.benchmark, {})[job.seed] = benchmark_metrics(job.records or [])
    rows = metric_rows({"model": label, "role": role}, per_benchmark)
    paths = {(job.benchmark, job.seed): str(job.path) for job in jobs}
    sizes = {job.benchmark: job.benchmark_size for job in jobs}
    for row in rows:
        row["samples_path"] = paths.get((row["benchmark"], row["seed"]))  # None on aggregate rows
        row["benchmark_size"] = sizes.get(row["benchmark"])
    summary = {
        "model": label,
        "role": role,
        "model_path": str(model_path),
        "prompt": prompt,
        "code_sandbox": code_sandbox_record(eval_cfg),
        "rows": rows,
    }
    write_atomic(out_dir / METRICS_FILE, json.dumps(summary, indent=2, allow_nan=True) + "\n")
    several_seeds = len(list(eval_cfg.seeds)) > 1
    for row in rows:
        if (row["seed"] is None) == several_seeds:  # the aggregate when there is one, else the single run
            log.info(
                "%s %s: accuracy %.1f%%, %.0f tokens, truncated %.1f%% (n=%d)",
                label,
                row["benchmark"],
                row["accuracy"],
                row["mean_tokens"],
                row["truncation_rate"],
                row["n"],
            )
    return rows
