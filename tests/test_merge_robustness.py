"""Merges that must not go wrong silently or late: vocabularies, the output's place, a full disk,
concurrent identical merges, overwrite, negative scales, reuse, and missing tokenizer files."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from app_config import compose_config
from model_factory import CHARACTERS, load_state, make_pair
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from acm_exp.config import MergeConfig
from acm_exp.errors import ConfigError, RuntimeFailure
from acm_exp.merge import MergeSettings, engine, get_method, open_inputs, publish, run_merge
from acm_exp.merge import checkpoint as checkpoint_module
from acm_exp.merge.engine import MANIFEST_NAME, TOKENIZER_FILES
from acm_exp.pipeline import run
from acm_exp.stages import merge_stage, validate

TESTS = Path(__file__).resolve().parent
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# What DeepSeek-R1-Distill-Qwen puts at Qwen's special-token ids.
R1_SPECIALS = ["<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"]


@pytest.fixture
def pair(tmp_path):
    base, finetuned = make_pair(tmp_path / "in")
    return base, finetuned[0]


@pytest.fixture
def weights_read(monkeypatch) -> list[str]:
    """Names of the tensors read from any checkpoint from now on."""
    reads: list[str] = []
    original = checkpoint_module.Checkpoint.get

    def get(self, name, rows=None):
        reads.append(name)
        return original(self, name, rows)

    monkeypatch.setattr(checkpoint_module.Checkpoint, "get", get)
    return reads


def merge(base: Path, finetuned: Path, output: Path, **settings):
    inputs = open_inputs(base, [finetuned])
    try:
        return run_merge(
            inputs,
            get_method("task_arithmetic"),
            MergeConfig(method="task_arithmetic"),
            MergeSettings(output_dir=output, **settings),
        )
    finally:
        inputs.close()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# Vocabularies


def save_word_tokenizer(directory: Path, specials: list[str], *, vocab: dict[str, int] | None = None) -> None:
    """A regular vocabulary of characters with ``specials`` added after it, as Qwen-family tokenizers are laid out."""
    vocab = vocab or {token: index for index, token in enumerate(CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=CHARACTERS[0]))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.add_special_tokens(specials)
    for name in TOKENIZER_FILES:
        (directory / name).unlink(missing_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=specials[0], pad_token=specials[0]).save_pretrained(
        directory
    )


def test_renamed_special_tokens_merge_with_a_warning_and_are_recorded(tmp_path, pair, caplog):
    base, finetuned = pair
    save_word_tokenizer(base, QWEN_SPECIALS)
    save_word_tokenizer(finetuned, R1_SPECIALS)
    with caplog.at_level("WARNING"):
        result = merge(base, finetuned, tmp_path / "out")
    warning = next(m for m in caplog.messages if "added/special token(s) differ" in m)
    assert "3 added/special" in warning and "'<|endoftext|>' vs '<｜end▁of▁sentence｜>'" in warning
    recorded = json.loads((result.output_dir / MANIFEST_NAME).read_text())["vocabulary_check"]
    first = len(CHARACTERS)
    assert recorded["added_token_differences"]["finetuned[0]"] == [
        {"id": first + i, "base": qwen, "finetuned": r1}
        for i, (qwen, r1) in enumerate(zip(QWEN_SPECIALS, R1_SPECIALS, strict=False))
    ]


def test_identical_tokenizers_merge_without_a_vocabulary_warning(tmp_path, pair, caplog):
    base, finetuned = pair
    with caplog.at_level("WARNING"):
        result = merge(base, finetuned, tmp_path / "out")
    assert not [m for m in caplog.messages if "token" in m]
    assert result.manifest["vocabulary_check"] == {"added_token_differences": {}, "not_compared": []}


def test_same_size_vocabularies_mapping_tokens_to_other_ids_are_refused(tmp_path, pair, weights_read):
    base, finetuned = pair
    save_word_tokenizer(base, QWEN_SPECIALS)
    swapped = {token: index for index, token in enumerate(CHARACTERS)}
    swapped["a"], swapped["b"] = swapped["b"], swapped["a"]
    save_word_tokenizer(finetuned, QWEN_SPECIALS, vocab=swapped)
    with pytest.raises(
        ConfigError,
        match=r"vocabularies differ: 2 regular token id\(s\) .* id 0: 'a' vs 'b'; "
        r"id 1: 'b' vs 'a'",
    ):
        merge(base, finetuned, tmp_path / "out")
    assert weights_read == [] and not (tmp_path / "out").exists()


def write_slow_tokenizer(directory: Path, vocab: dict[str, int], added: dict[str, int]) -> None:
    for name in TOKENIZER_FILES:
        (directory / name).unlink(missing_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    (directory / "added_tokens.json").write_text(json.dumps(added))


def test_slow_tokenizer_files_are_compared_the_same_way(tmp_path, pair):
    base, finetuned = pair
    vocab = {token: index for index, token in enumerate(CHARACTERS)}
    write_slow_tokenizer(base, vocab, {"<|endoftext|>": len(vocab)})
    write_slow_tokenizer(finetuned, vocab, {"<｜end▁of▁sentence｜>": len(vocab)})
    inputs = open_inputs(base, [finetuned])
    inputs.close()
    assert inputs.vocabulary_check["added_token_differences"]["finetuned[0]"][0]["finetuned"] == "<｜end▁of▁sentence｜>"
    write_slow_tokenizer(finetuned, {**vocab, "a": vocab["z"], "z": vocab["a"]}, {"<|endoftext|>": len(vocab)})
    with pytest.raises(ConfigError, match=r"id 0: 'a' vs 'z'"):
        open_inputs(base, [finetuned])


def test_an_unreadable_tokenizer_is_reported_as_not_compared(tmp_path, pair, caplog):
    base, finetuned = pair
    (finetuned / "tokenizer.json").write_text("{broken")
    with caplog.at_level("WARNING"):
        inputs = open_inputs(base, [finetuned])
    inputs.close()
    assert inputs.vocabulary_check["not_compared"] == [str(finetuned)]
    assert any(f"cannot read the tokenizer in {finetuned}" in m for m in caplog.messages)
    assert any(f"the vocabulary of {finetuned} is not compared" in m for m in caplog.messages)


# ---------------------------------------------------------------------------------------------
# The output's place and the disk


def test_unparsable_shard_size_is_refused_at_validation_and_by_the_engine(tmp_path, pair, weights_read):
    base, finetuned = pair
    cfg = compose_config(
        "merge=task_arithmetic",
        "eval=none",
        "merge.shard_size=abc",
        f"model_pair.base={base}",
        f"model_pair.finetuned=[{finetuned}]",
    )
    with pytest.raises(ConfigError, match=r"merge.shard_size='abc'; expected a positive size"):
        validate(cfg)
    with pytest.raises(ConfigError, match=r"merge.shard_size='0GB'"):
        merge(base, finetuned, tmp_path / "out", shard_size="0GB")
    assert weights_read == [] and leftovers(tmp_path) == []
    assert len(merge(base, finetuned, tmp_path / "bytes", shard_size="20000").manifest["output"]["files"]) > 1


def test_output_below_a_file_is_refused_before_any_weight_is_read(tmp_path, pair, weights_read):
    base, finetuned = pair
    (tmp_path / "file").write_text("x")
    output = tmp_path / "file" / "sub" / "out"
    with pytest.raises(ConfigError, match=rf"cannot be created: {tmp_path / 'file'} is a file, not a directory"):
        merge(base, finetuned, output)
    cfg = compose_config(
        "merge=task_arithmetic",
        "eval=none",
        f"merge.output_dir={output}",
        f"model_pair.base={base}",
        f"model_pair.finetuned=[{finetuned}]",
    )
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        validate(cfg)
    assert weights_read == []


def test_output_path_that_is_a_file_gets_its_own_message_and_overwrite_replaces_it(tmp_path, pair, weights_read):
    base, finetuned = pair
    output = tmp_path / "out"
    output.write_text("not a model")
    with pytest.raises(ConfigError, match=r"merge.output_dir .*out is a file, not a directory; remove it"):
        merge(base, finetuned, output)
    assert weights_read == [] and output.read_text() == "not a model"
    merge(base, finetuned, output, overwrite=True)
    assert (output / MANIFEST_NAME).is_file()
    assert leftovers(tmp_path) == []  # no hidden .old-* copy of the replaced file


def test_overwrite_deletes_the_replaced_output(tmp_path, pair):
    base, finetuned = pair
    output = tmp_path / "out"
    merge(base, finetuned, output)
    (output / "stale.txt").write_text("old")
    merge(base, finetuned, output, overwrite=True)
    assert not (output / "stale.txt").exists()
    assert not [name for name in leftovers(tmp_path) if ".old-" in name]


def test_overwrite_says_where_a_replaced_output_that_cannot_be_deleted_is_kept(tmp_path, pair, monkeypatch, caplog):
    base, finetuned = pair
    output = tmp_path / "out"
    merge(base, finetuned, output)

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(publish, "_remove", refuse)
    with caplog.at_level("WARNING"):
        merge(base, finetuned, output, overwrite=True)
    kept = [p for p in tmp_path.iterdir() if ".old-" in p.name]
    assert len(kept) == 1
    assert any(f"it is kept in {kept[0]}" in message for message in caplog.messages)


def test_read_only_output_location_is_found_by_a_probe_before_any_weight_is_read(
    tmp_path, pair, monkeypatch, weights_read
):
    base, finetuned = pair

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(ConfigError, match=r"out is not writable: cannot create a file in .* \(Read-only file system\)"):
        merge(base, finetuned, tmp_path / "out")
    assert weights_read == [] and not (tmp_path / "out").exists()


def test_probe_leaves_nothing_behind(tmp_path):
    engine.check_output_location(tmp_path / "a" / "b" / "out", overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_not_enough_free_space_is_found_before_any_weight_is_read(tmp_path, pair, monkeypatch, weights_read):
    base, finetuned = pair
    monkeypatch.setattr(engine.shutil, "disk_usage", lambda path: engine.shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(
        ConfigError, match=r"not enough free space .* its shards need 0.\d\d MB but .* has 0.00 MB free"
    ):
        merge(base, finetuned, tmp_path / "out")
    assert weights_read == []


def test_disk_full_while_writing_says_how_much_was_needed_and_leaves_nothing(tmp_path, pair, monkeypatch):
    base, finetuned = pair
    original = checkpoint_module.StreamingSafetensorsWriter._write_bytes
    writes = {"count": 0}

    def fill_up(self, tensor):
        writes["count"] += 1
        if writes["count"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, tensor)

    monkeypatch.setattr(checkpoint_module.StreamingSafetensorsWriter, "_write_bytes", fill_up)
    with pytest.raises(
        RuntimeFailure,
        match=r"no space left on the device while writing the merge into .*out .* its "
        r"shards need 0.\d\d MB; the partial output was removed",
    ):
        merge(base, finetuned, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [name for name in leftovers(tmp_path) if ".tmp-" in name]


# ---------------------------------------------------------------------------------------------
# The pipeline's merge stage: negative scales, reuse, concurrency, tokenizer files


def pair_config(base: Path, finetuned: Path, *overrides: str):
    return compose_config(
        "merge=task_arithmetic",
        "eval=none",
        f"model_pair.base={base}",
        f"model_pair.finetuned=[{finetuned}]",
        *overrides,
    )


def test_negative_scale_is_allowed_with_a_warning(pair, caplog):
    base, finetuned = pair
    with caplog.at_level("WARNING"):
        validate(pair_config(base, finetuned, "merge.scale=-0.5"))
    assert any("merge.scale=-0.5 is negative" in message for message in caplog.messages)
    caplog.clear()
    with caplog.at_level("WARNING"):
        validate(pair_config(base, finetuned, "merge.scale=0.5"))
    assert not any("negative" in message for message in caplog.messages)


def test_reusing_an_identical_merge_still_validates_settings_and_inputs(tmp_path, pair, caplog):
    base, finetuned = pair
    output = tmp_path / "out"
    cfg = pair_config(base, finetuned)
    method = validate(cfg)
    merge_stage(cfg, method, [base, finetuned], output)
    with caplog.at_level("INFO"):
        merge_stage(cfg, method, [base, finetuned], output)
    assert any("reusing the complete merge" in message for message in caplog.messages)

    bad = pair_config(base, finetuned, "merge.shard_size=abc")
    with pytest.raises(ConfigError, match=r"merge.shard_size='abc'"):
        merge_stage(bad, method, [base, finetuned], output)
    (finetuned / "config.json").write_text("[]")
    with pytest.raises(ConfigError, match="holds a JSON list"):
        merge_stage(cfg, method, [base, finetuned], output)


CONCURRENT_MERGE = """
import logging, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from app_config import compose_config
from acm_exp.merge import checkpoint
from acm_exp.stages import merge_stage, validate
base, finetuned, output = map(Path, sys.argv[2:5])
gate = Path(sys.argv[5]) if len(sys.argv) > 5 else None
if gate is not None:
    original = checkpoint.StreamingSafetensorsWriter.write
    def gated_write(self, name, tensor):
        original(self, name, tensor)
        print("wrote", name, flush=True)
        while not gate.exists():  # hold the merge open until the test has seen the other run wait
            time.sleep(0.05)
    checkpoint.StreamingSafetensorsWriter.write = gated_write
cfg = compose_config(
    "merge=task_arithmetic", "eval=none", f"model_pair.base={base}", f"model_pair.finetuned=[{finetuned}]"
)
merge_stage(cfg, validate(cfg), [base, finetuned], output)
print("done", flush=True)
"""


def test_a_second_identical_merge_waits_for_the_first_and_reuses_its_output(tmp_path, pair):
    base, finetuned = pair
    output, gate = tmp_path / "out", tmp_path / "go"
    command = [sys.executable, "-c", CONCURRENT_MERGE, str(TESTS), str(base), str(finetuned), str(output)]
    with open(tmp_path / "first.log", "w") as first_log:
        first = subprocess.Popen([*command, str(gate)], stdout=subprocess.PIPE, stderr=first_log, text=True)
        assert first.stdout.readline().startswith("wrote")
        second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        second_log = []
        for line in second.stderr:
            second_log.append(line)
            if "another merge is writing" in line:
                break
        assert "another merge is writing" in "".join(second_log), "".join(second_log)
        gate.touch()
        first_out, _ = first.communicate()
        second_out, second_err = second.communicate()
    second_log.append(second_err)
    assert first.returncode == 0 and second.returncode == 0, "".join(second_log)
    assert "done" in first_out and "done" in second_out
    log = "".join(second_log)
    assert "reusing the complete merge" in log and "merging" not in log.replace("reusing the complete merge", "")
    assert (output / MANIFEST_NAME).is_file()


def strip_tokenizer(directory: Path) -> None:
    for name in TOKENIZER_FILES:
        (directory / name).unlink(missing_ok=True)


def test_merge_only_without_tokenizer_files_warns_at_validation_and_records_it(tmp_path, pair, caplog):
    base, finetuned = pair
    strip_tokenizer(base)
    cfg = pair_config(
        base,
        finetuned,
        "model_pair.tokenizer_from=base",
        f"merge.output_dir={tmp_path / 'out'}",
        "logger.wandb.mode=disabled",
        f"logger.results_dir={tmp_path / 'results'}",
    )
    with caplog.at_level("INFO"):
        merged = run(cfg, run_dir=tmp_path / "run")
    messages = caplog.messages
    warning = next(i for i, m in enumerate(messages) if f"no tokenizer files in {base}" in m)
    started = next(i for i, m in enumerate(messages) if m.startswith("merging "))
    assert warning < started and "written without a tokenizer" in messages[warning]
    assert sum(f"no tokenizer files in {base}" in m for m in messages) == 1
    manifest = json.loads((merged / MANIFEST_NAME).read_text())
    assert "no tokenizer files" in manifest["tokenizer_files"]["missing"]
    assert not (merged / "tokenizer.json").exists()
    assert set(load_state(merged)) == set(load_state(base))


def test_evaluating_a_merge_without_tokenizer_files_fails_before_any_weight_is_read(tmp_path, pair, weights_read):
    base, finetuned = pair
    strip_tokenizer(base)
    cfg = compose_config(
        "merge=task_arithmetic",
        "eval=toy",
        "eval.models=[merged]",
        f"model_pair.base={base}",
        f"model_pair.finetuned=[{finetuned}]",
        "model_pair.tokenizer_from=base",
        f"merge.output_dir={tmp_path / 'out'}",
        "logger.wandb.mode=disabled",
        f"logger.results_dir={tmp_path / 'results'}",
    )
    with pytest.raises(
        ConfigError,
        match=rf"no tokenizer files in {base} \(model_pair.tokenizer_from=base\); "
        "evaluating the merged model needs its tokenizer",
    ):
        run(cfg, run_dir=tmp_path / "run")
    assert weights_read == [] and not (tmp_path / "out").exists()
