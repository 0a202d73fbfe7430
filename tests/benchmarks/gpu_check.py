"""Prepared GPU check: merge, capture + MI and hf generation on an accelerator, compared with CPU.

One run, sized for a lent H200 (an estimated 2-3 minutes there, never run on one yet), prints every figure:

1. a synthetic base + fine-tuned pair with Qwen2.5-1.5B's shapes (random bf16 weights, sharded
   safetensors written tensor by tensor; see merge_bench.py), built in ``--work-dir``;
2. the MI kernels on identical tensors (an lm_head-sized bf16 pair) on the device and on CPU: the
   values must agree to 1e-12 relative (the counts are exact), with each one's time;
3. each ``--methods`` merge with ``merge.device=<device>`` and with ``cpu``: wall times and how the
   two outputs compare (tensors bit-identical, elements that differ, largest difference);
4. activations captured and MI computed on the device and on CPU for ``--samples`` calibration
   samples (random token ids), and the ACM λ (t=0.7) from each: the forward passes differ by bf16
   rounding, so the MI and λ may differ; the largest differences are printed;
5. greedy generation with the hf backend on the device from the device's merge: tokens per second;
6. the real-shape rehearsal (``--rehearsal``, on by default): the full-depth stand-ins of
   Qwen2.5-Math-1.5B and DeepSeek-R1-Distill-Qwen-1.5B (``acm_exp.stand_in``: the real config and
   tokenizer, random weights), then ACM's capture + MI of the reference 100 s1K samples and
   Sens-Merging's gradients of both models on the device, timed beside what the ACM paper reports at
   1.5B (about 40 s for ACM, 90 s for Sens-Merging) and their peak device memory beside
   ``acm_exp.costs``. The 100 samples are picked here, where sentence-transformers is installed
   (``--prepare-calibration FILE``), and travel to the GPU machine as that file (``--calibration FILE``).

It also runs on CPU at a tiny size, which is how CI runs it (tests/test_gpu_check.py):

    python tests/benchmarks/gpu_check.py                                   # on the GPU machine
    python tests/benchmarks/gpu_check.py --tiny --device cpu --work-dir /tmp/gpu-check-tiny

How to get the project onto the GPU machine (torch and transformers only, no registry): see
tests/benchmarks/README.md. Exit status 1 when the MI kernels disagree on identical tensors.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from merge_bench import Shape, ensure_checkpoints  # noqa: E402

# Qwen2.5-1.5B: hidden 1536, 28 layers, MLP 8960, 12 heads of which 2 key/value heads.
QWEN25_15B = Shape(hidden=1536, layers=28, intermediate=8960, vocab=151936, heads=12, kv_heads=2)
TINY = Shape(hidden=64, layers=2, intermediate=128, vocab=512, heads=4, kv_heads=2)
ACM_T = 0.7
PROMPTS = ["1+1=", "what is 2*3?", "(4+5)*6 =", "count: 1, 2, 3,", "12-7=", "x = 3. then x*x ="]


def timed(function):
    """(result, seconds) of function(), with the device's queue drained on both sides."""
    synchronize()
    started = time.perf_counter()
    result = function()
    synchronize()
    return result, time.perf_counter() - started


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def figure(label: str, value: str) -> None:
    print(f"{label:<44} {value}", flush=True)


# ---------------------------------------------------------------------------------------------
# 2. MI kernels on identical tensors


def check_mi_kernels(device: str, tokens: int, vocabulary: int) -> bool:
    from acm_exp.acm import mutual_information

    generator = torch.Generator().manual_seed(0)
    base = 2.5 * torch.randn(tokens, vocabulary, generator=generator) + 1.0
    tuned = (base + 0.6 * torch.randn(base.shape, generator=generator)).to(torch.bfloat16)
    base = base.to(torch.bfloat16)
    mutual_information(base, tuned)  # warm-up: numba's compile or cache load
    on_cpu, cpu_seconds = timed(lambda: mutual_information(base, tuned))
    on_device_inputs = base.to(device), tuned.to(device)
    mutual_information(*on_device_inputs)  # warm-up: kernels, allocator
    on_device, device_seconds = timed(lambda: mutual_information(*on_device_inputs))
    relative = abs(on_device - on_cpu) / abs(on_cpu)
    figure(
        f"MI kernels, {base.numel():,} bf16 values",
        f"{device}: {on_device:.12f} in {device_seconds * 1e3:.1f} ms; "
        f"cpu: {on_cpu:.12f} in {cpu_seconds * 1e3:.1f} ms; rel diff {relative:.1e} (must be <= 1e-12)",
    )
    return relative <= 1e-12


# ---------------------------------------------------------------------------------------------
# 3. Merge on the device and on CPU


def merge(base: Path, finetuned: Path, output: Path, method: str, device: str) -> float:
    from acm_exp.config import MergeConfig
    from acm_exp.merge import MergeSettings, get_method, open_inputs, run_merge

    params = MergeConfig(method=method, k=0.8, scale=1.0 if method == "ties" else 0.7)
    inputs = open_inputs(base, [finetuned])
    try:
        _, seconds = timed(
            lambda: run_merge(
                inputs, get_method(method), params, MergeSettings(output_dir=output, device=device, overwrite=True)
            )
        )
    finally:
        inputs.close()
    return seconds


def merged_tensors(directory: Path):
    from safetensors import safe_open

    index = directory / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    )
    for file in files:
        with safe_open(str(directory / file), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def compare_merges(left: Path, right: Path) -> dict:
    right_tensors = dict(merged_tensors(right))
    tensors, identical, differing_elements, elements, largest = 0, 0, 0, 0, 0.0
    for name, tensor in merged_tensors(left):
        other = right_tensors.pop(name)
        tensors += 1
        elements += tensor.numel()
        if torch.equal(tensor, other):
            identical += 1
            continue
        difference = (tensor.float() - other.float()).abs()
        differing_elements += int(torch.count_nonzero(difference))
        largest = max(largest, float(difference.max()))
    if right_tensors:
        raise RuntimeError(f"the merges hold different tensors: {sorted(right_tensors)[:3]}")
    return {
        "identical": identical,
        "tensors": tensors,
        "differing_elements": differing_elements,
        "elements": elements,
        "largest": largest,
    }


# ---------------------------------------------------------------------------------------------
# 4. Capture + MI on the device and on CPU, and λ


def calibration_ids(samples: int, shortest: int, longest: int, vocabulary: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(shortest, longest + 1, (samples,), generator=generator).tolist()
    return [torch.randint(0, vocabulary, (length,), generator=generator).tolist() for length in lengths]


def capture(base: Path, finetuned: Path, token_ids: list[list[int]], device: str):
    from acm_exp.acm.capture import capture_from_paths

    return timed(
        lambda: capture_from_paths(
            base,
            [finetuned],
            token_ids,
            device=torch.device(device),
            dtype=torch.bfloat16,
            estimator="discrete",
            bins=None,
            binning="uniform",
            model_names=["finetuned"],
            progress=False,
        )
    )


def compare_lambdas(on_device, on_cpu, device: str) -> None:
    from acm_exp.acm.coefficients import compute_coefficients

    mi_difference = np.abs(on_device.mi - on_cpu.mi)
    relative = mi_difference / np.maximum(np.abs(on_cpu.mi), 1e-300)
    point, sample = np.unravel_index(np.argmax(mi_difference[0]), mi_difference[0].shape)
    figure(
        "MI, device vs cpu capture",
        f"largest abs diff {mi_difference.max():.3e} (rel {relative.max():.2e}) at "
        f"{on_cpu.point_names[point]} sample {sample}; mean abs diff {mi_difference.mean():.3e}",
    )
    lambdas = [compute_coefficients(statistics, ACM_T).lambdas[0] for statistics in (on_device, on_cpu)]
    difference = np.abs(lambdas[0] - lambdas[1])
    worst = int(np.argmax(difference))
    figure(
        f"ACM λ (t={ACM_T}), {device} vs cpu",
        f"largest abs diff {difference.max():.3e} at "
        f"{on_cpu.point_names[worst]} (λ {lambdas[0][worst]:.6f} vs {lambdas[1][worst]:.6f}); "
        f"λ range [{lambdas[1].min():.4f}, {lambdas[1].max():.4f}]",
    )


# ---------------------------------------------------------------------------------------------
# 5. Generation


def generate(model: Path, device: str, max_new_tokens: int) -> None:
    from acm_exp.eval.backends import HfBackend, SamplingSettings

    backend, load_seconds = timed(lambda: HfBackend(model, device=device, dtype="bfloat16", batch_size=len(PROMPTS)))
    try:
        settings = SamplingSettings(max_new_tokens=max_new_tokens)
        backend.generate(PROMPTS[:1], SamplingSettings(max_new_tokens=2))  # warm-up
        generations, seconds = timed(lambda: backend.generate(PROMPTS, settings))
    finally:
        backend.close()
    tokens = sum(generation.num_tokens for generation in generations)
    figure(
        f"hf generation on {device}",
        f"{len(PROMPTS)} prompts, {tokens} new tokens in {seconds:.2f} s "
        f"({tokens / seconds:.1f} tokens/s); model load {load_seconds:.1f} s",
    )


# ---------------------------------------------------------------------------------------------
# 6. The real-shape rehearsal: the 1.5B stand-ins, ACM and Sens-Merging statistics of 100 s1K samples

# The ACM paper's cost of the statistics at 1.5B (its efficiency comparison), in seconds.
PAPER_SECONDS = {"ACM capture + MI": 40, "Sens-Merging gradients": 90}


def prepare_calibration(path: Path, per_cluster: int) -> None:
    """Pick the reference s1K samples (MiniLM + K-means, as ``calibration=s1k``) and write what the GPU
    machine needs of them, which has neither sentence-transformers nor the graders: the questions (ACM)
    and each model's Sens-Merging (prompt, answer) pairs as ``merge=sens`` builds them."""
    from acm_exp.acm.sens_texts import sens_texts
    from acm_exp.calibration import select_calibration
    from acm_exp.config import CalibrationConfig, SensConfig

    cfg = CalibrationConfig(name="s1k", source="simplescaling/s1K", cluster_pick="reference", per_cluster=per_cluster)
    selected = select_calibration(cfg)
    sens = {}
    for role in ("base", "finetuned"):
        chosen = sens_texts(selected.records, cfg, SensConfig(), role)
        sens[role] = {"examples": chosen.examples, "description": chosen.description, "skipped": chosen.skipped}
    payload = {"spec": selected.spec, "selection_hash": selected.selection_hash, "texts": selected.texts, "sens": sens}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, ensure_ascii=False))
    figure("calibration written", f"{len(selected.texts)} samples ({selected.spec}) to {path}")


def rehearse(work_dir: Path, device: str, layers: int | None, calibration: Path, max_tokens: int | None) -> None:
    from acm_exp import costs
    from acm_exp.acm.capture import compute_mi_statistics
    from acm_exp.acm.modeling import tokenize_texts
    from acm_exp.acm.sensitivity import compute_layer_sensitivity
    from acm_exp.config import AcmConfig, SensConfig
    from acm_exp.model_facts import MODELS
    from acm_exp.stand_in import build_stand_in

    chosen = json.loads(calibration.read_text())
    (stand_in, seconds) = timed(lambda: build_stand_in(work_dir / "stand_in", "qwen2.5-1.5b", layers=layers))
    how = "reused" if all(model.reused for model in stand_in.models) else f"built in {seconds:.0f} s"
    figure("stand-in qwen2.5-1.5b", f"{stand_in.layers} layers, {stand_in.bytes / 1e9:.2f} GB ({how})")
    shape = costs.ModelShape.from_config(
        "1.5B", {**MODELS["Qwen/Qwen2.5-Math-1.5B"].config, "num_hidden_layers": stand_in.layers}
    )
    cache = work_dir / f"rehearsal-cache-{time.time_ns()}"  # fresh: the statistics are computed, not read
    reset_peak()
    statistics, acm_seconds = timed(
        lambda: compute_mi_statistics(
            stand_in.base,
            stand_in.finetuned,
            chosen["texts"],
            acm_cfg=AcmConfig(device=device),
            max_tokens=max_tokens,
            cache_dir=cache,
            model_names=["finetuned"],
            progress=False,
        )
    )
    token_ids = tokenize_texts(stand_in.base, chosen["texts"], max_tokens)
    longest = max(len(ids) for ids in token_ids)
    predicted = costs.placement_needs(shape, 1, calibration_tokens=longest)["capture_gb"]
    what = f"{statistics.mi.shape[-1]} samples ({sum(map(len, token_ids))} tokens, longest {longest})"
    report(f"ACM capture + MI ({device})", acm_seconds, what, predicted)

    sens = SensConfig(device=device, **({"max_tokens": max_tokens} if max_tokens else {}))
    total = 0.0
    reset_peak()
    for role, model in (("base", stand_in.base), ("finetuned", stand_in.finetuned[0])):
        examples = [tuple(pair) for pair in chosen["sens"][role]["examples"]]
        sensitivity, seconds = timed(
            lambda model=model, examples=examples: compute_layer_sensitivity(
                model,
                examples,
                device=sens.device,
                dtype=sens.dtype,
                max_tokens=sens.max_tokens,
                cache_dir=cache,
                progress=False,
            )
        )
        total += seconds
        scored = sensitivity.num_samples
        described = chosen["sens"][role]["description"]
        figure(f"  Sens-Merging {role}", f"{scored} of {len(examples)} examples ({described}) in {seconds:.1f} s")
    # acm_exp.costs models the gradients with gradient checkpointing; the L2S setting (timed here) runs without.
    predicted = costs.placement_needs(shape, 1, sens_tokens=sens.max_tokens or 2048)["sensitivity_fp32_gb"]
    report(f"Sens-Merging gradients ({device})", total, "both models, float32", predicted)


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def report(label: str, seconds: float, what: str, predicted_gb: float) -> None:
    paper = next((value for key, value in PAPER_SECONDS.items() if label.startswith(key)), None)
    peak = (
        f"; peak CUDA memory {torch.cuda.max_memory_allocated() / 1e9:.1f} GB (acm_exp.costs: {predicted_gb} GB)"
        if torch.cuda.is_available()
        else f"; acm_exp.costs predicts {predicted_gb} GB on one device"
    )
    figure(label, f"{what} in {seconds:.1f} s (the ACM paper: about {paper} s at 1.5B){peak}")


# ---------------------------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="the accelerator (cuda, cuda:N; cpu for the tiny CI run)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of Qwen2.5-1.5B's shapes")
    parser.add_argument("--work-dir", type=Path, default=None, help="checkpoints and merges (default: a temp dir)")
    parser.add_argument("--methods", default="ties", help="merge methods to run on both devices, comma-separated")
    parser.add_argument("--samples", type=int, default=20, help="calibration samples of the capture")
    parser.add_argument("--sample-tokens", default="32,96", help="shortest,longest calibration sample (tokens)")
    parser.add_argument("--mi-tokens", type=int, default=33, help="tokens of the lm_head-sized MI kernel check")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--rehearsal", action=argparse.BooleanOptionalAction, default=True, help="run step 6 (default: on)"
    )
    parser.add_argument("--calibration", type=Path, default=None, help="step 6's samples (--prepare-calibration)")
    parser.add_argument(
        "--prepare-calibration", type=Path, default=None, help="pick the reference s1K samples, write them, exit"
    )
    parser.add_argument("--per-cluster", type=int, default=5, help="s1K samples per cluster (5: the reference 100)")
    parser.add_argument("--rehearsal-layers", type=int, default=None, help="stand-in depth (default: the real 28)")
    parser.add_argument("--rehearsal-max-tokens", type=int, default=None, help="tokens per sample (default: none)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.prepare_calibration is not None:
        prepare_calibration(arguments.prepare_calibration, arguments.per_cluster)
        return 0
    device = arguments.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {device}, but CUDA is not available; run with --tiny --device cpu for the CPU check")
        return 2
    if arguments.rehearsal and (arguments.calibration is None or not arguments.calibration.is_file()):
        print("--rehearsal needs --calibration FILE (written by --prepare-calibration FILE); or --no-rehearsal")
        return 2
    shape = TINY if arguments.tiny else QWEN25_15B
    work_dir = arguments.work_dir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    started = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    figure("device", f"{device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    figure("synthetic pair", f"{shape.key}: {shape.parameters / 1e6:,.1f}M parameters, bf16")

    (base, finetuned), seconds = timed(lambda: ensure_checkpoints(work_dir / "checkpoints", shape))
    figure("built the pair in", f"{seconds:.1f} s")

    kernels_agree = check_mi_kernels(device, arguments.mi_tokens, min(shape.vocab, 151936))

    merged_on_device = None
    for method in arguments.methods.split(","):
        outputs = {where: work_dir / f"merge-{method}-{where.replace(':', '_')}" for where in (device, "cpu")}
        seconds = {where: merge(base, finetuned, output, method, where) for where, output in outputs.items()}
        comparison = compare_merges(outputs[device], outputs["cpu"])
        figure(
            f"merge {method}",
            f"{device} {seconds[device]:.1f} s, cpu {seconds['cpu']:.1f} s; "
            f"{comparison['identical']}/{comparison['tensors']} tensors bit-identical, "
            f"{comparison['differing_elements']:,} of {comparison['elements']:,} elements differ "
            f"(largest abs diff {comparison['largest']:.3e})",
        )
        merged_on_device = merged_on_device or outputs[device]

    shortest, longest = (int(value) for value in arguments.sample_tokens.split(","))
    token_ids = calibration_ids(arguments.samples, shortest, longest, shape.vocab)
    on_device, device_seconds = capture(base, finetuned, token_ids, device)
    on_cpu, cpu_seconds = capture(base, finetuned, token_ids, "cpu")
    figure(
        "capture + MI",
        f"{arguments.samples} samples, {sum(map(len, token_ids))} tokens: {device} "
        f"{device_seconds:.1f} s, cpu {cpu_seconds:.1f} s",
    )
    compare_lambdas(on_device, on_cpu, device)

    if merged_on_device is not None:
        generate(merged_on_device, device, arguments.max_new_tokens)
    if arguments.rehearsal:
        rehearse(work_dir, device, arguments.rehearsal_layers, arguments.calibration, arguments.rehearsal_max_tokens)
    figure("total", f"{time.perf_counter() - started:.1f} s")
    if not kernels_agree:
        print("FAILED: the MI kernels disagree on identical tensors")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
