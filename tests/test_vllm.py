"""The vLLM backend for real (vLLM's CPU build in CI: `.venv-vllm`, `pytest -m vllm`).

- Parity: the toy merged model evaluated greedily with hf and with vLLM, both in float32 (in bfloat16
  the two implementations round differently, and the toy pair's near-ties then part greedy
  continuations often enough to hide a real disagreement); and the log-likelihoods that score
  multiple choice (HellaSwag), both in float32. The rehearsal (tests/test_rehearsal_vllm.py) runs
  vLLM in bfloat16 at the real shape.
- Teardown: after close() no engine process is left, so a sweep can load model after model.
- The default job, `python -m acm_exp eval.backend=vllm`, runs from the command line (spawned
  engine processes need the module's __main__ guard) and prints its table.

Skipped where vllm is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed"),
]

REPO = Path(__file__).resolve().parent.parent
PARITY_PROBLEMS = 100


@pytest.fixture(scope="module")
def merged_toy(toy_pair, tmp_path_factory) -> Path:
    """The toy pair merged by task arithmetic (θ0 + 0.7·τ), saved in bfloat16 with the base tied head."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(toy_pair["base"]).state_dict()
    base["lm_head.weight"] = base["model.embed_tokens.weight"]
    model = AutoModelForCausalLM.from_pretrained(toy_pair["finetuned"])
    finetuned = model.state_dict()
    model.load_state_dict(
        {name: base[name].float() + 0.7 * (finetuned[name].float() - base[name].float()) for name in finetuned}
    )
    directory = tmp_path_factory.mktemp("merged_toy")
    model.to(torch.bfloat16).save_pretrained(directory)
    AutoTokenizer.from_pretrained(toy_pair["finetuned"]).save_pretrained(directory)
    return directory


def evaluate_with(backend: str, model: Path, out_dir: Path) -> tuple[dict, list[dict]]:
    from app_config import compose_config

    from acm_exp.eval import evaluate_model

    eval_cfg = compose_config(
        "eval=toy", f"eval.backend={backend}", "eval.dtype=float32", f"eval.limit={PARITY_PROBLEMS}"
    ).eval
    rows = evaluate_model(model, label=backend, role="merged", prompt="toy", eval_cfg=eval_cfg, out_dir=out_dir)
    records = [json.loads(line) for line in Path(rows[0]["samples_path"]).read_text().splitlines()]
    return rows[0], records


def divergence_gap(models: dict, tokenizer, prompt: str, first: list[int], second: list[int]) -> tuple[float, float]:
    """At the first token where two greedy continuations part (one that ended there chose EOS): the
    float64 logit gap between the two chosen tokens, and the float32 rounding error of the logits there
    (the largest |float32 - float64| logit difference over the vocabulary, same weights). When the gap
    is within twice that error, float32 arithmetic cannot tell the two tokens apart: a tie."""
    import torch

    from acm_exp.eval.backends import encode_prompt

    at = next((i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b), min(len(first), len(second)))
    eos = tokenizer.eos_token_id
    chosen = [ids[at] if at < len(ids) else eos for ids in (first, second)]
    input_ids = torch.tensor([encode_prompt(tokenizer, prompt) + first[:at]])
    with torch.inference_mode():
        logits = {dtype: model(input_ids=input_ids).logits[0, -1].float() for dtype, model in models.items()}
    exact = logits[torch.float64]
    gap = abs(exact[chosen[0]] - exact[chosen[1]]).item()
    return gap, (logits[torch.float32] - exact).abs().max().item()


def test_hf_and_vllm_agree_on_the_toy_merged_model(merged_toy, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_row, hf_records = evaluate_with("hf", merged_toy, tmp_path / "hf")
    vllm_row, vllm_records = evaluate_with("vllm", merged_toy, tmp_path / "vllm")
    assert [r["id"] for r in hf_records] == [r["id"] for r in vllm_records]
    tokenizer = AutoTokenizer.from_pretrained(merged_toy)

    # Token counts: the generated tokens, EOS excluded, on every response of both backends. The toy
    # tokenizer has one token per byte, so the response re-encodes to exactly the generated tokens.
    for record in hf_records + vllm_records:
        assert record["generated_tokens"] == len(tokenizer(record["response"], add_special_tokens=False)["input_ids"])

    same = [a["response"] == b["response"] for a, b in zip(hf_records, vllm_records, strict=False)]
    for a, b, identical in zip(hf_records, vllm_records, same, strict=False):
        if identical:
            assert (a["generated_tokens"], a["finish_reason"]) == (b["generated_tokens"], b["finish_reason"])

    # Where texts differ, the two choices must tie in float32 at the first differing token.
    models = {
        dtype: AutoModelForCausalLM.from_pretrained(merged_toy, dtype=dtype).eval()
        for dtype in (torch.float32, torch.float64)
    }
    gaps = []
    for a, b, identical in zip(hf_records, vllm_records, same, strict=False):
        if not identical:
            ids = [tokenizer(r["response"], add_special_tokens=False)["input_ids"] for r in (a, b)]
            gap, rounding_error = divergence_gap(models, tokenizer, a["prompt"], *ids)
            gaps.append((gap / rounding_error, gap, rounding_error, a["id"]))
    worst = max(gaps, default=(0.0, 0.0, 0.0, None))
    print(
        f"\nparity hf vs vllm (float32, greedy, {len(same)} toy problems): identical {sum(same)}/{len(same)}; "
        f"accuracy {hf_row['accuracy']:.1f} vs {vllm_row['accuracy']:.1f}; mean tokens "
        f"{hf_row['mean_tokens']:.2f} vs {vllm_row['mean_tokens']:.2f}; worst divergence ({worst[3]}): float64 "
        f"logit gap {worst[1]:.3g} = {worst[0]:.2f} x the float32 logit error there ({worst[2]:.3g})"
    )
    assert sum(same) >= 0.95 * len(same)
    assert all(ratio <= 2 for ratio, *_ in gaps), gaps
    assert abs(hf_row["accuracy"] - vllm_row["accuracy"]) <= 2.0
    assert abs(hf_row["mean_tokens"] - vllm_row["mean_tokens"]) <= 0.02 * hf_row["mean_tokens"]


def _engine_processes() -> list:
    import psutil

    return [
        child
        for child in psutil.Process().children(recursive=True)
        if child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    ]


def test_close_leaves_no_engine_process_and_a_second_engine_starts(merged_toy):
    from acm_exp.eval.backends import SamplingSettings, VllmBackend

    before = {child.pid for child in _engine_processes()}
    settings = SamplingSettings(max_new_tokens=8)
    outputs = []
    for _ in range(2):  # a sweep: one model after another in this process
        backend = VllmBackend(merged_toy, dtype="bfloat16", max_model_len=128, enforce_eager=True)
        assert {child.pid for child in _engine_processes()} - before
        outputs.append(backend.generate(["Q: 1 + 2 + 3 + 4\nA:"], settings))
        backend.close()
        assert {child.pid for child in _engine_processes()} - before == set()
    assert outputs[0] == outputs[1]


def test_default_job_runs_on_vllm_from_the_command_line(toy_pair, tmp_path):
    from acm_exp.toy import toy_cache_dir

    # The session's toy pair in a fresh cache: nothing else (no earlier evaluation) is reused.
    shutil.copytree(toy_pair["base"].parent, toy_cache_dir(tmp_path / "cache"))
    env = {**os.environ, "ACM_EXP_CACHE": str(tmp_path / "cache"), "ACM_EXP_RESULTS_DIR": str(tmp_path / "results")}
    # Eager mode: the three engines (base, fine-tuned, merged) skip graph compilation, which the parity
    # test above already exercises; this test is about the command line, engine start and teardown.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "acm_exp",
            "eval.backend=vllm",
            "eval.vllm.enforce_eager=true",
            "logger=disabled",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    table = result.stdout[result.stdout.index("benchmark") :]
    starts = [
        line.split(" - ", 1)[-1]
        for line in (result.stdout + result.stderr).splitlines()
        if "vllm engine started in" in line
    ]
    print("\n" + "\n".join(starts) + "\n" + table)
    for role in ("base", "finetuned", "merged"):
        assert any(line.split()[:1] == [role] and "%" in line for line in table.splitlines()), table
    assert "vllm backend: loading" in result.stdout + result.stderr  # Hydra logs to stdout


def test_vllm_loglikelihoods_agree_with_hf(merged_toy):
    """Multiple choice (HellaSwag): vLLM's prompt log-probabilities summed over the continuation equal
    the hf backend's direct scoring, in float32, and pick the same choices."""
    from acm_exp.eval.backends import HfBackend, VllmBackend
    from acm_exp.eval.loglikelihood import choose
    from acm_exp.eval.tasks import ChoiceQuestion

    question = ChoiceQuestion("Q: 12 + 30 =\nA:", ("42", "41", "42 wait, let me check: 12 + 30 = 42", "x"), gold=0)
    requests = [(question.context, continuation) for continuation in question.continuations]
    requests += [("Q: 1 + 2 + 3 + 4\nA: ", "10"), ("", "Q: 5 + 5")]  # a trailing space; no context at all
    hf = HfBackend(merged_toy, device="cpu", dtype="float32", batch_size=3)
    hf_scores = hf.loglikelihoods(requests)
    hf.close()
    vllm = VllmBackend(merged_toy, dtype="float32", max_model_len=128, enforce_eager=True)
    vllm_scores = vllm.loglikelihoods(requests)
    vllm.close()
    print(f"\nlog-likelihoods hf   {[round(s, 4) for s in hf_scores]}")
    print(f"log-likelihoods vllm {[round(s, 4) for s in vllm_scores]}")
    assert vllm_scores == pytest.approx(hf_scores, abs=2e-3)
    assert choose(question, vllm_scores[:4]) == choose(question, hf_scores[:4])
