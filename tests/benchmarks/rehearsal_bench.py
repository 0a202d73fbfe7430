"""Cost at real shape: the full-depth 1.5B stand-in pair, stage by stage, beside acm_exp.costs' prediction.

Run by hand (about 10 minutes on 2 idle CPU cores; it needs about 12 GiB of memory and 14 GB of disk
under --work-dir):

    python tests/benchmarks/rehearsal_bench.py --work-dir /tmp/standin/bench

It builds the stand-ins of Qwen2.5-Math-1.5B and DeepSeek-R1-Distill-Qwen-1.5B at full depth
(``acm_exp.stand_in``; reused when already there), then runs each stage in a process of its own, so
that its peak memory (the process's high-water mark, VmHWM) is that stage's alone:

- ``runtime``: python, torch and transformers loaded (the floor under every stage's host memory);
- ``calibration``: the s1K selection (MiniLM embeddings of the 1,000 questions, K-means, the
  reference pick), with an empty cache;
- ``capture`` at 512 and at 2,048 tokens: both models loaded in bf16, the activations of every
  capture point (the 151,936-wide lm_head included) and their MI, per sample (s1K text);
- ``merge``: TIES over the pair, streamed shard by shard;
- ``generation``: the merged model generating greedily with the hf backend (tokens/s).

Beside each: the peak ``acm_exp.costs`` predicts for the same shape (``stage_prediction``), and the
ratio measured / predicted, which must lie within 0.8-1.2 (exit status 1 otherwise: fix the cost
model, not this script). The machine load (``uptime``) is printed with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
PAIR = "qwen2.5-1.5b"
TOLERANCE = 0.2
GIB = 2**30


def high_water_mark() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def s1k_token_ids(tokenizer_dir: Path, tokens: int, samples: int) -> list[list[int]]:
    """``samples`` samples of exactly ``tokens`` tokens of s1K question text (questions concatenated)."""
    from transformers import AutoTokenizer

    from acm_exp.paths import data_dir

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = [json.loads(line) for line in (data_dir() / "s1k" / "train.jsonl").open(encoding="utf-8")]
    stream: list[int] = []
    for row in rows:
        stream += tokenizer(row["question"] + "\n\n", add_special_tokens=False)["input_ids"]
        if len(stream) >= tokens * samples:
            break
    return [stream[index * tokens : (index + 1) * tokens] for index in range(samples)]


# ---------------------------------------------------------------------------------------------
# Stages (each in its own process)


def stage_runtime(arguments) -> dict:
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import acm_exp.acm.capture  # noqa: F401

    return {}


def stage_calibration(arguments) -> dict:
    from dataclasses import replace

    from acm_exp.calibration import select_calibration
    from acm_exp.config import CalibrationConfig

    cfg = CalibrationConfig(name="s1k", source="simplescaling/s1K", cluster_pick="reference")
    selected = select_calibration(replace(cfg), cache_dir=arguments.work_dir / f"calibration-cache-{os.getpid()}")
    return {"samples": len(selected.texts), "corpus": selected.corpus_size}


def stage_capture(arguments) -> dict:
    import torch

    from acm_exp.acm.capture import collect_mi_statistics
    from acm_exp.acm.modeling import load_causal_lm
    from acm_exp.devices import resolve_placement

    base, finetuned = arguments.work_dir / "stand_in" / "base", arguments.work_dir / "stand_in" / "finetuned"
    ids = s1k_token_ids(base, arguments.tokens, arguments.samples + 1)
    placement = resolve_placement("cpu")
    started = time.perf_counter()
    models = [load_causal_lm(path, placement, torch.bfloat16, side_by_side=2) for path in (base, finetuned)]
    load_s = time.perf_counter() - started
    collect_mi_statistics(models[0], models[1:], ids[:1], progress=False)  # warm-up: kernels, allocator
    started = time.perf_counter()
    statistics = collect_mi_statistics(models[0], models[1:], ids[1:], progress=False)
    seconds = time.perf_counter() - started
    assert statistics.mi.shape[1] == len(statistics.point_names) and "lm_head" in statistics.point_names
    return {"load_s": load_s, "per_sample_s": seconds / arguments.samples, "samples": arguments.samples}


def stage_merge(arguments) -> dict:
    from acm_exp.config import MergeConfig
    from acm_exp.merge import MergeSettings, get_method, open_inputs, run_merge

    stand_in = arguments.work_dir / "stand_in"
    inputs = open_inputs(stand_in / "base", [stand_in / "finetuned"])
    try:
        run_merge(
            inputs,
            get_method("ties"),
            MergeConfig(method="ties", k=0.8, scale=1.0),
            MergeSettings(output_dir=arguments.work_dir / "merged", device="cpu", overwrite=True),
        )
    finally:
        inputs.close()
    return {}


def stage_generation(arguments) -> dict:
    from acm_exp.eval.backends import HfBackend, SamplingSettings

    merged = arguments.work_dir / "merged"
    prompts = [
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        for question in ("What is 12 + 30?", "Natalia sold clips to 48 of her friends in April. How many?")
    ][: arguments.batch]
    backend = HfBackend(merged, device="cpu", dtype="bfloat16", batch_size=len(prompts))
    try:
        backend.generate(prompts[:1], SamplingSettings(max_new_tokens=2))  # warm-up
        started = time.perf_counter()
        generations = backend.generate(prompts, SamplingSettings(max_new_tokens=arguments.new_tokens))
        seconds = time.perf_counter() - started
        prompt_tokens = max(len(backend.tokenizer(prompt)["input_ids"]) for prompt in prompts)
    finally:
        backend.close()
    tokens = sum(generation.num_tokens for generation in generations)
    return {"tokens_per_s": tokens / seconds, "tokens": tokens, "prompt_tokens": prompt_tokens}


STAGES = {
    "runtime": stage_runtime,
    "calibration": stage_calibration,
    "capture": stage_capture,
    "merge": stage_merge,
    "generation": stage_generation,
}


def run_stage(name: str, arguments, **options) -> dict:
    """The stage in a fresh process: its result with its wall time and peak memory."""
    command = [sys.executable, str(SCRIPT), "--stage", name, "--work-dir", str(arguments.work_dir)]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"stage {name} failed:\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


# ---------------------------------------------------------------------------------------------
# The report


def row(label: str, result: dict, predicted: int | None, extra: str = "") -> bool:
    measured = result["peak_bytes"]
    ratio = measured / predicted if predicted else None
    agrees = ratio is None or abs(ratio - 1) <= TOLERANCE
    ratio_text = f"{ratio:5.2f}" if ratio is not None else "    -"
    predicted_text = f"{predicted / GIB:6.2f}" if predicted else "     -"
    print(
        f"{label:<26} {result['wall_s']:8.1f} s  {measured / GIB:6.2f} GiB  {predicted_text} GiB  {ratio_text}"
        f"{'' if agrees else '  <-- off by more than 20 %'}  {extra}",
        flush=True,
    )
    return agrees


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, required=True, help="stand-ins, merge and caches (about 14 GB)")
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (default: the real 28)")
    parser.add_argument("--capture-tokens", default="512,2048", help="sample lengths of the capture stage")
    parser.add_argument("--samples", type=int, default=2, help="timed capture samples per length")
    parser.add_argument("--new-tokens", type=int, default=32, help="generated tokens per prompt")
    parser.add_argument("--batch", type=int, default=2, help="prompts generated together")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, default=512, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    arguments.work_dir = arguments.work_dir.resolve()

    if arguments.stage:
        started = time.perf_counter()
        result = STAGES[arguments.stage](arguments)
        result.update(wall_s=time.perf_counter() - started, peak_bytes=high_water_mark())
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    from acm_exp import costs
    from acm_exp.model_facts import MODELS
    from acm_exp.stand_in import build_stand_in

    started = time.perf_counter()
    stand_in = build_stand_in(arguments.work_dir / "stand_in", PAIR, layers=arguments.layers)
    build_s = time.perf_counter() - started
    base_facts = MODELS["Qwen/Qwen2.5-Math-1.5B"]
    shape = costs.ModelShape.from_config("1.5B", {**base_facts.config, "num_hidden_layers": stand_in.layers})
    print(
        f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (uptime 1 and 5 min)"
    )
    print(
        f"stand-in {PAIR}, {stand_in.layers} layers: {stand_in.bytes / 1e9:.2f} GB "
        f"({'reused' if all(m.reused for m in stand_in.models) else f'built in {build_s:.0f} s'})"
    )
    print(f"{'stage':<26} {'wall':>10}  {'peak':>10}  {'predicted':>10}  ratio")
    agree = []
    runtime = run_stage("runtime", arguments)
    row("runtime (imports)", runtime, costs.HOST_RUNTIME_BYTES)
    calibration = run_stage("calibration", arguments)
    agree.append(row("calibration (s1K, 100)", calibration, costs.stage_prediction("calibration", shape)))
    for tokens in (int(value) for value in arguments.capture_tokens.split(",")):
        capture = run_stage("capture", arguments, tokens=tokens, samples=arguments.samples)
        agree.append(
            row(
                f"capture + MI, {tokens} tokens",
                capture,
                costs.stage_prediction("capture", shape, tokens=tokens),
                f"{capture['per_sample_s']:.2f} s per sample (models loaded in {capture['load_s']:.0f} s)",
            )
        )
    merge = run_stage("merge", arguments)
    agree.append(row("merge (TIES)", merge, costs.stage_prediction("merge", shape)))
    generation = run_stage("generation", arguments, new_tokens=arguments.new_tokens, batch=arguments.batch)
    agree.append(
        row(
            f"generation (hf, batch {arguments.batch})",
            generation,
            costs.stage_prediction(
                "generation", shape, tokens=generation["prompt_tokens"] + arguments.new_tokens, batch=arguments.batch
            ),
            f"{generation['tokens_per_s']:.1f} tokens/s",
        )
    )
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
    return 0 if all(agree) else 1


if __name__ == "__main__":
    sys.exit(main())
