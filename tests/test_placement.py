"""Placement over several devices (acm.device / sens.device with max_memory, offload_dir).

The models are dispatched by accelerate (transformers' device_map="auto"); on this CPU machine a
small max_memory leaves part of each model on the CPU and the rest offloaded to disk (``meta``
parameters loaded per forward), which exercises the same hooks as a split over GPUs. The
statistics must equal those of the undispatched models exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_factory import make_pair

from acm_exp.acm import compute_coefficients, compute_mi_statistics, modeling, validate_acm_config
from acm_exp.acm.importance import compute_input_importance
from acm_exp.acm.modeling import load_causal_lm
from acm_exp.acm.sensitivity import compute_layer_sensitivity, compute_sens_coefficients
from acm_exp.config import AcmConfig, SensConfig
from acm_exp.devices import Placement, resolve_placement
from acm_exp.errors import ConfigError

TEXTS = ["What is 12 + 30?", "compute 7 * 8, then add 1.", "hello world", "a longer question: (3 + 4) * 5 = ?"]
PAIRS = [("what is 12 + 30? ", "42."), ("compute 7 * 8: ", "7 * 8 = 56"), ("hello ", "world")]
# The tiny models hold ~170 KB of float32 weights (4 layers): with this budget per model accelerate
# keeps the embedding and the first layers on the CPU and offloads the rest to disk.
SMALL_BUDGET = "100KB"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[Path, list[Path]]:
    return make_pair(tmp_path_factory.mktemp("placement_pair"), layers=4)


def offloading(tmp_path: Path, budget: str = SMALL_BUDGET) -> dict:
    return {"device": "cpu", "max_memory": {"cpu": budget}, "offload_dir": str(tmp_path / "offload")}


@pytest.fixture
def device_maps(monkeypatch) -> list[dict]:
    """The hf_device_map of every model loaded by the statistics code."""
    maps = []
    original = modeling.load_causal_lm

    def recording(*args, **kwargs):
        model = original(*args, **kwargs)
        maps.append(dict(getattr(model, "hf_device_map", {})))
        return model

    for module in ("acm_exp.acm.capture", "acm_exp.acm.importance", "acm_exp.acm.sensitivity"):
        monkeypatch.setattr(f"{module}.load_causal_lm", recording)
    return maps


def assert_split_over_cpu_and_disk(maps: list[dict]) -> None:
    assert maps, "no model was loaded"
    for device_map in maps:
        assert set(device_map.values()) == {"cpu", "disk"}, device_map


# ---------------------------------------------------------------------------------------------
# Settings


def test_single_device_is_not_dispatched():
    placement = resolve_placement("cpu")
    assert placement == Placement((torch.device("cpu"),)) and not placement.dispatched
    assert placement.load_arguments(side_by_side=2) == {"device_map": "cpu"}
    assert resolve_placement("auto").devices == (torch.device("cpu"),)  # no GPU on this machine


def test_max_memory_is_shared_by_the_models_held_side_by_side(tmp_path):
    placement = resolve_placement("cpu", {"cpu": "2GiB"}, str(tmp_path), setting="acm")
    assert placement.dispatched
    arguments = placement.load_arguments(side_by_side=2)
    assert arguments == {"device_map": "auto", "max_memory": {"cpu": 2**30}, "offload_folder": str(tmp_path)}
    assert placement.load_arguments(side_by_side=1)["max_memory"] == {"cpu": 2**31}


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


@pytest.mark.parametrize(
    "device",
    [
        "auto",
        "cuda:0,cuda:1,cuda:2,cuda:3",
        ["cuda:0", "cuda:1", "cuda:2", "cuda:3"],
        "[cuda:0, cuda:1, cuda:2, cuda:3]",
    ],
)
def test_every_form_of_a_device_list(four_gpus, device):
    placement = resolve_placement(device)
    assert placement.devices == tuple(torch.device(f"cuda:{index}") for index in range(4))
    assert placement.dispatched


def test_gpu_budgets_in_accelerate_form_split_between_base_and_compared(four_gpus):
    placement = resolve_placement("cuda:0,cuda:1", {"cuda:0": "80GB", 1: "80GB", "cpu": "100GB"}, setting="acm")
    assert placement.load_arguments(side_by_side=2)["max_memory"] == {0: 40 * 10**9, 1: 40 * 10**9, "cpu": 50 * 10**9}


def test_free_memory_is_the_budget_without_max_memory(four_gpus, monkeypatch):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "get_max_memory", lambda: {0: 100, 1: 200, 2: 300, 3: 400, "cpu": 1000})
    placement = resolve_placement("cuda:1,cuda:3")
    assert placement.memory_per_model(2) == {1: 90, 3: 180}  # 90 % of the free memory, halved


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"device": "tpu"}, "acm.device='tpu'"),
        ({"device": "cuda:0,cuda:1"}, "CUDA is not available"),
        ({"device": "cpu,"}, "list of devices"),
        ({"device": 3}, "list of devices"),
        ({"max_memory": {"cpu": "lots"}}, "acm.max_memory.cpu='lots'"),
        ({"max_memory": {"cpu": -5}}, "acm.max_memory.cpu=-5"),
        ({"max_memory": {"tpu": "1GB"}}, "acm.max_memory='tpu'"),
        ({"max_memory": "1GB"}, "expected a mapping"),
        ({"offload_dir": 7}, "acm.offload_dir=7"),
    ],
)
def test_bad_placements_are_one_line_config_errors(settings, message):
    arguments = {"device": "cpu", **settings}
    with pytest.raises(ConfigError, match=message) as error:
        resolve_placement(arguments["device"], arguments.get("max_memory"), arguments.get("offload_dir"), setting="acm")
    assert "\n" not in str(error.value)


def test_bad_gpu_lists_are_config_errors(four_gpus):
    for device, max_memory, message in [
        ("cuda:0,cuda:0", None, "names a device twice"),
        ("cuda:0,cpu", None, "mixes cpu with GPUs"),
        ("cuda:7", None, "only 4 CUDA device"),
        ("cuda:0,cuda:1", {"cuda:0": "40GB"}, "no size for cuda:1"),
        ("cuda:0", {"cuda:0": "40GB", "cuda:2": "40GB"}, "GPU 2, which is not in"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve_placement(device, max_memory, setting="sens")


def test_config_validation_checks_the_placement():
    validate_acm_config(AcmConfig(device="cpu", max_memory={"cpu": "1GB"}))
    with pytest.raises(ConfigError, match="acm.max_memory.cpu='much'"):
        validate_acm_config(AcmConfig(device="cpu", max_memory={"cpu": "much"}))
    from omegaconf import OmegaConf

    from acm_exp.acm.sens_provider import validate_sens_config

    cfg = OmegaConf.create({"model_pair": {"finetuned": ["x"]}, "sens": OmegaConf.structured(SensConfig)})
    cfg.sens.max_memory = {"cpu": "much"}
    with pytest.raises(ConfigError, match="sens.max_memory.cpu='much'"):
        validate_sens_config(cfg)


def test_command_line_overrides_give_a_list_and_a_mapping(four_gpus):
    from acm_exp.overrides import compose_config

    cfg, _ = compose_config(
        [
            "merge=acm_ties",
            "acm.device=[cuda:0,cuda:1]",
            "acm.max_memory={0: 70GiB, 1: 70GiB, cpu: 100GiB}",
            "sens.device='cuda:2,cuda:3'",
            "sens.max_memory={2: 40GiB, 3: 40GiB}",
            "sens.offload_dir=/scratch/offload",
        ]
    )
    acm = resolve_placement(cfg.acm.device, cfg.acm.max_memory, cfg.acm.offload_dir, setting="acm")
    assert acm.devices == (torch.device("cuda:0"), torch.device("cuda:1"))
    assert acm.load_arguments(side_by_side=2)["max_memory"] == {0: 35 * 2**30, 1: 35 * 2**30, "cpu": 50 * 2**30}
    sens = resolve_placement(cfg.sens.device, cfg.sens.max_memory, cfg.sens.offload_dir, setting="sens")
    assert sens.load_arguments() == {
        "device_map": "auto",
        "max_memory": {2: 40 * 2**30, 3: 40 * 2**30},
        "offload_folder": "/scratch/offload",
    }


# ---------------------------------------------------------------------------------------------
# Dispatched statistics equal the undispatched ones


def test_dispatched_capture_gives_identical_mi_and_coefficients(model_dirs, tmp_path, device_maps):
    base, tuned = model_dirs
    whole = compute_mi_statistics(
        base, tuned, TEXTS, acm_cfg=AcmConfig(device="cpu"), cache_dir=tmp_path / "a", progress=False
    )
    assert device_maps == [{}, {}]
    device_maps.clear()
    dispatched = compute_mi_statistics(
        base, tuned, TEXTS, acm_cfg=AcmConfig(**offloading(tmp_path)), cache_dir=tmp_path / "b", progress=False
    )
    assert_split_over_cpu_and_disk(device_maps)
    np.testing.assert_array_equal(dispatched.mi, whole.mi)
    for t in (0.3, 0.7):
        np.testing.assert_array_equal(
            compute_coefficients(dispatched, t=t).lambdas, compute_coefficients(whole, t=t).lambdas
        )
    # The AIM importance recorded by the same pass on the dispatched base is the undispatched one.
    importance_whole = compute_input_importance(
        base, TEXTS, device="cpu", dtype="bfloat16", cache_dir=tmp_path / "a", progress=False
    )
    importance_dispatched = compute_input_importance(
        base, TEXTS, device="cpu", dtype="bfloat16", cache_dir=tmp_path / "b", progress=False
    )
    assert importance_whole.importance.keys() == importance_dispatched.importance.keys()
    for name, values in importance_whole.importance.items():
        np.testing.assert_array_equal(importance_dispatched.importance[name], values)


def test_dispatched_aim_importance_is_identical(model_dirs, tmp_path, device_maps):
    base, _ = model_dirs
    whole = compute_input_importance(
        base, TEXTS, device="cpu", dtype="bfloat16", cache_dir=tmp_path / "a", progress=False
    )
    device_maps.clear()
    # One model alone: half the capture's budget gives it the capture's share.
    dispatched = compute_input_importance(
        base, TEXTS, dtype="bfloat16", cache_dir=tmp_path / "b", progress=False, **offloading(tmp_path, "50KB")
    )
    assert_split_over_cpu_and_disk(device_maps)
    assert whole.importance.keys() == dispatched.importance.keys() and whole.tokens == dispatched.tokens
    for name, values in whole.importance.items():
        np.testing.assert_array_equal(dispatched.importance[name], values)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_dispatched_sensitivity_is_identical(model_dirs, tmp_path, device_maps, checkpointing):
    base, tuned = model_dirs
    results = {}
    for name, placement in (("whole", {"device": "cpu"}), ("dispatched", offloading(tmp_path, "120KB"))):
        device_maps.clear()
        results[name] = [
            compute_layer_sensitivity(
                path,
                PAIRS,
                dtype="float32",
                gradient_checkpointing=checkpointing,
                cache_dir=tmp_path / name,
                progress=False,
                **placement,
            )
            for path in (base, tuned[0])
        ]
        if name == "dispatched":
            assert_split_over_cpu_and_disk(device_maps)
    for whole, dispatched in zip(results["whole"], results["dispatched"], strict=False):
        assert (whole.raw > 0).all()  # every layer, resident or offloaded, was counted
        np.testing.assert_array_equal(dispatched.raw, whole.raw)
    whole_weights = compute_sens_coefficients(*results["whole"], alpha=0.7, temperature=2.0)
    dispatched_weights = compute_sens_coefficients(*results["dispatched"], alpha=0.7, temperature=2.0)
    np.testing.assert_array_equal(dispatched_weights.c_base, whole_weights.c_base)
    np.testing.assert_array_equal(dispatched_weights.c_ft, whole_weights.c_ft)


def test_offload_hooks_are_restored_after_the_gradient_pass(model_dirs, tmp_path):
    from acm_exp.acm.modeling import decoder_layers
    from acm_exp.acm.sensitivity import collect_layer_sensitivity

    base, _ = model_dirs
    model = load_causal_lm(base, resolve_placement(**offloading(tmp_path), setting="sens"), torch.float32)

    def hooks() -> dict[str, type]:
        return {name: type(module._hf_hook) for name, module in model.named_modules() if hasattr(module, "_hf_hook")}

    before = hooks()
    assert before  # the offloaded modules carry accelerate's hooks
    collect_layer_sensitivity(model, [([1, 2, 3, 4], [-100, -100, 3, 4])], progress=False)
    assert hooks() == before
    assert all(parameter.grad is None for parameter in decoder_layers(model).parameters())


# ---------------------------------------------------------------------------------------------
# The cache key names what was computed, not where


def test_cache_key_is_unchanged_by_the_placement(model_dirs, tmp_path):
    base, tuned = model_dirs
    first = compute_mi_statistics(
        base, tuned, TEXTS, acm_cfg=AcmConfig(**offloading(tmp_path)), cache_dir=tmp_path, progress=False
    )
    before = modeling.FORWARD_PASSES
    again = compute_mi_statistics(
        base, tuned, TEXTS, acm_cfg=AcmConfig(device="cpu"), cache_dir=tmp_path, progress=False
    )
    assert modeling.FORWARD_PASSES == before
    assert again.metadata["cache_key"] == first.metadata["cache_key"]
    np.testing.assert_array_equal(again.mi, first.mi)
    importance = [
        compute_input_importance(base, TEXTS, dtype="bfloat16", cache_dir=tmp_path, progress=False, **placement)
        for placement in (offloading(tmp_path), {"device": "cpu"})
    ]
    assert modeling.FORWARD_PASSES == before  # filled by the capture pass, found under either placement
    assert importance[0].metadata["cache_key"] == importance[1].metadata["cache_key"]
    from acm_exp.acm import sensitivity

    passes = sensitivity.SENSITIVITY_PASSES
    sens = [
        compute_layer_sensitivity(base, PAIRS, dtype="float32", cache_dir=tmp_path, progress=False, **placement)
        for placement in (offloading(tmp_path), {"device": "cpu"})
    ]
    assert sensitivity.SENSITIVITY_PASSES == passes + len(PAIRS)  # the second one is a cache hit
    assert sens[0].metadata["cache_key"] == sens[1].metadata["cache_key"]


def test_run_hash_is_unchanged_by_the_placement_budgets():
    from acm_exp import results
    from acm_exp.overrides import compose_config

    plain, _ = compose_config(["merge=acm_ties", "eval=none"])
    placed, _ = compose_config(
        ["merge=acm_ties", "eval=none", "acm.max_memory={cpu: 10GiB}", "acm.offload_dir=/scratch/offload"]
    )
    assert results.config_hash(placed) == results.config_hash(plain)
    other_method, _ = compose_config(["merge=acm_ties", "eval=none", "acm.estimator=histogram", "acm.bins=16"])
    assert results.config_hash(other_method) != results.config_hash(plain)


# ---------------------------------------------------------------------------------------------
# Computed memory per device of each placement (acm_exp.costs)


def test_one_gpu_placement_is_the_single_device_need_and_more_gpus_hold_less():
    from acm_exp import costs

    for shape in costs.PAPER_SHAPES:
        single = costs.placement_needs(shape, 1)
        assert single["capture_gb"] == costs.memory_needs(shape)["capture_gb"]
        per_count = [costs.placement_needs(shape, gpus) for gpus in costs.GPU_COUNTS]
        for stage in single:
            assert all(a[stage] > b[stage] for a, b in zip(per_count, per_count[1:], strict=False)), (shape.name, stage)


def test_the_slurm_recipes_ask_for_enough_gpus():
    from acm_exp import costs

    shapes = {shape.name: shape for shape in costs.PAPER_SHAPES}
    # 14B capture on 2 x 80 GB or 4 x 40 GB, 32B on 4 x 80 GB; 32B never fits one 80 GB GPU.
    assert costs.gpus_needed(shapes["14B"], "capture_gb", 80) <= 2
    assert costs.gpus_needed(shapes["14B"], "capture_gb", 40) <= 4
    assert costs.gpus_needed(shapes["32B"], "capture_gb", 80) in (2, 4)
    assert costs.gpus_needed(shapes["32B"], "sensitivity_fp32_gb", 80) <= 4


def test_readme_has_the_computed_placement_table():
    from acm_exp import costs

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert costs.placement_table() in readme
