"""Stage costs: what each stage of a run paid (time, peak memory, hardware), cache hits with their
original cost, and the cost table built from the results."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from app_config import compose_config

from acm_exp import costs
from acm_exp.costs import CostLedger, cost_columns

MIB = 1024**2


def _touch(megabytes: int) -> np.ndarray:
    array = np.ones(megabytes * MIB, dtype=np.uint8)  # ones, not zeros: the pages must be resident
    return array


def test_a_stage_records_its_own_peak_not_the_process_lifetime_peak():
    book = CostLedger()
    with book.measure("big"):
        big = _touch(200)
        del big
    with book.measure("small"):
        time.sleep(0.01)
    big_cost, small_cost = book.stages
    assert big_cost.peak_rss_bytes >= 200 * MIB
    # After the big stage freed its array, the next stage's peak is far below it.
    assert small_cost.peak_rss_bytes < big_cost.peak_rss_bytes - 100 * MIB
    assert small_cost.wall_s >= 0.01 and small_cost.cpu_s >= 0


def test_nested_stages_fold_their_peak_into_the_enclosing_one():
    book = CostLedger()
    with book.measure("outer"):
        with book.measure("inner"):
            inner_array = _touch(150)
            del inner_array
        time.sleep(0.001)
    inner, outer = book.stages
    assert inner.stage == "inner" and outer.stage == "outer"
    assert outer.peak_rss_bytes >= inner.peak_rss_bytes >= 150 * MIB
    assert outer.wall_s >= inner.wall_s


def test_cpu_time_counts_work_not_waiting():
    book = CostLedger()
    with book.measure("sleep"):
        time.sleep(0.2)
    with book.measure("spin"):
        deadline = time.process_time() + 0.2
        while time.process_time() < deadline:
            pass
    sleep, spin = book.stages
    assert sleep.cpu_s < 0.1 <= spin.cpu_s


def test_cache_hits_add_up_their_original_costs():
    cost = costs.StageCost("coefficients")
    cost.note_cache_hit({"wall_s": 10.0, "cpu_s": 15.0, "peak_rss_bytes": 3 * MIB})
    cost.note_cache_hit({"wall_s": 5.0, "cpu_s": 6.0, "peak_rss_bytes": 7 * MIB})
    assert cost.cached
    assert cost.original["wall_s"] == 15.0 and cost.original["cpu_s"] == 21.0
    assert cost.original["peak_rss_bytes"] == 7 * MIB


def test_measure_reports_to_the_run_ledger_and_caches_find_the_current_stage():
    with costs.ledger() as book:
        with costs.measure("coefficients"):
            costs.note_cache_hit({"wall_s": 42.0})
    (stage,) = book.stages
    assert stage.cached and stage.original == {"wall_s": 42.0}
    costs.note_cache_hit({"wall_s": 1.0})  # outside a run: nothing to report to, and no error


def _stage(name, wall, *, cached=False, original=None, tokens=None, peak=MIB, **details):
    record = costs.StageCost(
        name,
        wall_s=wall,
        cpu_s=wall / 2,
        peak_rss_bytes=peak,
        cached=cached,
        original=original,
        tokens=tokens,
        details=details,
    )
    return record.to_dict()


def test_cost_columns_of_a_row_take_its_own_benchmark_and_the_original_costs():
    book = {
        "hardware": {"cpu": "Test CPU", "cpu_cores": 2, "gpu": None, "gpu_count": 0},
        "stages": [
            _stage("calibration", 0.5),
            _stage("coefficients", 1.0, cached=True, original={"wall_s": 80.0, "peak_rss_bytes": 4 * 1024**3}),
            _stage("merge", 3.0, peak=2 * 1024**3),
            _stage("generation", 10.0, tokens=500, model="merged", benchmark="gsm8k", seed=0),
            _stage("generation", 20.0, tokens=4000, model="merged", benchmark="math500", seed=0),
            _stage(
                "generation", 0.1, cached=True, original={"tokens_per_s": 30.0}, model="base", benchmark="gsm8k", seed=0
            ),
        ],
    }
    merged = cost_columns(book, model="merged", benchmark="math500", seed=0)
    assert merged["eval_s"] == 20.0 and merged["eval_tokens_per_s"] == 200.0 and merged["eval_cached"] is False
    assert merged["coefficients_cached"] is True and merged["coefficients_original_s"] == 80.0
    assert merged["coefficients_original_peak_rss_gb"] == 4.0 and merged["merge_peak_rss_gb"] == 2.0
    assert merged["calibration_s"] == 0.5 and merged["hardware_cpu"] == "Test CPU"
    base = cost_columns(book, model="base", benchmark="gsm8k", seed=0)
    assert base["eval_cached"] is True and base["eval_tokens_per_s"] == 30.0
    assert set(merged) == set(costs.COST_COLUMNS)


# ---------------------------------------------------------------------------------------------
# Through the pipeline, on the toy pair


@pytest.fixture(scope="module")
def toy_cache(toy_pair) -> Path:
    return next(iter(toy_pair.values())).parents[2]


def _weights_bytes(model_dir: Path) -> int:
    return sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))


def _run(tmp_path: Path, cache: Path, name: str, *overrides: str):
    from acm_exp.pipeline import run

    cfg = compose_config(
        "logger.wandb.mode=disabled",
        f"logger.results_dir={tmp_path / 'results'}",
        f"cache_dir={cache}",
        "eval.limit=4",
        "eval.max_new_tokens=16",
        "eval.base_max_new_tokens=16",
        "force=true",
        f"merge.output_dir={tmp_path / name / 'merged'}",
        *overrides,
    )
    run(cfg, run_dir=tmp_path / name)
    return json.loads((tmp_path / name / "costs.json").read_text())


@pytest.mark.slow
def test_toy_run_records_every_stage_and_a_rerun_reports_cache_hits(tmp_path, toy_pair, toy_cache):
    from acm_exp.results import load_results

    first = _run(tmp_path, toy_cache, "first", "acm.cache_dir=" + str(tmp_path / "mi"))
    stages = {stage["stage"]: stage for stage in first["stages"]}
    assert {"calibration", "coefficients", "merge", "evaluation", "generation"} <= set(stages)
    assert all(stage["wall_s"] > 0 and stage["cpu_s"] >= 0 for stage in first["stages"])
    weights = sum(_weights_bytes(path) for path in toy_pair.values())
    # The activation pass holds the base and the fine-tuned model at once.
    assert stages["coefficients"]["peak_rss_bytes"] >= weights
    assert stages["merge"]["peak_rss_bytes"] >= max(_weights_bytes(path) for path in toy_pair.values())
    assert not stages["coefficients"]["cached"] and stages["coefficients"]["original"]["wall_s"] > 0
    assert first["hardware"]["cpu_cores"] >= 1 and first["hardware"]["cpu"]

    second = _run(tmp_path, toy_cache, "second", "acm.cache_dir=" + str(tmp_path / "mi"))
    again = {stage["stage"]: stage for stage in second["stages"]}
    assert again["coefficients"]["cached"]
    mi_first = next(s for s in first["stages"] if s["stage"] == "MI statistics")
    assert again["coefficients"]["original"]["wall_s"] == pytest.approx(mi_first["wall_s"])
    reused = [s for s in second["stages"] if s["stage"] == "generation" and s["details"]["model"] != "merged"]
    assert reused and all(s["cached"] and s["original"]["wall_s"] > 0 for s in reused)

    table = load_results(tmp_path / "results")
    assert table["coefficients_s"].notna().all() and table["eval_s"].notna().all()
    assert (table["coefficients_original_s"] > 0).all()


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_count_formula_equals_a_real_qwen2_model(tied):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = costs.ModelShape("tiny", hidden=64, intermediate=176, layers=3, heads=4, kv_heads=2, vocab=301, tied=tied)
    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=301,
        tie_word_embeddings=tied,
    )
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    assert shape.parameters == sum(p.numel() for p in model.parameters())  # tied weights count once


def test_paper_sizes_have_their_published_parameter_counts():
    published = {"1.5B": 1_543_714_304, "7B": 7_615_616_512, "14B": 14_770_033_664, "32B": 32_763_876_352}
    assert {shape.name: shape.parameters for shape in costs.PAPER_SHAPES} == published
    needs = costs.memory_needs(costs.PAPER_SHAPES[-1])
    assert needs["capture_gb"] > 2 * needs["weights_gb"] > 130  # 32B capture fits on no single 80 GB GPU


def test_readme_memory_table_is_the_computed_one():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert costs.memory_table() in readme


def test_stage_predictions_are_the_runtime_plus_each_stages_parts():
    shape = costs.PAPER_SHAPES[0]
    base = costs.HOST_RUNTIME_BYTES
    capture = costs.stage_prediction("capture", shape, tokens=512)
    assert capture == base + costs.QWEN_TOKENIZER_BYTES + costs.capture_memory(shape, 512, compared_tied=False)["total"]
    assert costs.stage_prediction("capture", shape, tokens=2048) > capture
    assert costs.stage_prediction("merge", shape) == base + costs.merge_memory(shape)
    assert costs.merge_memory(shape) == shape.vocab * shape.hidden * (2 * 2 + 2 + 2 * 4 + 1)
    assert costs.merge_memory(shape, models=3) > costs.merge_memory(shape)
    one = costs.stage_prediction("generation", shape, tokens=100, batch=1)
    assert one > base + shape.parameters * 2
    kv_per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * 2
    assert costs.stage_prediction("generation", shape, tokens=200, batch=1) - one == 100 * kv_per_token
    assert 1 * costs.GIB < costs.stage_prediction("calibration", shape) < 1.5 * costs.GIB
    with pytest.raises(ValueError, match="stage='train'"):
        costs.stage_prediction("train", shape)
