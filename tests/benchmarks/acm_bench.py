"""ACM benchmark: our discrete MI against sklearn, and the cost of capture + MI over plain forwards.

1. MI speed. Activations with a Qwen2-1.5B model's capture shapes (hidden 1536, vocabulary 151936),
   in bfloat16 as the paper captures them: an lm_head output (logits of ``--head-tokens`` tokens,
   >= 5M values) and one decoder layer's down_proj output (``--layer-tokens`` x 1536). The
   "compared model" is the base plus a small perturbation, as a fine-tune would be. Both estimators
   see the same values (bf16 -> float32 is exact for sklearn); the script asserts they agree to
   1e-12 relative and reports sklearn's time / ours. Targets: >= 30x (lm_head), >= 10x (down_proj).
   With numba installed the compiled kernels run; ``--numpy-kernels`` measures the numpy ones.
2. Capture overhead. A random Qwen2 (4 layers, hidden 256, vocabulary 32000, bf16, CPU) and a
   perturbed copy, ~20 calibration-like samples of 128-256 tokens: time of
   ``collect_mi_statistics`` (hooks + MI at every capture point) / time of the same forward passes
   without capture. Target <= 1.3x. At hidden 256 a logit costs ~512 FLOPs to compute, about as
   much time as counting it into the contingency table, so the lm_head MI alone is of the order of
   the forward passes; the same measurement with Qwen2-1.5B's layer width (hidden 1536, 2 layers)
   shows the overhead at a realistic compute per logit.

3. ``--shape 1.5b``: capture + MI at Qwen2.5-1.5B's shape with the full vocabulary (hidden 1536,
   intermediate 8960, 28 layers, vocabulary 151,936; ``--layers`` reduces the depth) on
   ``--tokens``-token samples (2,048 by default). A random pair is written once under ``--workdir``
   (a tied base and an untied fine-tune-like compared model, like Qwen2.5-Math-1.5B and
   R1-Distill-Qwen-1.5B; ``--keep`` leaves it there for the next run). A fresh child process runs
   what the pipeline runs (``capture_from_paths``: load both models, capture + MI) inside
   ``acm_exp.costs.measure`` and compares its peak memory with ``acm_exp.costs.capture_memory``'s
   prediction (target: within 10 %); then, with the models loaded, it times the plain forward
   passes (base and compared model, no hooks) against ``collect_mi_statistics`` on the same samples,
   alternating (target: captured <= 1.3x plain), and says where the MI time goes (per capture
   point kind, summed over the threads that ran it) and how many page faults each pass took (the
   weights are mapped files; held activations can make the allocator fault its heap in again).
   Threads: torch's default unless ``--threads`` is given.
   ``--device cuda``: the same on a GPU, its peak memory read as torch's own (no CUDA context).
   ``--before-commit REV``: first the same child on the ``acm_exp`` of git revision REV (``git
   archive``, first on PYTHONPATH), then on this checkout's; a closing line compares both ratios.

Every ratio is against a baseline measured in the same run (best of several repeats, alternating).
The load average (``uptime``) is printed beside the timings: the machine is shared.

    .venv/bin/python tests/benchmarks/acm_bench.py
    .venv/bin/python tests/benchmarks/acm_bench.py --samples 6 --repeats 1   # smoke run
    .venv/bin/python tests/benchmarks/acm_bench.py --shape 1.5b --layers 2 --samples 2 --keep   # reduced depth
    .venv/bin/python tests/benchmarks/acm_bench.py --shape 1.5b --samples 2      # full depth (~7 GB of weights)
    .venv/bin/python tests/benchmarks/acm_bench.py --shape 1.5b --samples 2 --before-commit HEAD   # before/after
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import torch

from acm_exp.acm import collect_mi_statistics, mutual_information
from acm_exp.acm import mi as mi_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
from merge_bench import extract_revision  # noqa: E402

HIDDEN = 1536
VOCABULARY = 151936
HEAD_TARGET = 30.0
LAYER_TARGET = 10.0
OVERHEAD_TARGET = 1.3


def sklearn_mi(x: torch.Tensor, y: torch.Tensor) -> float:
    from sklearn.metrics import mutual_info_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "expects discrete values but received continuous values"
        return mutual_info_score(x.float().numpy().reshape(-1), y.float().numpy().reshape(-1))


def best_time(function, repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return min(times), value


def best_cpu_time(function, repeats: int) -> float:
    """Process CPU time: both estimators run on one thread, so this is robust to a shared machine."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    return min(times)


def synthetic_activations(shape: tuple[int, int], kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Base and fine-tuned-like activations in bf16.

    logits: roughly normal with a spread of a few units; down_proj: heavy-tailed (Student t) with a
    few large outlier channels, as residual-stream writes are.
    """
    generator = torch.Generator().manual_seed(seed)
    if kind == "logits":
        base = 2.5 * torch.randn(shape, generator=generator) + 1.0
        tuned = base + 0.6 * torch.randn(shape, generator=generator)
    else:
        tails = torch.distributions.StudentT(torch.tensor(3.0)).sample(shape)
        base = 0.05 * tails
        base[:, :4] *= 200.0  # a handful of massive-activation channels
        tuned = base + 0.01 * torch.randn(shape, generator=generator)
    return base.to(torch.bfloat16), tuned.to(torch.bfloat16)


def mi_speed(label: str, shape: tuple[int, int], kind: str, repeats: int, sklearn_repeats: int, target: float) -> float:
    base, tuned = synthetic_activations(shape, kind, seed=len(label))
    ours_time, ours = best_time(lambda: mutual_information(base, tuned), repeats)
    reference_time, reference = best_time(lambda: sklearn_mi(base, tuned), sklearn_repeats)
    again, _ = best_time(lambda: mutual_information(base, tuned), repeats)
    ours_time = min(ours_time, again)
    relative = abs(ours - reference) / abs(reference)
    assert relative <= 1e-12, f"{label}: ours {ours!r} vs sklearn {reference!r} (relative difference {relative:.2e})"
    ratio = reference_time / ours_time
    cpu_ratio = best_cpu_time(lambda: sklearn_mi(base, tuned), 1) / best_cpu_time(
        lambda: mutual_information(base, tuned), repeats
    )
    print(
        f"MI {label:<26} {base.numel():>10,d} values  sklearn {reference_time * 1e3:7.1f} ms  ours "
        f"{ours_time * 1e3:6.1f} ms  speed-up {ratio:5.1f}x wall, {cpu_ratio:5.1f}x CPU time (target >= {target:g}x)"
        f"  MI {ours:.6f} (rel diff {relative:.1e})"
    )
    if torch.cuda.is_available():
        cuda_base, cuda_tuned = base.cuda(), tuned.cuda()

        def on_gpu():
            value = mutual_information(cuda_base, cuda_tuned)
            torch.cuda.synchronize()
            return value

        on_gpu()
        gpu_time, gpu_value = best_time(on_gpu, repeats)
        assert abs(gpu_value - reference) <= 1e-6 * abs(reference)
        print(
            f"   on {torch.cuda.get_device_name()}: {gpu_time * 1e3:7.2f} ms  "
            f"speed-up {reference_time / gpu_time:8.1f}x"
        )
    return ratio


def small_qwen2(seed: int, layers: int, hidden: int, intermediate: int, vocabulary: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocabulary,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return Qwen2ForCausalLM(config).to(torch.bfloat16).eval()


def capture_overhead(
    label: str, samples: int, repeats: int, layers: int, hidden: int, intermediate: int, vocabulary: int
) -> float:
    base = small_qwen2(0, layers, hidden, intermediate, vocabulary)
    tuned = small_qwen2(0, layers, hidden, intermediate, vocabulary)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # A fine-tune-like task vector: 10% of each tensor's spread (the logits then correlate ~0.9-0.96
        # with the base's, as a fine-tune's do; an unrelated model would make every count a cache miss).
        for parameter in tuned.parameters():
            spread = max(float(parameter.float().std()), 0.01)
            parameter.add_((0.1 * spread * torch.randn(parameter.shape, generator=generator)).to(parameter.dtype))
    lengths = torch.randint(128, 257, (samples,), generator=generator).tolist()
    token_ids = [torch.randint(0, vocabulary, (1, length), generator=generator) for length in lengths]

    def plain() -> None:
        with torch.inference_mode():
            for ids in token_ids:
                base(input_ids=ids, use_cache=False)
                tuned(input_ids=ids, use_cache=False)

    def captured() -> None:
        collect_mi_statistics(base, [tuned], token_ids, progress=False)

    plain()  # warm-up: allocator, kernels
    collect_mi_statistics(base, [tuned], token_ids[:1], progress=False)  # warm-up: the MI kernels' compile
    plain_times, captured_times, plain_cpu, captured_cpu = [], [], [], []
    for _ in range(repeats):
        for function, times, cpu_times in ((plain, plain_times, plain_cpu), (captured, captured_times, captured_cpu)):
            started, cpu_started = time.perf_counter(), time.process_time()
            function()
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
    ratio = min(captured_times) / min(plain_times)
    print(
        f"capture + MI vs plain forwards, {label}: {samples} samples, {sum(lengths)} tokens, {layers} layers, hidden "
        f"{hidden}, vocab {vocabulary}, bf16, {torch.get_num_threads()} threads: plain {min(plain_times):.2f} s "
        f"(median {statistics.median(plain_times):.2f}), captured {min(captured_times):.2f} s "
        f"(median {statistics.median(captured_times):.2f})  overhead {ratio:.2f}x (target <= {OVERHEAD_TARGET:g}x); "
        f"process CPU time {min(captured_cpu) / min(plain_cpu):.2f}x (MI on a second core overlaps the forwards)"
    )
    return ratio


# ---------------------------------------------------------------------------------------------
# Capture + MI at the 1.5B shape


SHAPE_1P5B = {"hidden": 1536, "intermediate": 8960, "layers": 28, "heads": 12, "kv_heads": 2, "vocab": 151936}
MEMORY_TOLERANCE = 0.10
SHARD_BYTES = 1 << 30


def load_average() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def qwen2_tensors(shape: dict, *, with_head: bool) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of a Qwen2 checkpoint, in the order transformers writes them."""
    hidden, kv = shape["hidden"], shape["kv_heads"] * shape["hidden"] // shape["heads"]
    tensors = [("model.embed_tokens.weight", (shape["vocab"], hidden))]
    for index in range(shape["layers"]):
        prefix = f"model.layers.{index}"
        tensors += [
            (f"{prefix}.input_layernorm.weight", (hidden,)),
            (f"{prefix}.self_attn.q_proj.weight", (hidden, hidden)),
            (f"{prefix}.self_attn.q_proj.bias", (hidden,)),
            (f"{prefix}.self_attn.k_proj.weight", (kv, hidden)),
            (f"{prefix}.self_attn.k_proj.bias", (kv,)),
            (f"{prefix}.self_attn.v_proj.weight", (kv, hidden)),
            (f"{prefix}.self_attn.v_proj.bias", (kv,)),
            (f"{prefix}.self_attn.o_proj.weight", (hidden, hidden)),
            (f"{prefix}.post_attention_layernorm.weight", (hidden,)),
            (f"{prefix}.mlp.gate_proj.weight", (shape["intermediate"], hidden)),
            (f"{prefix}.mlp.up_proj.weight", (shape["intermediate"], hidden)),
            (f"{prefix}.mlp.down_proj.weight", (hidden, shape["intermediate"])),
        ]
    tensors.append(("model.norm.weight", (hidden,)))
    return tensors + ([("lm_head.weight", (shape["vocab"], hidden))] if with_head else [])


def random_tensor(name: str, size: tuple[int, ...], seed: int) -> torch.Tensor:
    """A tensor drawn from its own seeded stream, so the compared model can redraw the base's."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    if name.endswith("norm.weight"):
        return 1.0 + 0.05 * torch.randn(size, generator=generator)
    return 0.02 * torch.randn(size, generator=generator)


def write_model(directory: Path, shape: dict, *, tied: bool, perturbation: float) -> None:
    """A random bf16 Qwen2 checkpoint, shard by shard (one shard in memory). ``perturbation`` > 0: the
    base's tensors plus that fraction of their spread as noise, like a fine-tune; its lm_head starts from
    the base's (tied) embedding, as R1-Distill-Qwen-1.5B's did from Qwen2.5-Math-1.5B's."""
    from safetensors.torch import save_file
    from transformers import Qwen2Config

    directory.mkdir(parents=True)
    weight_map, pending, shards = {}, {}, 0

    def flush() -> None:
        nonlocal pending, shards
        shards += 1
        file = f"model-{shards:05d}.safetensors"
        save_file(pending, str(directory / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(pending, file))
        pending = {}

    for name, size in qwen2_tensors(shape, with_head=not tied):
        source = "model.embed_tokens.weight" if name == "lm_head.weight" else name
        tensor = random_tensor(source, size, seed=0)
        if perturbation:
            spread = float(tensor.std()) if tensor.numel() > 1 else 0.02
            tensor += perturbation * spread * random_tensor(name, size, seed=1) / 0.02
        if sum(t.nbytes for t in pending.values()) + 2 * tensor.numel() > SHARD_BYTES and pending:
            flush()
        pending[name] = tensor.to(torch.bfloat16).contiguous()
    flush()
    total = sum(2 * math.prod(size) for _, size in qwen2_tensors(shape, with_head=not tied))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    config = Qwen2Config(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=32768,
        tie_word_embeddings=tied,
        dtype="bfloat16",
    )
    config.architectures = ["Qwen2ForCausalLM"]
    config.save_pretrained(directory)


def ensure_pair(workdir: Path, shape: dict) -> tuple[Path, Path]:
    """The random pair of ``shape`` under ``workdir`` (built once; each model published by rename)."""
    root = workdir / "qwen2-{hidden}-{intermediate}-l{layers}-v{vocab}".format(**shape)
    models = {"base": (True, 0.0), "compared": (False, 0.1)}
    for role, (tied, perturbation) in models.items():
        directory = root / role
        if (directory / "model.safetensors.index.json").is_file():
            continue
        root.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{role}-", dir=root))
        shutil.rmtree(temporary)
        started = time.perf_counter()
        write_model(temporary, shape, tied=tied, perturbation=perturbation)
        temporary.rename(directory)
        print(f"built {directory} in {time.perf_counter() - started:.0f} s", flush=True)
    return root / "base", root / "compared"


def calibration_samples(samples: int, tokens: int, vocabulary: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randint(0, vocabulary, (1, tokens), generator=generator) for _ in range(samples)]


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def resident_parts() -> dict[str, int]:
    """RssAnon (activations, buffers) and RssFile (the mapped safetensors weights) in bytes."""
    with open("/proc/self/status") as handle:
        return {
            line.split(":")[0]: int(line.split()[1]) * 1024
            for line in handle
            if line.startswith(("RssAnon:", "RssFile:"))
        }


class ResidentSampler:
    """Peak anonymous memory, sampled every 10 ms: the weights are mapped files whose pages the kernel may
    drop under memory pressure (a busy machine), which lowers the peak RSS but not what the capture
    allocates."""

    def __init__(self):
        import threading

        self.peak_anonymous, self.file_at_peak = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            parts = resident_parts()
            if parts["RssAnon"] > self.peak_anonymous:
                self.peak_anonymous, self.file_at_peak = parts["RssAnon"], parts["RssFile"]

    def __enter__(self) -> ResidentSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


class TimedMI:
    """Wraps capture's MI function: seconds of MI per capture point kind (summed over threads)."""

    def __init__(self, function):
        self.function, self.seconds, self.calls = function, {}, {}

    def __call__(self, x, y, **kwargs):
        started = time.perf_counter()
        value = self.function(x, y, **kwargs)
        kind = "lm_head" if x.shape[-1] > SHAPE_1P5B["hidden"] else "embed/layers/norm"
        self.seconds[kind] = self.seconds.get(kind, 0.0) + time.perf_counter() - started
        self.calls[kind] = self.calls.get(kind, 0) + 1
        return value


def shape_child(args: argparse.Namespace) -> None:
    """In a fresh process: the pipeline's capture (peak memory), then plain vs captured forwards."""
    from acm_exp import costs
    from acm_exp.acm import capture
    from acm_exp.acm.modeling import load_causal_lm

    shape = {**SHAPE_1P5B, "layers": args.layers}
    base_dir, compared_dir = Path(args.base), Path(args.compared)
    token_ids = calibration_samples(args.samples, args.tokens, shape["vocab"])
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    predicted = costs.capture_memory(
        costs.ModelShape(
            "bench",
            shape["hidden"],
            shape["intermediate"],
            shape["layers"],
            shape["heads"],
            shape["kv_heads"],
            shape["vocab"],
            tied=True,
        ),
        args.tokens,
        compared_tied=False,
    )
    before = rss_bytes()
    anonymous_before = resident_parts()["RssAnon"]
    with ResidentSampler() as sampler, costs.measure("capture") as cost:
        statistics_ = capture.capture_from_paths(
            base_dir,
            [compared_dir],
            token_ids,
            device=device,
            dtype=torch.bfloat16,
            estimator="discrete",
            bins=None,
            binning="uniform",
            model_names=["compared"],
            progress=False,
        )
    # On a GPU the device's own peak (torch's allocations, no CUDA context); on CPU the process's peak
    # resident memory less what it held before loading (the interpreter and libraries).
    own = max(cost.cuda_peak_bytes.values()) if on_gpu else cost.peak_rss_bytes - before
    print(
        f"pipeline capture on {device} (load + capture + MI, {args.samples} x {args.tokens} tokens): "
        f"{cost.wall_s:.1f} s, peak RSS {cost.peak_rss_bytes / 1e9:.2f} GB ({before / 1e9:.2f} GB before loading: "
        f"interpreter and libraries), its own {'GPU ' if on_gpu else ''}peak {own / 1e9:.2f} GB; predicted "
        f"(acm_exp.costs.capture_memory) {predicted['total'] / 1e9:.2f} GB = {own / predicted['total']:.3f}x "
        f"(target within {MEMORY_TOLERANCE:.0%}); prediction: "
        + ", ".join(f"{name} {value / 1e9:.2f}" for name, value in predicted.items() if name != "total"),
        flush=True,
    )
    if not on_gpu:
        weights = sum(
            path.stat().st_size for directory in (base_dir, compared_dir) for path in directory.glob("*.safetensors")
        )
        allocated = sampler.peak_anonymous - anonymous_before
        activations = predicted["total"] - predicted["base_weights"] - predicted["compared_weights"]
        print(
            f"  split: peak anonymous memory {allocated / 1e9:.2f} GB over the {anonymous_before / 1e9:.2f} GB before "
            f"(predicted activations + MI working memory {activations / 1e9:.2f} GB = {allocated / activations:.3f}x), "
            f"weights mapped at that moment {sampler.file_at_peak / 1e9:.2f} GB of {weights / 1e9:.2f} GB on disk; "
            f"weights on disk + peak anonymous = {(weights + allocated) / predicted['total']:.3f}x the prediction; "
            f"{load_average()}",
            flush=True,
        )
    lm_head_mi = statistics_.mi[0, -1]
    base = load_causal_lm(base_dir, device, torch.bfloat16)
    compared = load_causal_lm(compared_dir, device, torch.bfloat16)

    def synchronize() -> None:
        if on_gpu:
            torch.cuda.synchronize(device)

    def plain() -> None:
        with torch.inference_mode():
            for ids in token_ids:
                base(input_ids=ids.to(device), use_cache=False)
                compared(input_ids=ids.to(device), use_cache=False)
        synchronize()

    timed = TimedMI(capture.mutual_information)
    capture.mutual_information = timed
    captured_statistics = None

    def captured() -> None:
        nonlocal captured_statistics
        captured_statistics = capture.collect_mi_statistics(base, [compared], token_ids, progress=False)
        synchronize()

    plain_times, captured_times, faults = [], [], {}
    for repeat in range(args.repeats):
        for function, times in ((plain, plain_times), (captured, captured_times)):
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
            faults[function.__name__] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
        print(
            f"  repeat {repeat + 1}: plain {plain_times[-1]:.1f} s ({faults['plain'] / 1e6:.2f}M page faults), "
            f"captured {captured_times[-1]:.1f} s ({faults['captured'] / 1e6:.2f}M page faults) "
            f"({load_average()})",
            flush=True,
        )
    if not (captured_statistics.mi[0, -1] == lm_head_mi).all():
        print(f"note: the timed capture's lm_head MI differ from the pipeline's: {captured_statistics.mi[0, -1]}")
    ratio = min(captured_times) / min(plain_times)
    mi_seconds = ", ".join(
        f"{kind} {seconds / args.repeats:.1f} s over {timed.calls[kind] // args.repeats} calls"
        for kind, seconds in timed.seconds.items()
    )
    print(
        f"capture + MI vs plain forwards at the 1.5B shape on {device} ({shape['layers']} layers, vocab "
        f"{shape['vocab']}, {args.samples} x {args.tokens} tokens, bf16, {torch.get_num_threads()} threads): plain "
        f"{min(plain_times):.1f} s, captured {min(captured_times):.1f} s = {ratio:.2f}x (target <= "
        f"{OVERHEAD_TARGET:g}x); MI per run (summed over threads): {mi_seconds}; {load_average()}",
        flush=True,
    )
    print(f"lm_head MI per sample: {', '.join(f'{v:.4f}' for v in lm_head_mi)}")
    if args.result:
        result = {
            "plain_s": min(plain_times),
            "captured_s": min(captured_times),
            "ratio": ratio,
            "peak_ratio": own / predicted["total"],
            "mi": captured_statistics.mi.tolist(),
        }
        Path(args.result).write_text(json.dumps(result))


def shape_benchmark(args: argparse.Namespace) -> None:
    if args.shape != "1.5b":
        raise SystemExit(f"--shape {args.shape!r}; expected 1.5b")
    shape = {**SHAPE_1P5B, "layers": args.layers}
    workdir = Path(args.workdir)
    base, compared = ensure_pair(workdir, shape)
    command = [
        sys.executable,
        __file__,
        "--child",
        "--base",
        str(base),
        "--compared",
        str(compared),
        "--layers",
        str(args.layers),
        "--samples",
        str(args.samples),
        "--tokens",
        str(args.tokens),
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    print(f"1.5B shape, {args.layers} layers: {base.parent} ({load_average()})", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="acm-bench-") as scratch:
            runs = {}
            if args.before_commit:
                source = extract_revision(args.before_commit, Path(scratch), ("acm_exp",))
                print(f"before: acm_exp at {args.before_commit}", flush=True)
                environment = {
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])),
                }
                runs["before"] = Path(scratch) / "before.json"
                subprocess.run([*command, "--result", str(runs["before"])], check=True, env=environment)
                print("after: this checkout's acm_exp", flush=True)
            runs["after"] = Path(scratch) / "after.json"
            subprocess.run([*command, "--result", str(runs["after"])], check=True)
            results = {label: json.loads(path.read_text()) for label, path in runs.items()}
        if "before" in results:
            before, after = results["before"], results["after"]
            print(
                f"before/after ({args.before_commit} / this checkout): captured / plain {before['ratio']:.2f}x -> "
                f"{after['ratio']:.2f}x (target <= {OVERHEAD_TARGET:g}x); captured {before['captured_s']:.1f} s -> "
                f"{after['captured_s']:.1f} s, plain {before['plain_s']:.1f} s -> {after['plain_s']:.1f} s (a ratio "
                f"that falls with a slower baseline is no gain); peak / predicted {before['peak_ratio']:.3f}x "
                f"-> {after['peak_ratio']:.3f}x; MI equal: {before['mi'] == after['mi']}; {load_average()}"
            )
    finally:
        if not args.keep:
            shutil.rmtree(base.parent, ignore_errors=True)
            print(f"removed {base.parent}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head-tokens", type=int, default=33, help="tokens of the lm_head output (33 -> 5.0M values)")
    parser.add_argument("--layer-tokens", type=int, default=512, help="tokens of the down_proj output")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each timing (the best counts)")
    parser.add_argument("--samples", type=int, default=20, help="calibration samples of the overhead benchmark")
    parser.add_argument(
        "--wide-samples",
        type=int,
        default=4,
        help="samples of the overhead benchmark with hidden 1536 layers (0 skips it)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the forward passes (1: stable timings on a shared CPU; 0: torch's choice)",
    )
    parser.add_argument(
        "--numpy-kernels",
        action="store_true",
        help="the MI's numpy kernels even where numba is installed (as on a machine without it)",
    )
    parser.add_argument("--shape", help="capture + MI at a real model's shape instead (1.5b)")
    parser.add_argument("--layers", type=int, default=SHAPE_1P5B["layers"], help="--shape: decoder layers")
    parser.add_argument("--tokens", type=int, default=2048, help="--shape: tokens per calibration sample")
    parser.add_argument(
        "--workdir", default="/tmp/acm/bench", help="--shape: where the random pair is written (deleted after)"
    )
    parser.add_argument("--keep", action="store_true", help="--shape: keep the random pair for the next run")
    parser.add_argument("--device", default="cpu", help="--shape: cpu, or cuda (peak memory: the GPU's own)")
    parser.add_argument(
        "--before-commit", help="--shape: also run the capture of acm_exp at this git revision first (before/after)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--compared", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.numpy_kernels:
        mi_module.COMPILED = False
    if args.shape and "--threads" not in sys.argv:
        args.threads = 0  # what a pipeline run uses
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        shape_child(args)
        return
    print(f"MI kernels: {'compiled (numba)' if mi_module.COMPILED else 'numpy'}; {load_average()}")
    if args.shape:
        if "--repeats" not in sys.argv:
            args.repeats = 1
        shape_benchmark(args)
        return

    head = mi_speed(
        f"lm_head ({args.head_tokens} x {VOCABULARY})",
        (args.head_tokens, VOCABULARY),
        "logits",
        args.repeats + 2,
        max(1, args.repeats - 1),
        HEAD_TARGET,
    )
    layer = mi_speed(
        f"down_proj ({args.layer_tokens} x {HIDDEN})",
        (args.layer_tokens, HIDDEN),
        "down_proj",
        args.repeats + 2,
        args.repeats,
        LAYER_TARGET,
    )
    overhead = capture_overhead(
        "the brief's small model", args.samples, args.repeats, layers=4, hidden=256, intermediate=1024, vocabulary=32000
    )
    wide = (
        capture_overhead(
            "Qwen2-1.5B-wide layers",
            args.wide_samples,
            min(args.repeats, 2),
            layers=2,
            hidden=1536,
            intermediate=8960,
            vocabulary=32000,
        )
        if args.wide_samples
        else float("nan")
    )
    print(
        f"summary: lm_head {head:.1f}x (>= {HEAD_TARGET:g}x: {head >= HEAD_TARGET}), down_proj {layer:.1f}x "
        f"(>= {LAYER_TARGET:g}x: {layer >= LAYER_TARGET}), capture overhead {overhead:.2f}x "
        f"(<= {OVERHEAD_TARGET:g}x: {overhead <= OVERHEAD_TARGET}), with hidden 1536: {wide:.2f}x"
    )


if __name__ == "__main__":
    main()
