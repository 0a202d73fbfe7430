"""Elementwise merges run chunk by chunk on CPU (issue 15): bit-identical to the whole-tensor arithmetic."""

from __future__ import annotations

import pytest
import torch
from model_factory import load_state, make_pair
from safetensors.torch import load_file, save_file

from acm_exp.config import MergeConfig
from acm_exp.errors import ConfigError
from acm_exp.merge import Adjustment, MergeSettings, engine, get_method, open_inputs, run_merge
from acm_exp.merge.engine import merge_tensor

PER_ENTRY = "model.layers.0.mlp.up_proj.weight"
PER_ROW = "model.layers.1.self_attn.q_proj.weight"


def adjustment_for(shapes: dict[str, tuple[int, ...]]):
    """Model weights everywhere, a per-entry factor on one tensor and a per-row (broadcast) one on another."""

    def adjust(name: str) -> Adjustment:
        generator = torch.Generator().manual_seed(len(name))
        if name == PER_ENTRY:
            factor = torch.rand(shapes[name], generator=generator)
        elif name == PER_ROW:
            factor = torch.rand((shapes[name][0], 1), generator=generator)
        else:
            factor = 0.75
        return Adjustment(
            model_weights=(0.3, 0.9), base_factor=0.5 if name.endswith("norm.weight") else 1.0, delta_factor=factor
        )

    return adjust


@pytest.mark.parametrize("method", ["task_arithmetic", "acm_ta"])
def test_chunked_elementwise_merge_equals_whole_tensor_arithmetic(tmp_path, monkeypatch, method):
    base, finetuned = make_pair(tmp_path / "in", count=2, dtype=torch.bfloat16, hidden=64, vocab_size=96)
    # Small chunks and row blocks: every tensor spans several of each, with a partial last one.
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(engine, "ROW_BLOCK_ELEMENTS", 1000)
    config = MergeConfig(method=method, scale=0.7)
    base_state = load_state(base)
    finetuned_states = [load_state(path) for path in finetuned]
    adjust = adjustment_for({name: tuple(tensor.shape) for name, tensor in base_state.items()})
    inputs = open_inputs(base, finetuned)
    try:
        run_merge(inputs, get_method(method), config, MergeSettings(output_dir=tmp_path / "out"), adjust)
    finally:
        inputs.close()
    merged = load_state(tmp_path / "out")
    assert merged.keys() == base_state.keys()
    for name, tensor in base_state.items():
        expected = merge_tensor(
            tensor,
            [state[name] for state in finetuned_states],
            get_method(method),
            config,
            adjust(name),
            torch.Generator(),
        ).to(torch.bfloat16)
        assert torch.equal(merged[name], expected), name


def test_nan_in_a_later_chunk_names_the_tensor(tmp_path, monkeypatch):
    base, finetuned = make_pair(tmp_path / "in", dtype=torch.bfloat16)
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", 64)
    state = load_file(finetuned[0] / "model.safetensors")
    state["model.layers.1.mlp.down_proj.weight"][-1, -1] = float("inf")
    save_file(state, finetuned[0] / "model.safetensors", metadata={"format": "pt"})
    inputs = open_inputs(base, finetuned)
    try:
        with pytest.raises(ConfigError, match="model.layers.1.mlp.down_proj.weight .* NaN or Inf"):
            run_merge(
                inputs,
                get_method("task_arithmetic"),
                MergeConfig(method="task_arithmetic"),
                MergeSettings(output_dir=tmp_path / "out"),
            )
    finally:
        inputs.close()
    assert not (tmp_path / "out").exists()
