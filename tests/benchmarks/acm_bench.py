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

Every ratio is against a baseline measured in the same run (best of several repeats, alternating).

    /tmp/venv/bin/python tests/benchmarks/acm_bench.py
    /tmp/venv/bin/python tests/benchmarks/acm_bench.py --samples 6 --repeats 1   # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from acm_exp.acm import collect_mi_statistics, mutual_information
from acm_exp.acm import mi as mi_module

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
    args = parser.parse_args()
    if args.numpy_kernels:
        mi_module.COMPILED = False
    print(f"MI kernels: {'compiled (numba)' if mi_module.COMPILED else 'numpy'}")
    if args.threads:
        torch.set_num_threads(args.threads)

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
