"""The streaming engine: round trips, tied embeddings, validation, atomic and non-destructive output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from model_factory import load_state, make_model, make_pair
from safetensors.torch import load_file, save_file

from acm_exp.config import MergeConfig
from acm_exp.errors import ConfigError
from acm_exp.merge import Adjustment, MergeSettings, get_method, open_inputs, run_merge
from acm_exp.merge.engine import MANIFEST_NAME, merge_tensor


def merge_dirs(base, finetuned, output, method="ties", settings=None, tied_head="tie", **params):
    config = MergeConfig(method=method, **params)
    inputs = open_inputs(base, finetuned, tied_head=tied_head)
    try:
        settings = settings or MergeSettings(output_dir=output)
        return run_merge(inputs, get_method(method), config, settings)
    finally:
        inputs.close()


def expected_state(base_dir, finetuned_dirs, method, **params):
    config = MergeConfig(method=method, **params)
    base = load_state(base_dir)
    finetuned = [load_state(d) for d in finetuned_dirs]
    result = {}
    for name, tensor in base.items():
        others = [state[name] for state in finetuned]
        result[name] = merge_tensor(tensor, others, get_method(method), config, Adjustment(), torch.Generator())
    return result


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_sharded_round_trip_matches_tensorwise_merge_and_generates(tmp_path, architecture):
    base, finetuned = make_pair(tmp_path / "in", architecture=architecture, count=2, shard_size="30KB")
    assert (base / "model.safetensors.index.json").exists()
    settings = MergeSettings(output_dir=tmp_path / "out", shard_size="40KB")
    result = merge_dirs(base, finetuned, tmp_path / "out", method="ties", settings=settings, k=0.5, scale=1.0)
    index = json.loads((result.output_dir / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    merged = load_state(result.output_dir)
    expected = expected_state(base, finetuned, "ties", k=0.5, scale=1.0)
    assert merged.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(merged[name], expected[name], msg=name)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(result.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    output = model.generate(**tokenizer("ab", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert output.shape[1] > 2


def test_single_file_output_below_shard_size(tmp_path):
    base, finetuned = make_pair(tmp_path / "in")
    result = merge_dirs(base, finetuned, tmp_path / "out", method="task_arithmetic", scale=0.7)
    assert (result.output_dir / "model.safetensors").is_file()
    assert not (result.output_dir / "model.safetensors.index.json").exists()


def test_tied_base_with_untied_finetuned_writes_untied_model_when_asked(tmp_path):
    base, finetuned = make_pair(tmp_path / "in", base_tie=True, finetuned_tie=False)
    assert "lm_head.weight" not in load_state(base)
    result = merge_dirs(base, finetuned, tmp_path / "out", method="task_arithmetic", tied_head="untie", scale=0.5)
    merged = load_state(result.output_dir)
    base_state, finetuned_state = load_state(base), load_state(finetuned[0])
    expected_head = base_state["model.embed_tokens.weight"] + 0.5 * (
        finetuned_state["lm_head.weight"] - base_state["model.embed_tokens.weight"]
    )
    torch.testing.assert_close(merged["lm_head.weight"], expected_head)
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert result.manifest["output"]["tied_embeddings"] is False


def test_all_tied_models_stay_tied(tmp_path):
    base, finetuned = make_pair(tmp_path / "in", base_tie=True, finetuned_tie=True)
    result = merge_dirs(base, finetuned, tmp_path / "out", method="average")
    assert "lm_head.weight" not in load_state(result.output_dir)
    assert json.loads((result.output_dir / "config.json").read_text())["tie_word_embeddings"] is True


def test_output_dtype_defaults_to_base_and_can_be_set(tmp_path):
    base, finetuned = make_pair(tmp_path / "in", dtype=torch.bfloat16)
    result = merge_dirs(base, finetuned, tmp_path / "a", method="task_arithmetic")
    assert {t.dtype for t in load_state(result.output_dir).values()} == {torch.bfloat16}
    inputs = open_inputs(base, finetuned, dtype="float32")
    settings = MergeSettings(output_dir=tmp_path / "b", dtype="float32")
    result = run_merge(inputs, get_method("task_arithmetic"), MergeConfig(method="task_arithmetic"), settings)
    assert {t.dtype for t in load_state(result.output_dir).values()} == {torch.float32}
    assert json.loads((result.output_dir / "config.json").read_text())["torch_dtype"] == "float32"


def test_manifest_records_method_parameters_inputs_and_hashes(tmp_path):
    base, finetuned = make_pair(tmp_path / "in")
    result = merge_dirs(base, finetuned, tmp_path / "out", method="dare", p=0.2, scale=0.7, combine="ta")
    manifest = json.loads((result.output_dir / MANIFEST_NAME).read_text())
    assert manifest["method"] == "dare"
    assert manifest["parameters"] == {"scale": 0.7, "p": 0.2, "combine": "ta", "k": 0.8}
    assert [entry["role"] for entry in manifest["inputs"]] == ["base", "finetuned[0]"]
    hashes = {entry["content_hash"] for entry in manifest["inputs"]}
    assert len(hashes) == 2 and all(h.startswith("xxh3_128:") for h in hashes)
    assert manifest["acm_exp_version"]
    again = merge_dirs(base, finetuned, tmp_path / "out2", method="dare", p=0.2, scale=0.7, combine="ta")
    assert [e["content_hash"] for e in again.manifest["inputs"]] == [e["content_hash"] for e in manifest["inputs"]]
    torch.testing.assert_close(load_state(again.output_dir), load_state(result.output_dir))


# ---------------------------------------------------------------------------------------------
# Validation


def test_architecture_mismatch(tmp_path):
    base = make_model(tmp_path / "qwen", architecture="qwen2")
    other = make_model(tmp_path / "llama", architecture="llama")
    with pytest.raises(ConfigError, match="architecture mismatch: model_type='llama'"):
        open_inputs(base, [other])


def test_layer_count_mismatch(tmp_path):
    base = make_model(tmp_path / "a", layers=2)
    other = make_model(tmp_path / "b", layers=3)
    with pytest.raises(ConfigError, match="num_hidden_layers=3"):
        open_inputs(base, [other])


def test_shape_mismatch_names_tensor_and_both_shapes(tmp_path):
    base, finetuned = make_pair(tmp_path / "in")
    state = load_file(finetuned[0] / "model.safetensors")
    state["model.layers.1.mlp.up_proj.weight"] = torch.zeros(65, 32)
    save_file(state, finetuned[0] / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError, match=r"model.layers.1.mlp.up_proj.weight: \(64, 32\) .* vs \(65, 32\)"):
        open_inputs(base, finetuned)


def test_vocabulary_mismatch(tmp_path):
    base = make_model(tmp_path / "a", vocab_size=64)
    other = make_model(tmp_path / "b", vocab_size=72)
    with pytest.raises(
        ConfigError, match=r"vocabulary size differs: tensor model.embed_tokens.weight has shape \(64, 32\)"
    ):
        open_inputs(base, [other])


def test_missing_tensor(tmp_path):
    base, finetuned = make_pair(tmp_path / "in")
    state = load_file(finetuned[0] / "model.safetensors")
    del state["model.norm.weight"]
    save_file(state, finetuned[0] / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="missing.*model.norm.weight"):
        open_inputs(base, finetuned)


def test_pickled_checkpoint_refused_unless_allowed(tmp_path):
    base, finetuned = make_pair(tmp_path / "in")
    state = load_file(finetuned[0] / "model.safetensors")
    (finetuned[0] / "model.safetensors").unlink()
    torch.save(state, finetuned[0] / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="pickled .bin weights; refusing"):
        open_inputs(base, finetuned)
    inputs = open_inputs(base, finetuned, allow_pickle=True)
    result = run_merge(
        inputs,
        get_method("task_arithmetic"),
        MergeConfig(method="task_arithmetic", scale=1.0),
        MergeSettings(output_dir=tmp_path / "out"),
    )
    torch.testing.assert_close(load_state(result.output_dir)["model.norm.weight"], state["model.norm.weight"])


def test_nan_in_input_names_the_tensor(tmp_path):
    base, finetuned = make_pair(tmp_path / "in")
    state = load_file(finetuned[0] / "model.safetensors")
    state["model.layers.0.self_attn.q_proj.weight"][0, 0] = float("nan")
    save_file(state, finetuned[0] / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="model.layers.0.self_attn.q_proj.weight .* NaN or Inf"):
        merge_dirs(base, finetuned, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_missing_model_directory_and_config(tmp_path):
    from acm_exp.merge.checkpoint import open_checkpoint

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        open_checkpoint(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="has no safetensors weights"):
        open_checkpoint(tmp_path / "empty")


def test_cuda_device_without_cuda_is_refused(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    base, finetuned = make_pair(tmp_path / "in")
    with pytest.raises(ConfigError, match="merge.device='cuda' but CUDA is not available"):
        merge_dirs(
            base, finetuned, tmp_path / "out", settings=MergeSettings(output_dir=tmp_path / "out", device="cuda")
        )


# ---------------------------------------------------------------------------------------------
# Output safety


def test_existing_output_is_never_overwritten_without_permission(tmp_path):
    base, finetuned = make_pair(tmp_path / "in")
    output = tmp_path / "out"
    output.mkdir()
    (output / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="already exists; set merge.overwrite=true"):
        merge_dirs(base, finetuned, output)
    assert (output / "precious.txt").read_text() == "keep me"
    merge_dirs(base, finetuned, output, settings=MergeSettings(output_dir=output, overwrite=True))
    assert (output / MANIFEST_NAME).is_file() and not (output / "precious.txt").exists()


def test_failure_midway_leaves_no_output_and_no_temporary(tmp_path, monkeypatch):
    from acm_exp.merge import checkpoint

    base, finetuned = make_pair(tmp_path / "in")
    original = checkpoint.StreamingSafetensorsWriter.write
    calls = {"n": 0}

    def failing_write(self, name, tensor):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return original(self, name, tensor)

    monkeypatch.setattr(checkpoint.StreamingSafetensorsWriter, "write", failing_write)
    with pytest.raises(RuntimeError, match="simulated crash"):
        merge_dirs(base, finetuned, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


KILLABLE_MERGE = """
import sys, time
from acm_exp.merge import checkpoint
original = checkpoint.StreamingSafetensorsWriter.write
def slow_write(self, name, tensor):
    original(self, name, tensor)
    print("wrote", name, flush=True)
    time.sleep(0.2)
checkpoint.StreamingSafetensorsWriter.write = slow_write
from acm_exp.config import MergeConfig
from acm_exp.merge import MergeSettings, get_method, open_inputs, run_merge
inputs = open_inputs(sys.argv[1], [sys.argv[2]])
run_merge(inputs, get_method("ties"), MergeConfig(method="ties"), MergeSettings(output_dir=sys.argv[3]))
"""


def test_killed_merge_leaves_nothing_that_looks_complete_and_rerun_cleans_up(tmp_path):
    base, finetuned = make_pair(tmp_path / "in")
    output = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_MERGE, str(base), str(finetuned[0]), str(output)],
        stdout=subprocess.PIPE,
        text=True,
    )
    for _ in range(3):
        assert process.stdout.readline().startswith("wrote")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not output.exists()
    leftovers = list(tmp_path.glob(".out.tmp-*"))
    assert len(leftovers) == 1 and not (leftovers[0] / MANIFEST_NAME).exists()
    merge_dirs(base, finetuned, output)
    assert (output / MANIFEST_NAME).is_file()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_tensor_reader_matches_safetensors_loader(tmp_path):
    from acm_exp.merge.checkpoint import open_checkpoint

    directory = make_model(tmp_path / "m", dtype=torch.bfloat16, shard_size="20KB", tie=True)
    reference = load_state(directory)
    with open_checkpoint(directory) as checkpoint:
        assert set(checkpoint.tensors) == set(reference)
        for name, tensor in reference.items():
            assert torch.equal(checkpoint.get(name), tensor), name
        assert torch.equal(checkpoint.get("lm_head.weight"), reference["model.embed_tokens.weight"])
