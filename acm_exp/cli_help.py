"""``python -m acm_exp --help``: what the app does, the config groups to choose from, examples, and where
outputs go. The groups and their options are read from conf/ (the files users choose; the typed
``*_schema`` entries live only in Hydra's ConfigStore and are not choices), so the help never lists a
stale option. Nothing heavy is imported: the help prints in a fraction of a second.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
LINE_WIDTH = 104

# Groups chosen by the app itself, not by users.
AUTOMATIC_GROUPS = {"paper_defaults"}

# group -> how it is written on the command line and what it chooses.
GROUP_NOTES = {
    "model_pair": "the base and fine-tuned models (toy: the embedded pair, no network; custom: "
    "model_pair.base=... model_pair.finetuned=[...])",
    "merge": "the merge method and its parameters (merge.t, merge.scale, merge.k, ...)",
    "calibration": "the calibration corpus of ACM, AIM and Sens-Merging",
    "calibration/selection": "+calibration/selection=<option>: the ablations' 120-sample selections",
    "eval": "the benchmarks evaluated (none: merge only)",
    "eval/benchmark": "+eval/benchmark@eval.benchmarks.<key>=<option>: add one benchmark",
    "logger": "W&B (offline by default) and the local results table",
    "experiment": "+experiment=<option> with -m: one table or figure of the paper, as a sweep",
    "hydra/launcher": 'run a sweep\'s points as one SLURM job array (pip install -e ".[slurm]"); '
    "slurm: GPU tasks sized per experiment, slurm_cpu: CPU partitions and trying it out",
}

SUMMARY = """\
acm_exp merges large language models with Activation-Guided Consensus Merging (ACM: per-layer
coefficients from the mutual information between the activations of a base model and its fine-tuned
versions) or one of the baselines it is compared with (Task Arithmetic, TIES, DARE, Breadcrumbs, AIM,
Sens-Merging), evaluates the merged model and its inputs on math and code benchmarks (GSM8K, MATH500,
AIME24, Minerva, OlympiadBench, College Math, HumanEval-Pro, LiveCodeBench; hf or vLLM backends), and
records accuracy and mean response length per benchmark in a results table (and W&B), from which the
paper's tables and figures are drawn. Every setting is a Hydra config: choose an option of each group
and set any key on the command line; a sweep (-m) runs one job per point, locally or on SLURM."""

USAGE = """\
usage: python -m acm_exp [group=option ...] [key=value ...]      one job
       python -m acm_exp -m [key=a,b,c ...] [+experiment=NAME]   a sweep: one job per point"""

EXAMPLES = """\
examples:
  # the default job: the embedded toy pair, merged with ACM-TIES and evaluated on CPU, no network
  python -m acm_exp
  # a paper pair from the Hugging Face hub (fetch it first on a login node: python -m acm_exp.prefetch ...)
  python -m acm_exp model_pair=qwen2.5-7b merge=ties
  # a t sweep: the MI statistics are computed once and shared by the points
  python -m acm_exp -m merge=acm_ties merge.t=0.3,0.5,0.7,0.9,1.1
  # a paper experiment (Table 1 at 7B) as one SLURM job array, one task per method
  python -m acm_exp -m +experiment=l2s_7b hydra/launcher=slurm hydra.launcher.partition=gpu
  # every table and figure from the results table
  python -m acm_exp.figures out=figures/"""

OUTPUTS = """\
outputs:
  run directory   outputs/runs/<date>/<time>_<pair>_<method>/ (a sweep: outputs/multirun/<date>/<time>/<n>/;
                  hydra.run.dir / hydra.sweep.dir): resolved_config.yaml, merged/ (the merged model and its
                  merge_manifest.json; merge.output_dir puts it elsewhere), eval/ (per-sample answers),
                  costs.json, the log __main__.log (tracebacks go there), W&B's offline run in wandb/
  results table   outputs/results/ (logger.results_dir or $ACM_EXP_RESULTS_DIR): one row per model,
                  benchmark and seed; read it with python -m acm_exp.results [column=value ...] or
                  acm_exp.results.load_results(); figures with python -m acm_exp.figures out=DIR
  caches          cache_dir or $ACM_EXP_CACHE: the toy pair, MI statistics, calibration embeddings,
                  input-model evaluations (a rerun reuses them; a complete run is skipped)
  SLURM           slurm/README.md: hydra/launcher=slurm, or slurm/array.sbatch (logs in outputs/slurm/)

more: python -m acm_exp [overrides] --cfg job prints the composed config; --hydra-help lists Hydra's own
flags; python -m acm_exp.prefetch [overrides] fetches a run's models and datasets ahead of time."""


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """group -> its options (the YAML files under conf/), groups users choose only."""
    groups: dict[str, list[str]] = {}
    for path in sorted(conf_dir.rglob("*.yaml")):
        group = path.parent.relative_to(conf_dir).as_posix()
        if group != "." and group not in AUTOMATIC_GROUPS:
            groups.setdefault(group, []).append(path.stem)
    return groups


def groups_text(conf_dir: Path = CONF_DIR) -> str:
    groups = config_groups(conf_dir)
    indent = " " * (max(map(len, groups), default=0) + 4)
    lines = ["config groups (group=option):"]
    for group, options in groups.items():
        first = f"  {group}".ljust(len(indent))
        lines += textwrap.wrap(", ".join(options), LINE_WIDTH, initial_indent=first, subsequent_indent=indent)
        if group in GROUP_NOTES:
            lines += textwrap.wrap(GROUP_NOTES[group], LINE_WIDTH, initial_indent=indent, subsequent_indent=indent)
    lines.append("  (paper_defaults is chosen by itself: the paper's per-size values of the chosen merge and pair)")
    return "\n".join(lines)


def help_text(conf_dir: Path = CONF_DIR) -> str:
    return "\n\n".join([SUMMARY, USAGE, groups_text(conf_dir), EXAMPLES, OUTPUTS])
