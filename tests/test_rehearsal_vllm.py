"""The real-shape rehearsal on vLLM (vLLM's CPU build in CI: `.venv-vllm`, `pytest -m vllm`).

The two-layer 1.5B stand-in pair (acm_exp.stand_in) is merged (task arithmetic: the statistics-based
merges and their calibration run in the hf rehearsal, tests/test_rehearsal.py; what vLLM adds is the
generation) and base, fine-tuned and merged models are evaluated with ``eval.backend=vllm`` on the
six math benchmarks and HumanEval-Pro with the pair's real prompts: head size 128, the 151,936-row
vocabulary, R1's tokenizer and 131,072-token context (capped by its tokenizer's 16,384), the base's
4,096. Checked as on hf: prompts and token counts, the tied merge, complete results rows, and the
scripted stand-ins ending at stop strings, stop tokens and EOS.
"""

from __future__ import annotations

import importlib.util
import time

import pytest
import rehearsal_support as support

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed"),
]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("rehearsal_vllm")


@pytest.fixture(scope="module")
def stand_in(work):
    return support.build_stand_in(work / "stand_in")


def test_l2s_evaluation_at_the_1p5b_shape_on_vllm(work, stand_in):
    started = time.perf_counter()
    arguments = [
        *stand_in.overrides(),
        "merge=task_arithmetic",
        *support.EVAL_OVERRIDES,
        "eval.backend=vllm",
        # Compiling each engine costs about a minute on CPU and proves nothing about the shapes.
        "eval.vllm.enforce_eager=true",
        "logger.results_dir=results",
        "hydra.run.dir=run",
    ]
    log = support.run_cli(arguments, work)
    print("\n".join(support.stage_lines(log)))
    table = support.complete_rows(work / "results", ["task_arithmetic"])
    support.check_tied_merges([work / "run"])
    shown = support.check_prompts(table, stand_in.base, stand_in.finetuned[0])
    for model, prompt in shown.items():
        print(f"--- {model} GSM8K prompt ({prompt['tokens']} tokens)")
    print(f"vLLM rehearsal: {time.perf_counter() - started:.0f} s")


def test_stop_strings_stop_tokens_and_eos_end_generation_on_vllm(stand_in, tmp_path):
    support.check_scripted_generation(stand_in, tmp_path, backend="vllm")
