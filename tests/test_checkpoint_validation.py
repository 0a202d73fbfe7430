"""Checkpoint headers, indexes and configs are checked before any weight is read, each failure one line
naming the file and the tensor; a header that safetensors' own loader refuses is refused here too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_factory import make_model, make_pair, read_safetensors, write_safetensors
from safetensors.torch import load_file, save_file

from acm_exp.errors import ConfigError
from acm_exp.merge import open_inputs
from acm_exp.merge.checkpoint import open_checkpoint

GATE = "model.layers.0.mlp.gate_proj.weight"
UP = "model.layers.0.mlp.up_proj.weight"


def edit_header(path: Path, edit) -> None:
    header, data = read_safetensors(path)
    data = edit(header, data)
    write_safetensors(path, header, data)


@pytest.fixture
def model(tmp_path) -> Path:
    return make_model(tmp_path / "m")


def single_file(model: Path) -> Path:
    return model / "model.safetensors"


def assert_refused_by_safetensors_too(path: Path) -> None:
    # The rule is the format's, not ours: the reference loader refuses the same file.
    with pytest.raises(Exception):  # noqa: B017 (safetensors raises several types)
        load_file(path)


def test_a_well_formed_checkpoint_passes(model):
    with open_checkpoint(model) as checkpoint:
        assert GATE in checkpoint.tensors and UP in checkpoint.tensors


def test_two_tensors_aliasing_the_same_bytes_are_refused_naming_both(tmp_path):
    base, finetuned = make_pair(tmp_path)
    path = single_file(finetuned[0])

    def alias(header, data):
        header[UP]["data_offsets"] = list(header[GATE]["data_offsets"])
        return data

    edit_header(path, alias)
    assert_refused_by_safetensors_too(path)
    with pytest.raises(ConfigError, match=rf"tensors '{GATE}' and '{UP}' in {path} overlap"):
        open_inputs(base, finetuned)


def test_partially_overlapping_tensors_are_refused(model):
    path = single_file(model)

    def shift_back(header, data):
        begin, end = header[UP]["data_offsets"]
        header[UP]["data_offsets"] = [begin - 4, end - 4]
        return data

    edit_header(path, shift_back)
    assert_refused_by_safetensors_too(path)
    with pytest.raises(ConfigError, match=rf"{UP}.*overlap|overlap.*{UP}"):
        open_checkpoint(model)


def test_a_gap_between_tensors_is_refused(model):
    path = single_file(model)

    def insert_gap(header, data):
        begin, end = header[UP]["data_offsets"]
        for entry in header.values():
            if isinstance(entry, dict) and "data_offsets" in entry and entry["data_offsets"][0] >= begin:
                entry["data_offsets"] = [entry["data_offsets"][0] + 8, entry["data_offsets"][1] + 8]
        return data[:begin] + b"hidden!!" + data[begin:]

    edit_header(path, insert_gap)
    assert_refused_by_safetensors_too(path)
    with pytest.raises(ConfigError, match=rf"belong to no tensor \(gap before '{UP}'\)"):
        open_checkpoint(model)


def test_trailing_bytes_after_the_last_tensor_are_refused(model):
    path = single_file(model)
    with open(path, "ab") as handle:
        handle.write(b"\0" * 16)
    assert_refused_by_safetensors_too(path)
    with pytest.raises(ConfigError, match=rf"of {path} belong to no tensor \(after the last one"):
        open_checkpoint(model)


def test_byte_size_must_equal_dtype_size_times_shape(model):
    path = single_file(model)

    def wrong_shape(header, data):
        header[UP]["shape"] = [header[UP]["shape"][0] - 1, header[UP]["shape"][1]]
        return data

    edit_header(path, wrong_shape)
    assert_refused_by_safetensors_too(path)
    with pytest.raises(ConfigError, match=rf"tensor '{UP}' in {path}: data offsets .* needs"):
        open_checkpoint(model)


def test_offsets_past_the_data_section_are_refused(model):
    path = single_file(model)
    header, data = read_safetensors(path)
    write_safetensors(path, header, data[:-64])
    with pytest.raises(ConfigError, match=rf"in {path}: data offsets .* end past the .*-byte data section"):
        open_checkpoint(model)


@pytest.mark.parametrize(
    "entry,expected",
    [
        ({"shape": [2], "data_offsets": [0, 8]}, "malformed header entry"),
        ({"dtype": "F8_E9", "shape": [2], "data_offsets": [0, 2]}, "unsupported dtype 'F8_E9'"),
        ({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}, "invalid shape"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, "invalid data offsets"),
    ],
)
def test_malformed_entries_are_one_line_errors(tmp_path, entry, expected):
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    write_safetensors(directory / "model.safetensors", {"bad": entry}, b"\0" * 8)
    with pytest.raises(ConfigError, match=rf"tensor 'bad' in .*model.safetensors.*{expected}"):
        open_checkpoint(directory)


def sharded_model(tmp_path) -> tuple[Path, dict]:
    model = make_model(tmp_path / "m", shard_size="30KB")
    index = json.loads((model / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    return model, index


def test_a_tensor_stored_in_two_shards_is_refused(tmp_path):
    model, index = sharded_model(tmp_path)
    first, second = sorted(set(index["weight_map"].values()))[:2]
    name = next(n for n, f in index["weight_map"].items() if f == first)
    state = load_file(model / second)
    state[name] = load_file(model / first)[name]
    save_file(state, model / second, metadata={"format": "pt"})
    with pytest.raises(ConfigError, match=rf"tensor '{name}' is stored twice"):
        open_checkpoint(model)


def test_index_placing_a_tensor_in_the_wrong_shard_is_refused(tmp_path):
    model, index = sharded_model(tmp_path)
    files = sorted(set(index["weight_map"].values()))
    name = next(n for n, f in index["weight_map"].items() if f == files[0])
    index["weight_map"][name] = files[1]
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match=rf"places tensor '{name}' in {files[1]}, but it is in {files[0]}"):
        open_checkpoint(model)


def test_index_that_is_not_json_names_the_file(tmp_path):
    model, _ = sharded_model(tmp_path)
    (model / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"model.safetensors.index.json is not valid JSON"):
        open_checkpoint(model)


def test_index_naming_a_missing_shard_names_it(tmp_path):
    model, index = sharded_model(tmp_path)
    missing = sorted(set(index["weight_map"].values()))[-1]
    (model / missing).unlink()
    with pytest.raises(ConfigError, match=rf"names the shard {missing}, which is missing"):
        open_checkpoint(model)


def test_index_without_a_weight_map_is_refused(tmp_path):
    model, _ = sharded_model(tmp_path)
    (model / "model.safetensors.index.json").write_text("[]")
    with pytest.raises(ConfigError, match="has no weight_map object"):
        open_checkpoint(model)


@pytest.mark.parametrize(
    "text,expected",
    [
        ('{"model_type": ', r"config.json is not valid JSON"),
        ("[1, 2]", r"config.json holds a JSON list; expected an object"),
    ],
)
def test_config_json_not_an_object_is_one_line_at_validation_and_at_open(model, text, expected):
    from app_config import compose_config

    from acm_exp.stages import validate

    (model / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=expected):
        open_checkpoint(model)
    cfg = compose_config(
        "merge=task_arithmetic", "eval=none", f"model_pair.base={model}", f"model_pair.finetuned=[{model}]"
    )
    with pytest.raises(ConfigError, match=expected):
        validate(cfg)


def test_reader_still_matches_safetensors_for_zero_sized_tensors(tmp_path):
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    state = {
        "a": torch.arange(6, dtype=torch.float32),
        "empty": torch.zeros(0, 4),
        "b": torch.ones(3, dtype=torch.bfloat16),
    }
    save_file(state, directory / "model.safetensors")
    with open_checkpoint(directory) as checkpoint:
        for name, tensor in state.items():
            assert torch.equal(checkpoint.get(name), tensor)
