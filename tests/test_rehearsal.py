"""The paper's L2S pipeline at the real 1.5B shape, offline, on the hf backend (slow; CI's main suite).

A two-layer stand-in of Qwen2.5-Math-1.5B + DeepSeek-R1-Distill-Qwen-1.5B (full width and vocabulary,
the real tokenizers; acm_exp.stand_in) goes through the whole pipeline as a user runs it: s1K
calibration (the reference 100 samples, calibration.max_tokens lowered), ACM capture and MI at every
point including the 151,936-wide lm_head, the merges TA, TIES, DARE, AIM, Sens-Merging, ACM-TA and
ACM-TIES, then evaluation of base, fine-tuned and merged models on the six math benchmarks and
HumanEval-Pro with the pair's real prompts (eval.limit=2, 4 new tokens). Accuracy means nothing here;
the checks are: every stage runs, the prompts and their token counts are the real ones, the tied base
stays tied, every results row is complete, Sens-Merging skips (and counts) what it cannot score, and
scripted stand-ins show stop strings, stop tokens and EOS ending generation with the real tokenizers.
Also here: the failure that started it, ``merge=sens calibration=s1k`` on the toy pair.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import rehearsal_support as support

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

# ACM first: AIM reuses the importance its capture records in the same pass.
METHODS = ["acm_ta", "acm_ties", "aim", "sens", "task_arithmetic", "ties", "dare"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One cache for the module: the s1K embeddings are computed once for both tests."""
    return tmp_path_factory.mktemp("rehearsal")


@pytest.fixture(scope="module")
def stand_in(work):
    return support.build_stand_in(work / "stand_in")


def test_sens_merging_on_s1k_runs_on_the_toy_pair(work, toy_pair):
    """`merge=sens calibration=s1k` stopped after the base's pass (an s1K question longer than the toy's
    sens.max_tokens, a solution without a final answer); now those samples are skipped and counted."""
    pair = [f"model_pair.base={toy_pair['base']}", f"model_pair.finetuned=[{toy_pair['finetuned']}]"]
    log = support.run_cli(
        [*pair, "merge=sens", "calibration=s1k", "eval=none", "logger=disabled", "hydra.run.dir=toy_sens"], work
    )
    coefficients = json.loads((work / "toy_sens" / "coefficients.json").read_text())
    samples = coefficients["metadata"]["samples"]
    for role in ("base", "finetuned"):
        assert samples[role]["records"] == 100 and 0 < samples[role]["scored"] < 100, samples
    assert samples["base"]["skipped"]["too_long"] > 0
    assert "skipped" in log and "too long for sens.max_tokens=256" in log


def test_l2s_pipeline_at_the_1p5b_shape_on_hf(work, stand_in):
    started = time.perf_counter()
    arguments = [
        "-m",
        *stand_in.overrides(),
        "merge=" + ",".join(METHODS),
        *support.EVAL_OVERRIDES,
        "eval.backend=hf",
        "calibration.max_tokens=64",
        "sens.max_tokens=64",
        "logger.results_dir=results",
        "hydra.sweep.dir=sweep",
    ]
    log = support.run_cli(arguments, work)
    print("\n".join(support.stage_lines(log)))

    table = support.complete_rows(work / "results", METHODS)
    run_dirs = sorted({Path(path) for path in table[table["model"] == "merged"]["run_dir"]})
    assert len(run_dirs) == len(METHODS)
    support.check_tied_merges(run_dirs)
    shown = support.check_prompts(table, stand_in.base, stand_in.finetuned[0])
    for model, prompt in shown.items():
        print(f"--- {model} GSM8K prompt ({prompt['tokens']} tokens):\n{prompt['prompt']}")

    # ACM: λ for every capture point, lm_head included; AIM reused the capture's importance.
    acm = json.loads((run_dirs[METHODS.index("acm_ties")] / "coefficients.json").read_text())
    points = json.dumps(acm)
    assert "lm_head" in points and "embed_tokens" in points and "layers.1" in points
    # Sens-Merging on s1K with the L2S texts: the base on its solutions, the fine-tuned model on the
    # template fallback (s1K has no R1 responses); samples past sens.max_tokens are skipped and counted.
    sens = json.loads((run_dirs[METHODS.index("sens")] / "coefficients.json").read_text())["metadata"]["samples"]
    assert sens["base"]["records"] == sens["finetuned"]["records"] == 100
    assert sens["base"]["skipped"].get("too_long", 0) > 0 and sens["base"]["scored"] > 0
    assert sens["finetuned"]["scored"] > 0 and sum(sens["finetuned"]["skipped"].values()) > 0
    costs = json.loads((run_dirs[METHODS.index("acm_ties")] / "costs.json").read_text())
    stages = {stage["stage"] for stage in costs["stages"]}
    assert {"calibration", "coefficients", "merge", "generation"} <= stages
    print(f"hf rehearsal: {time.perf_counter() - started:.0f} s")


def test_stop_strings_stop_tokens_and_eos_end_generation_with_the_real_tokenizers(stand_in, tmp_path):
    support.check_scripted_generation(stand_in, tmp_path, backend="hf")
