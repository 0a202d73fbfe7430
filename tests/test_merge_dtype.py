"""The output dtype: a merged tensor that is Inf or NaN in it stops the merge before anything is
published; a base config.json declaring another dtype than its weights' is a warning naming both, and
the merge is written in the stored dtype."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_factory import load_state, make_pair
from safetensors.torch import save_file
from test_bad_inputs import error_lines, run_cli

from acm_exp.config import MergeConfig
from acm_exp.errors import DataError
from acm_exp.merge import MergeSettings, get_method, open_inputs, run_merge
from acm_exp.merge.engine import MANIFEST_NAME

TENSOR = "model.layers.1.mlp.up_proj.weight"


def merge(base, finetuned, output, *, method="task_arithmetic", dtype=None, overwrite=False, **params):
    inputs = open_inputs(base, [finetuned], dtype=dtype)
    try:
        settings = MergeSettings(output_dir=output, dtype=dtype, overwrite=overwrite)
        return run_merge(inputs, get_method(method), MergeConfig(method=method, **params), settings)
    finally:
        inputs.close()


def set_tensor(model: Path, name: str, value: float, dtype: torch.dtype | None = None) -> None:
    """Set every entry of one tensor of a single-file model (and optionally store every tensor in ``dtype``)."""
    state = load_state(model)
    state[name] = torch.full_like(state[name], value)
    if dtype is not None:
        state = {key: tensor.to(dtype) for key, tensor in state.items()}
    save_file(state, model / "model.safetensors", metadata={"format": "pt"})


def hidden_entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


@pytest.fixture
def pair(tmp_path):
    base, finetuned = make_pair(tmp_path / "in")
    return base, finetuned[0]


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])  # merged chunk by chunk, and whole
def test_float16_overflow_stops_the_merge_before_anything_is_published(tmp_path, pair, method):
    base, finetuned = pair
    set_tensor(finetuned, TENSOR, 1e5)  # within float32 and bfloat16, past float16's 65504
    output = tmp_path / "out"
    merge(base, finetuned, output)  # float32, as stored: fine
    before = load_state(output)
    params = {"scale": 1.0} if method == "task_arithmetic" else {"k": 0.5, "scale": 1.0}
    with pytest.raises(DataError) as raised:
        merge(base, finetuned, output, method=method, dtype="float16", overwrite=True, **params)
    message = str(raised.value)
    assert "\n" not in message
    assert f"merged tensor {TENSOR} has " in message and "Inf/NaN value(s) in the output dtype float16" in message
    assert "65504" in message and "merge.dtype=bfloat16 or float32" in message
    # The earlier output is untouched and nothing unfinished is left.
    after = load_state(output)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert hidden_entries(tmp_path) == []
    merge(base, finetuned, tmp_path / "bf16", method=method, dtype="bfloat16", **params)


def test_a_float32_merge_that_overflows_is_stopped_too(tmp_path, pair):
    base, finetuned = pair
    set_tensor(base, TENSOR, -3e38)
    set_tensor(finetuned, TENSOR, 3e38)  # finite inputs whose task vector overflows float32
    with pytest.raises(
        DataError, match=rf"merged tensor {TENSOR} has \d+ Inf/NaN value\(s\) in the output dtype float32"
    ):
        merge(base, finetuned, tmp_path / "out", scale=1.0)
    assert not (tmp_path / "out").exists() and hidden_entries(tmp_path) == []


def test_a_declared_dtype_that_disagrees_with_the_weights_is_a_warning_and_the_stored_dtype_wins(
    tmp_path, pair, caplog
):
    base, finetuned = pair
    set_tensor(base, TENSOR, 0.0, dtype=torch.bfloat16)
    set_tensor(finetuned, TENSOR, 1e5, dtype=torch.bfloat16)
    config = json.loads((base / "config.json").read_text())
    config.pop("torch_dtype", None)
    config["dtype"] = "float16"
    (base / "config.json").write_text(json.dumps(config))
    with caplog.at_level("WARNING"):
        result = merge(base, finetuned, tmp_path / "out", scale=1.0)
    warning = next(m for m in caplog.messages if "declares torch_dtype" in m)
    assert "declares torch_dtype=float16 but its floating-point weights are stored as bfloat16" in warning
    assert "the merge is written as bfloat16" in warning
    assert result.manifest["output"]["dtype"] == "bfloat16"
    written = json.loads((result.output_dir / "config.json").read_text())
    assert written["torch_dtype"] == written["dtype"] == "bfloat16"
    merged = load_state(result.output_dir)
    assert merged[TENSOR].dtype == torch.bfloat16 and torch.isfinite(merged[TENSOR].float()).all()
    # merge.dtype still decides when it is set (and the float16 output then overflows).
    with caplog.at_level("WARNING"), pytest.raises(DataError, match="output dtype float16"):
        merge(base, finetuned, tmp_path / "fp16", dtype="float16", scale=1.0)
    assert "the merge is written as float16 (merge.dtype)" in caplog.messages[-1]


@pytest.mark.slow
def test_the_cli_reports_the_overflow_in_one_line(tmp_path, pair):
    base, finetuned = pair
    set_tensor(finetuned, TENSOR, 1e5)
    output = tmp_path / "out"
    overrides = [
        "model_pair=custom",
        f"model_pair.base={base}",
        f"model_pair.finetuned=[{finetuned}]",
        "merge=task_arithmetic",
        "merge.dtype=float16",
        f"merge.output_dir={output}",
        "eval=none",
        "logger=disabled",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = run_cli(*overrides, cwd=tmp_path)
    errors = error_lines(result)
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert TENSOR in errors[0] and "output dtype float16" in errors[0]
    assert not output.exists() and not (output / MANIFEST_NAME).exists()


def test_an_overflow_in_a_later_chunk_of_a_row_block_is_found(tmp_path, pair, monkeypatch):
    from acm_exp.merge import engine

    base, finetuned = pair
    state = load_state(finetuned)
    state[TENSOR][-1, -1] = 1e5  # one entry, in the last chunk of the last row block
    save_file(state, finetuned / "model.safetensors", metadata={"format": "pt"})
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(engine, "ROW_BLOCK_ELEMENTS", 1000)
    with pytest.raises(
        DataError, match=rf"merged tensor {TENSOR} has 1 Inf/NaN value\(s\) in the output dtype float16"
    ):
        merge(base, finetuned, tmp_path / "out", dtype="float16", scale=1.0)
    assert not (tmp_path / "out").exists() and hidden_entries(tmp_path) == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_overflow_limit_is_where_rounding_to_the_output_dtype_reaches_infinity(dtype):
    from acm_exp.merge.finite import overflow_limit

    limit = torch.tensor(overflow_limit(dtype), dtype=torch.float32)
    below = torch.nextafter(limit, torch.tensor(0.0))
    assert torch.isinf(limit.to(dtype)) and below.to(dtype).item() == torch.finfo(dtype).max
