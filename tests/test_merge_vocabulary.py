"""Fine-tuned models whose vocabulary extends the base's (CodeLlama-7b: Llama-2's 32,000 rows plus 16
infilling tokens): ``model_pair.vocabulary=base`` drops the extra rows with a warning, ``union`` keeps
them as mergekit's union does. Tiny Llama models built here, with the base's tokenizer plus tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from app_config import compose_config
from model_factory import CHARACTERS, SPECIAL_TOKENS, load_state, make_model
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from acm_exp.config import MergeConfig
from acm_exp.errors import ConfigError
from acm_exp.merge import MergeSettings, get_method, open_inputs, run_merge
from acm_exp.merge.checkpoint import Checkpoint
from acm_exp.merge.engine import MANIFEST_NAME, request_fingerprint
from acm_exp.run_identity import hashable_config
from acm_exp.stages import merge_stage

EMBEDDING, HEAD = "model.embed_tokens.weight", "lm_head.weight"
# Rows of the base: every id of the test tokenizer names a token.
ROWS = len(SPECIAL_TOKENS) + len(CHARACTERS)
INFILLING = ["<PRE>", "<SUF>", "<MID>", "<EOT>"]


@pytest.fixture
def weights_read(monkeypatch) -> list[str]:
    """Names of the tensors read from any checkpoint from now on."""
    reads: list[str] = []
    get = Checkpoint.get
    monkeypatch.setattr(Checkpoint, "get", lambda self, name, rows=None: reads.append(name) or get(self, name, rows))
    return reads


def extended_model(base: Path, directory: Path, extra: list[str], *, seed: int, regular: bool = False) -> Path:
    """A 'fine-tune' of ``base`` (its weights plus noise) with ``len(extra)`` more rows, whose tokenizer
    names them ``extra``: added tokens, or (``regular``) tokens of the model's own vocabulary."""
    directory.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    state = {
        name: tensor + 0.02 * torch.randn(tensor.shape, generator=generator)
        for name, tensor in load_state(base).items()
    }
    for name in (EMBEDDING, HEAD):
        rows = torch.randn((len(extra), state[name].shape[1]), generator=generator)
        state[name] = torch.cat([state[name], rows]).contiguous()
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((base / "config.json").read_text())
    config["vocab_size"] = ROWS + len(extra)
    config["max_position_embeddings"] *= 2  # CodeLlama's context is longer than Llama-2's
    (directory / "config.json").write_text(json.dumps(config))
    shutil.copyfile(base / "generation_config.json", directory / "generation_config.json")
    tokens = SPECIAL_TOKENS + CHARACTERS + (extra if regular else [])
    backend = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token=SPECIAL_TOKENS[0]))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=SPECIAL_TOKENS[0],
        pad_token=SPECIAL_TOKENS[0],
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    if not regular:
        tokenizer.add_tokens(extra)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def base(tmp_path) -> Path:
    return make_model(tmp_path / "base", architecture="llama", vocab_size=ROWS)


def merge(base, finetuned, output, *, method="task_arithmetic", vocabulary="base", tokenizer_from="base", **params):
    inputs = open_inputs(base, finetuned, vocabulary=vocabulary)
    try:
        settings = MergeSettings(output_dir=output, tokenizer_from=tokenizer_from)
        return run_merge(inputs, get_method(method), MergeConfig(method=method, **params), settings)
    finally:
        inputs.close()


@pytest.mark.parametrize("regular", [False, True], ids=["added-tokens", "regular-tokens"])
def test_default_merges_the_base_rows_and_names_the_dropped_tokens(tmp_path, base, caplog, regular):
    finetuned = extended_model(base, tmp_path / "code", INFILLING, seed=1, regular=regular)
    plain = make_model(tmp_path / "plain", architecture="llama", vocab_size=ROWS, from_model=base, seed=1)
    with caplog.at_level("WARNING"):
        result = merge(base, [finetuned], tmp_path / "out")
    warning = next(m for m in caplog.messages if "extends the base's" in m)
    assert f"ids {ROWS}..{ROWS + 3}: '<PRE>', '<SUF>', '<MID>', '<EOT>'" in warning and "drops" in warning
    merged = load_state(result.output_dir)
    assert merged[EMBEDDING].shape[0] == ROWS and merged[HEAD].shape[0] == ROWS
    # The base's rows merge as if the extra rows were not there.
    stored = load_state(finetuned)
    state = {name: tensor[:ROWS] if name in (EMBEDDING, HEAD) else tensor for name, tensor in stored.items()}
    save_file(state, plain / "model.safetensors", metadata={"format": "pt"})
    truncated = merge(base, [plain], tmp_path / "reference")
    reference = load_state(truncated.output_dir)
    for name, tensor in reference.items():
        assert torch.equal(merged[name], tensor), name
    assert (result.output_dir / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()
    assert json.loads((result.output_dir / "config.json").read_text())["vocab_size"] == ROWS
    entry = result.manifest["vocabulary"]
    assert entry["mode"] == "base" and entry["rows"] == ROWS and entry["base_rows"] == ROWS
    assert entry["extensions"]["finetuned[0]"]["kept"] is False
    assert entry["extensions"]["finetuned[0]"]["tokens"] == [[ROWS + i, t] for i, t in enumerate(INFILLING)]
    # The dropped rows are still part of the fine-tuned model's content hash.
    union = merge(base, [finetuned], tmp_path / "union", vocabulary="union")
    assert result.manifest["inputs"][1]["content_hash"] == union.manifest["inputs"][1]["content_hash"]
    assert result.manifest["inputs"][1]["content_hash"] != truncated.manifest["inputs"][1]["content_hash"]


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_union_keeps_every_token_with_rows_from_the_models_that_have_them(tmp_path, base, method):
    finetuned = extended_model(base, tmp_path / "code", INFILLING, seed=1)
    params = {"scale": 0.7} if method == "task_arithmetic" else {"k": 0.5, "scale": 1.0}
    dropped = load_state(merge(base, [finetuned], tmp_path / "base-rows", method=method, **params).output_dir)
    result = merge(base, [finetuned], tmp_path / "out", method=method, vocabulary="union", **params)
    merged, stored = load_state(result.output_dir), load_state(finetuned)
    for name in (EMBEDDING, HEAD):
        assert merged[name].shape[0] == ROWS + len(INFILLING)
        # Only the fine-tuned model has the extra rows: they are its own, unchanged.
        assert torch.equal(merged[name][ROWS:], stored[name][ROWS:]), name
        if method == "task_arithmetic":  # elementwise: the base's rows merge as without the extension
            assert torch.equal(merged[name][:ROWS], dropped[name]), name
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["vocab_size"] == ROWS + len(INFILLING)
    # config.json is the base's (tokenizer_from=base), with the rows written.
    assert (
        config["max_position_embeddings"] == json.loads((base / "config.json").read_text())["max_position_embeddings"]
    )
    assert (result.output_dir / "tokenizer.json").read_text() == (finetuned / "tokenizer.json").read_text()
    entry = result.manifest["vocabulary"]
    assert entry["mode"] == "union" and entry["rows"] == ROWS + 4 and entry["tokenizer_from"] == str(finetuned)
    assert entry["extensions"]["finetuned[0]"]["kept"] is True

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(result.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    ids = tokenizer("a<MID>", return_tensors="pt").input_ids
    assert ids[0, -1].item() == ROWS + 2
    assert model(ids).logits.shape[-1] == ROWS + len(INFILLING)


def test_union_of_two_extensions_averages_the_shared_rows(tmp_path, base):
    longer = extended_model(base, tmp_path / "a", INFILLING, seed=1)
    shorter = extended_model(base, tmp_path / "b", INFILLING[:2], seed=2)
    result = merge(base, [longer, shorter], tmp_path / "out", vocabulary="union", scale=0.5)
    merged, a, b = load_state(result.output_dir), load_state(longer), load_state(shorter)
    for name in (EMBEDDING, HEAD):
        # Rows both have: θ0 is their mean, so the merge stays at it; rows only one has: its own.
        torch.testing.assert_close(merged[name][ROWS : ROWS + 2], (a[name][ROWS : ROWS + 2] + b[name][ROWS:]) / 2)
        assert torch.equal(merged[name][ROWS + 2 :], a[name][ROWS + 2 :])
    assert result.manifest["vocabulary"]["tokenizer_from"] == str(longer)


def test_union_refuses_extensions_that_name_different_tokens_at_one_id(tmp_path, base, weights_read):
    first = extended_model(base, tmp_path / "a", INFILLING, seed=1)
    second = extended_model(base, tmp_path / "b", ["<FIM>"], seed=2)
    with pytest.raises(ConfigError, match=rf"extensions .* differ at id {ROWS}: '<PRE>' in .* but '<FIM>' in"):
        open_inputs(base, [first, second], vocabulary="union")
    assert weights_read == []
    open_inputs(base, [first, second]).close()  # the default drops both: nothing to reconcile


def test_a_tokenizer_naming_tokens_past_the_written_rows_is_refused_before_any_weight_is_read(
    tmp_path, base, weights_read
):
    finetuned = extended_model(base, tmp_path / "code", INFILLING, seed=1)
    with pytest.raises(ConfigError, match=r"tokenizer_from=finetuned: the tokenizer of .* has tokens up to id"):
        merge(base, [finetuned], tmp_path / "out", tokenizer_from="finetuned")
    assert weights_read == [] and not (tmp_path / "out").exists()
    result = merge(base, [finetuned], tmp_path / "union", tokenizer_from="finetuned", vocabulary="union")
    assert load_state(result.output_dir)[EMBEDDING].shape[0] == ROWS + len(INFILLING)


def test_a_regular_token_that_differs_on_the_base_rows_still_fails(tmp_path, base, weights_read):
    finetuned = extended_model(base, tmp_path / "code", INFILLING, seed=1)
    tokenizer = json.loads((finetuned / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (finetuned / "tokenizer.json").write_text(json.dumps(tokenizer))
    for mode in ("base", "union"):
        with pytest.raises(ConfigError, match=r"vocabularies differ: 2 regular token id\(s\)"):
            open_inputs(base, [finetuned], vocabulary=mode)
    assert weights_read == []


def test_an_unknown_vocabulary_mode_is_refused(tmp_path, base):
    with pytest.raises(ConfigError, match=r"model_pair.vocabulary='all'; expected one of \('base', 'union'\)"):
        open_inputs(base, [base], vocabulary="all")


def test_the_setting_is_typed_and_leaves_existing_hashes_and_fingerprints_alone(tmp_path, base):
    finetuned = extended_model(base, tmp_path / "code", INFILLING, seed=1)
    pair = [f"model_pair.base={base}", f"model_pair.finetuned=[{finetuned}]", "merge=task_arithmetic", "eval=none"]
    default = compose_config(*pair)
    assert "vocabulary" not in hashable_config(default)["model_pair"]
    union = compose_config(*pair, "model_pair.vocabulary=union")
    assert hashable_config(union)["model_pair"]["vocabulary"] == "union"
    with pytest.raises(Exception, match="vocabulary"):
        compose_config(*pair, "model_pair.vocabulary=all")
    method = get_method("task_arithmetic")
    dropped = json.loads((merge_stage(default, method, [base, finetuned], tmp_path / "a") / MANIFEST_NAME).read_text())
    kept_dir = merge_stage(union, method, [base, finetuned], tmp_path / "b")
    assert load_state(kept_dir)[EMBEDDING].shape[0] == ROWS + len(INFILLING)
    # The default's fingerprint is what it was before the setting existed (no vocabulary in its extras).
    extra = {"dtype": None, "seed": 0, "coefficients": {}, "tokenizer_from": "base", "tied_head": "tie"}
    assert dropped["request_fingerprint"] == request_fingerprint(
        method, default.merge, str(base), [str(finetuned)], extra
    )
    assert json.loads((kept_dir / MANIFEST_NAME).read_text())["request_fingerprint"] != dropped["request_fingerprint"]


def test_byte_identical_tokenizers_are_not_parsed_and_different_ones_are(tmp_path, base, monkeypatch):
    from acm_exp.merge import vocabulary

    parsed: list[Path] = []
    original = vocabulary.load_vocabulary
    monkeypatch.setattr(
        vocabulary, "load_vocabulary", lambda directory: parsed.append(directory) or original(directory)
    )
    plain = make_model(tmp_path / "plain", architecture="llama", vocab_size=ROWS, from_model=base, seed=1)
    open_inputs(base, [plain]).close()
    assert parsed == []
    (plain / "tokenizer_config.json").write_text((plain / "tokenizer_config.json").read_text().replace("}", " }", 1))
    open_inputs(base, [plain]).close()
    assert parsed == [base, plain]


def test_the_python_api_takes_the_setting(tmp_path, base, monkeypatch):
    import acm_exp

    monkeypatch.setenv("ACM_EXP_CACHE", str(tmp_path / "cache"))
    finetuned = extended_model(base, tmp_path / "code", INFILLING, seed=1)
    merged = acm_exp.merge_models(
        str(base), [str(finetuned)], method="task_arithmetic", out=tmp_path / "out", vocabulary="union"
    )
    assert load_state(merged.output_dir)[EMBEDDING].shape[0] == ROWS + len(INFILLING)
    with pytest.raises(ConfigError, match="vocabulary"):
        acm_exp.merge_models(
            str(base), [str(finetuned)], method="task_arithmetic", out=tmp_path / "x", vocabulary="all"
        )
