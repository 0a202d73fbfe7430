"""Merge benchmark: our CLI against mergekit's CLI and a read+write floor, start-up included.

Builds (once, cached) a synthetic Qwen2 checkpoint pair of a real model's shapes (random bf16 weights,
untied lm_head, sharded safetensors written tensor by tensor, never a transformers model): ``--shape
0.5b`` (Qwen2.5-0.5B: hidden 896, 24 layers, 0.63B parameters) or ``--shape 1.5b`` (Qwen2.5-1.5B:
hidden 1536, 28 layers, intermediate 8960, vocabulary 151,936; 1.78B parameters, 3.5 GB per model).
The "fine-tuned" model is the base plus small noise. Then, each in a fresh process and alternating the
order, it times:

- ``ours``: ``python -m acm_exp model_pair=custom ... merge=<method> eval=none logger=disabled``, the
  command a user runs (interpreter start, Hydra, validation, the merge, the manifest);
- ``mergekit``: ``mergekit-yaml config.yml OUT`` with mergekit's defaults, on CPU, in the checkpoint's
  dtype (bf16; ``--mergekit-dtype float32`` for our working precision);
- ``before`` (with ``--before-commit REV`` or ``--before-src DIR``): our CLI from an earlier commit,
  the "before" of a change, measured in the same run;
- ``floor``: a fresh process that imports torch (as any torch-based merger must) and reads every byte
  of both models from the page cache, writes as many as a merge writes and syncs them to disk.

Every input shard is read once, untimed, before the first timed run, so no run reads from disk. The
merges and the floor all write to the same file system. Reported per run: wall time, CPU time and
peak RSS of the process (``wait4`` in a small launcher process, so the benchmark's own memory is not
counted), and the load average at its start; then the ratios against mergekit and the floor (medians
of ``--repeats``), the start-up (each CLI merging a 1 MB pair), whether ours' TIES output is
bit-identical to ``before``'s (or to ``--reference DIR``), and with ``--profile`` where the time of our
Task Arithmetic merge goes (start-up, reading, arithmetic, writing; see ``profile_ours``).

Targets (issue 27, at the 1.5B shape): Task Arithmetic <= 1.5x the floor and <= 0.35x mergekit's wall
time; TIES (k 0.8) <= 0.25x mergekit's, output bit-identical; peak RSS <= 0.5x mergekit's for both.

    .venv/bin/python tests/benchmarks/merge_bench.py --shape 1.5b --before-commit HEAD --profile
    .venv/bin/python tests/benchmarks/merge_bench.py --shape 1.5b --layers 2 --vocab-size 8192   # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
GIB = 1024**3
# Per-shard size of the synthetic checkpoints: small enough to stay sharded, large enough for lm_head.
SHARD_BYTES = 400 * 1024**2
WALL_TARGETS = {"task_arithmetic": 0.35, "ties": 0.25}
ENGINES = ("ours", "mergekit", "before")
FLOOR_TARGETS = {"task_arithmetic": 1.5}
RSS_TARGET = 0.5
# Bytes per read of the floor's plain copy: a reused buffer that stays in the CPU's cache.
FLOOR_BLOCK = 1024**2
# Runs a command and reports its wall and CPU time and peak RSS. Started from a small process, so that
# the child's ru_maxrss is its own (Linux carries the forking process's RSS high-water mark into the
# child's); and VmHWM is polled too, since our CLI resets it at every stage (acm_exp.costs), which
# resets ru_maxrss with it.
LAUNCHER = """
import json, os, sys, time
report, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawn(command[0], command, os.environ)
peak = 0
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    peak = max(peak, int(line.split()[1]) * 1024)
    except OSError:
        pass
    time.sleep(0.02)
wall = time.perf_counter() - started
with open(report, "w") as handle:
    json.dump({"status": os.waitstatus_to_exitcode(status), "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
               "maxrss": max(peak, usage.ru_maxrss * 1024)}, handle)
"""


@dataclass(frozen=True)
class Shape:
    """A Qwen2 model's dimensions; SHAPES names the real ones."""

    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """Tensor names and shapes in the order transformers writes them (embedding, layers, head)."""
        kv = self.kv_heads * self.head_dim
        specs: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (self.vocab, self.hidden))]
        for index in range(self.layers):
            prefix = f"model.layers.{index}"
            specs += [
                (f"{prefix}.input_layernorm.weight", (self.hidden,)),
                (f"{prefix}.self_attn.q_proj.weight", (self.hidden, self.hidden)),
                (f"{prefix}.self_attn.q_proj.bias", (self.hidden,)),
                (f"{prefix}.self_attn.k_proj.weight", (kv, self.hidden)),
                (f"{prefix}.self_attn.k_proj.bias", (kv,)),
                (f"{prefix}.self_attn.v_proj.weight", (kv, self.hidden)),
                (f"{prefix}.self_attn.v_proj.bias", (kv,)),
                (f"{prefix}.self_attn.o_proj.weight", (self.hidden, self.hidden)),
                (f"{prefix}.post_attention_layernorm.weight", (self.hidden,)),
                (f"{prefix}.mlp.gate_proj.weight", (self.intermediate, self.hidden)),
                (f"{prefix}.mlp.up_proj.weight", (self.intermediate, self.hidden)),
                (f"{prefix}.mlp.down_proj.weight", (self.hidden, self.intermediate)),
            ]
        specs += [("model.norm.weight", (self.hidden,)), ("lm_head.weight", (self.vocab, self.hidden))]
        return specs

    @property
    def parameters(self) -> int:
        return sum(math.prod(shape) for _, shape in self.tensors())

    @property
    def largest_numel(self) -> int:
        return max(math.prod(shape) for _, shape in self.tensors())

    @property
    def key(self) -> str:
        return f"qwen2-h{self.hidden}-l{self.layers}-i{self.intermediate}-v{self.vocab}-a{self.heads}-kv{self.kv_heads}"


SHAPES = {
    "0.5b": Shape(hidden=896, layers=24, intermediate=4864, vocab=151936, heads=14, kv_heads=2),
    "1.5b": Shape(hidden=1536, layers=28, intermediate=8960, vocab=151936, heads=12, kv_heads=2),
}


# ---------------------------------------------------------------------------------------------
# Synthetic checkpoints


def _initial_value(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return 1.0 + 0.05 * torch.randn(shape, generator=generator)
    return 0.02 * torch.randn(shape, generator=generator)


def _write_config(directory: Path, shape: Shape) -> None:
    from transformers import Qwen2Config

    config = Qwen2Config(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        dtype="bfloat16",
    )
    config.architectures = ["Qwen2ForCausalLM"]
    config.save_pretrained(directory)
    # Released checkpoints ship one; without it our engine would build it with transformers.
    generation = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def _write_sharded(directory: Path, shape: Shape, make_tensor) -> None:
    """Generate the tensors in order and save them shard by shard (one shard in memory at a time)."""
    pending: dict[str, torch.Tensor] = {}
    pending_bytes = 0
    saved: list[tuple[Path, list[str]]] = []
    for name, tensor_shape in shape.tensors():
        tensor = make_tensor(name, tensor_shape).to(torch.bfloat16).contiguous()
        if pending and pending_bytes + tensor.nbytes > SHARD_BYTES:
            saved.append((_save_pending(directory, len(saved), pending), list(pending)))
            pending, pending_bytes = {}, 0
        pending[name] = tensor
        pending_bytes += tensor.nbytes
    saved.append((_save_pending(directory, len(saved), pending), list(pending)))
    # Shard names need the final count, known only now.
    weight_map: dict[str, str] = {}
    for number, (path, names) in enumerate(saved, start=1):
        final = f"model-{number:05d}-of-{len(saved):05d}.safetensors"
        path.rename(directory / final)
        weight_map.update({name: final for name in names})
    total = sum(2 * math.prod(tensor_shape) for _, tensor_shape in shape.tensors())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _save_pending(directory: Path, number: int, tensors: dict[str, torch.Tensor]) -> Path:
    path = directory / f"shard-{number}.partial"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def _finish_model_dir(directory: Path, shape: Shape) -> None:
    sys.path.insert(0, str(TESTS_DIR))
    from model_factory import save_tokenizer

    _write_config(directory, shape)
    save_tokenizer(directory)


def _build_base(directory: Path, shape: Shape, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    _write_sharded(directory, shape, lambda name, s: _initial_value(name, s, generator))
    _finish_model_dir(directory, shape)


def _build_finetuned(directory: Path, base: Path, shape: Shape, seed: int, noise: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    weight_map = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
    handles: dict[str, object] = {}

    def perturbed(name: str, tensor_shape: tuple[int, ...]) -> torch.Tensor:
        file = weight_map[name]
        if file not in handles:
            handles.clear()  # the base is read in order: one shard open at a time
            handles[file] = safe_open(str(base / file), framework="pt")
        source = handles[file].get_tensor(name).float()
        return source + noise * torch.randn(tensor_shape, generator=generator)

    _write_sharded(directory, shape, perturbed)
    handles.clear()
    _finish_model_dir(directory, shape)


def ensure_checkpoints(cache_dir: Path, shape: Shape, noise: float = 2e-3) -> tuple[Path, Path]:
    """The cached base and fine-tuned checkpoints, built on first use (published by rename)."""
    root = cache_dir / shape.key
    base, finetuned = root / "base", root / "finetuned"
    for directory, build in (
        (base, lambda d: _build_base(d, shape, seed=0)),
        (finetuned, lambda d: _build_finetuned(d, base, shape, seed=1, noise=noise)),
    ):
        if (directory / "model.safetensors.index.json").is_file():
            continue
        root.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=root))
        started = time.time()
        build(temporary)
        shutil.rmtree(directory, ignore_errors=True)
        temporary.rename(directory)
        print(f"built {directory} in {time.time() - started:.1f} s", flush=True)
    return base, finetuned


def ensure_tiny_pair(cache_dir: Path) -> tuple[Path, Path]:
    """A 1 MB pair (the start-up measurement: a merge whose work is negligible)."""
    tiny = Shape(hidden=64, layers=2, intermediate=128, vocab=1024, heads=4, kv_heads=2)
    return ensure_checkpoints(cache_dir, tiny)


# ---------------------------------------------------------------------------------------------
# The commands timed


def ours_command(base: Path, finetuned: Path, output: Path, run_dir: Path, method: str, k: float, scale: float):
    parameters = [f"merge.scale={scale}"] + ([f"merge.k={k}"] if method == "ties" else [])
    return [
        sys.executable,
        "-m",
        "acm_exp",
        "model_pair=custom",
        f"model_pair.base={base}",
        f"model_pair.finetuned=[{finetuned}]",
        f"merge={method}",
        *parameters,
        f"merge.output_dir={output}",
        "eval=none",
        "logger=disabled",
        f"hydra.run.dir={run_dir}",
    ]


def mergekit_config(
    base: Path, finetuned: list[Path], method: str, k: float, scale: float, dtype: str | None = None
) -> dict:
    """Our method and parameters in mergekit's terms (density = 1 − k; TIES: normalize, λ = α)."""
    if method == "ties":
        models = [
            {"model": str(path), "parameters": {"weight": 1.0, "density": round(1.0 - k, 12)}} for path in finetuned
        ]
        parameters = {"normalize": True, "lambda": scale}
    elif method == "task_arithmetic":
        models = [{"model": str(path), "parameters": {"weight": scale}} for path in finetuned]
        parameters = {"normalize": False}
    else:
        raise ValueError(f"no mergekit mapping for {method!r}")
    config = {"merge_method": method, "base_model": str(base), "models": models, "parameters": parameters}
    if dtype:
        config["dtype"] = dtype
    return config


def mergekit_command(config_path: Path, output: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "mergekit-yaml"), str(config_path), str(output)]


def input_shards(base: Path, finetuned: Path) -> list[Path]:
    return [path for directory in (base, finetuned) for path in sorted(directory.glob("*.safetensors"))]


def warm_page_cache(paths: list[Path]) -> None:
    """Read every file once so that every timed run finds its inputs in the page cache."""
    view = memoryview(bytearray(FLOOR_BLOCK))
    for path in paths:
        with open(path, "rb", buffering=0) as source:
            while source.readinto(view):
                pass


def read_write_floor(base: Path, finetuned: Path, output: Path) -> None:
    """Read every byte of both checkpoints' shards, write the base's (as many as a merge writes), sync."""
    output.mkdir(parents=True)
    view = memoryview(bytearray(FLOOR_BLOCK))
    for directory in (base, finetuned):
        for path in sorted(directory.glob("*.safetensors")):
            with open(path, "rb", buffering=0) as source:
                sink = open(output / path.name, "wb", buffering=0) if directory == base else None
                try:
                    while count := source.readinto(view):
                        if sink is not None:
                            sink.write(view[:count])
                    if sink is not None:
                        os.fsync(sink.fileno())
                finally:
                    if sink is not None:
                        sink.close()


# ---------------------------------------------------------------------------------------------
# Runs


@dataclass
class Run:
    engine: str
    method: str
    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    load: float


def load_average() -> float:
    return os.getloadavg()[0]


def uptime_line() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def git_description() -> str:
    """The checkout's commit, and how many files differ from it (what was measured)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit}" + (f" + {len(changed)} changed file(s)" if changed else "")


def launch(command: list[str], log_path: Path, *, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run ``command`` through the launcher: its exit status, wall and CPU seconds and peak RSS."""
    report = log_path.with_suffix(".rusage.json")
    with open(log_path, "w") as log:
        subprocess.run(
            [sys.executable, "-S", "-c", LAUNCHER, str(report), *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            check=True,
        )
    measured = json.loads(report.read_text())
    if measured["status"] != 0:
        raise RuntimeError(f"{command[:4]} failed with exit code {measured['status']}; see {log_path}")
    return measured


@dataclass
class Bench:
    base: Path
    finetuned: Path
    work_dir: Path
    k: float
    scales: dict[str, float]
    mergekit_dtype: str | None
    before_src: Path | None
    keep_ties: bool

    def environment(self, engine: str) -> dict:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
        env["ACM_EXP_CACHE"] = str(self.work_dir / "cache")
        if engine == "before":
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.before_src), env.get("PYTHONPATH")]))
        return env

    def output(self, engine: str, method: str) -> Path:
        return self.work_dir / f"{engine}-{method}"

    def run(self, engine: str, method: str, base: Path | None = None, finetuned: Path | None = None) -> Run:
        """One timed run; with ``base`` and ``finetuned`` (the start-up pair) its outputs are labelled apart."""
        label = method if base is None else f"{method}-startup"
        base, finetuned = base or self.base, finetuned or self.finetuned
        output = self.output(engine, label)
        shutil.rmtree(output, ignore_errors=True)
        shutil.rmtree(self.work_dir / "run", ignore_errors=True)
        scale = self.scales.get(method, 1.0)
        if engine == "floor":
            command = [sys.executable, __file__, "--child-floor", str(base), str(finetuned), str(output)]
        elif engine == "mergekit":
            config_path = self.work_dir / f"mergekit-{method}.yml"
            config = mergekit_config(base, [finetuned], method, self.k, scale, self.mergekit_dtype)
            config_path.write_text(json.dumps(config))  # JSON is YAML
            command = mergekit_command(config_path, output)
        else:
            command = ours_command(base, finetuned, output, self.work_dir / "run", method, self.k, scale)
        load = load_average()
        cwd = self.before_src if engine == "before" else self.work_dir
        measured = launch(command, self.work_dir / f"{engine}-{label}.log", env=self.environment(engine), cwd=cwd)
        if not (self.keep_ties and label == "ties"):
            shutil.rmtree(output, ignore_errors=True)
        return Run(engine, label, measured["wall"], measured["cpu"], measured["maxrss"], load)


def bit_identical(first: Path, second: Path) -> tuple[bool, str]:
    """Whether two merged models hold the same tensors, byte for byte (and which differ first)."""
    from acm_exp.merge.checkpoint import open_checkpoint

    with open_checkpoint(first) as a, open_checkpoint(second) as b:
        if set(a.tensors) != set(b.tensors):
            return False, f"tensor names differ: {sorted(set(a.tensors) ^ set(b.tensors))[:3]}"
        for name in sorted(a.tensors):
            left, right = a.get(name), b.get(name)
            if left.dtype != right.dtype or left.shape != right.shape or not torch.equal(left.view(-1), right.view(-1)):
                return False, f"tensor {name} differs"
    return True, f"{len(a.tensors)} tensors equal"


# ---------------------------------------------------------------------------------------------
# The profile of our Task Arithmetic merge


PROFILE_LABELS = {
    "_read_block": "read thread: map + hash the next block",
    "get": "  of which mapping it",
    "update": "  of which content hash (xxh3; reads the pages in from the page cache)",
    "_merge_block": "main thread: arithmetic (bf16 -> float32 -> merge -> bf16, finiteness check)",
    "surely_fits": "  of which the output's finiteness check",
    "_write_block": "write thread: write",
}


def profile_ours(bench: Bench, method: str = "task_arithmetic") -> dict:
    """Where the time of one merge goes, measured in this process around the engine's three stages.

    The reader thread maps a block and hashes it (reading its pages in); the main thread merges
    it; the writer thread writes it. They overlap, so the busy times add up to more than the wall time:
    the "waiting" lines say which stage held the merge up.
    """
    import threading

    from acm_exp.config import MergeConfig
    from acm_exp.merge import MergeSettings, engine, get_method, open_inputs, run_merge
    from acm_exp.merge import checkpoint as checkpoint_module

    busy: dict[str, float] = {}
    cpu: dict[str, float] = {}
    lock = threading.Lock()

    def timed(label, function):
        def wrapper(*args, **kwargs):
            started, started_cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    busy[label] = busy.get(label, 0.0) + time.perf_counter() - started
                    cpu[label] = cpu.get(label, 0.0) + time.thread_time() - started_cpu

        return wrapper

    originals = {
        (engine, "_read_block"): engine._read_block,
        (engine, "_merge_block"): engine._merge_block,
        (engine, "_write_block"): engine._write_block,
        (engine, "surely_fits"): engine.surely_fits,
        (engine._ContentHasher, "update"): engine._ContentHasher.update,
        (checkpoint_module.Checkpoint, "get"): checkpoint_module.Checkpoint.get,
    }
    labels = PROFILE_LABELS
    for (owner, name), function in originals.items():
        if function is not None:
            setattr(owner, name, timed(labels[name], function))
    future_wait = {"wait": 0.0}
    result_original = engine.Future.result

    def result(self, timeout=None):
        started = time.perf_counter()
        try:
            return result_original(self, timeout)
        finally:
            if threading.current_thread() is threading.main_thread():
                future_wait["wait"] += time.perf_counter() - started

    engine.Future.result = result
    output = bench.output("profile", method)
    shutil.rmtree(output, ignore_errors=True)
    try:
        started, started_cpu = time.perf_counter(), time.process_time()
        inputs = open_inputs(bench.base, [bench.finetuned])
        opened = time.perf_counter()
        try:
            run_merge(
                inputs,
                get_method(method),
                MergeConfig(method=method, scale=bench.scales[method], k=bench.k),
                MergeSettings(output_dir=output),
            )
        finally:
            inputs.close()
        wall, process_cpu = time.perf_counter() - started, time.process_time() - started_cpu
    finally:
        for (owner, name), function in originals.items():
            if function is not None:
                setattr(owner, name, function)
        engine.Future.result = result_original
        shutil.rmtree(output, ignore_errors=True)
    busy["main thread: waiting for a read or a write"] = future_wait["wait"]
    return {"wall": wall, "cpu": process_cpu, "open": opened - started, "busy": busy, "thread_cpu": cpu}


# ---------------------------------------------------------------------------------------------
# Report


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def median(runs: list[Run], field: str) -> float:
    return statistics.median(getattr(run, field) for run in runs)


def report(runs: list[Run], startup: list[Run], identical: tuple[bool, str] | None, profile: dict | None) -> bool:
    print()
    print(f"{'engine':<9} {'method':<16} {'wall s':>8} {'CPU s':>8} {'peak RSS':>10} {'load':>6}")
    for run in startup + runs:
        print(
            f"{run.engine:<9} {run.method:<16} {run.wall_seconds:>8.2f} {run.cpu_seconds:>8.1f} "
            f"{_gib(run.peak_rss_bytes):>10} {run.load:>6.2f}"
        )
    print()
    all_met = True
    floors = [run for run in runs if run.engine == "floor"]

    def ratio(first: list[Run], second: list[Run], field: str = "wall_seconds") -> float:
        return median(first, field) / median(second, field)

    if floors:
        print(
            f"floor (torch import + read both models + write one + sync): median {median(floors, 'wall_seconds'):.2f} s"
        )
    for run in startup:
        print(f"start-up {run.engine}: {run.wall_seconds:.2f} s wall, {run.cpu_seconds:.2f} s CPU (a 1 MB pair)")
    for method in sorted({run.method for run in runs if run.engine != "floor"}):
        ours, theirs, before = ([r for r in runs if r.method == method and r.engine == e] for e in ENGINES)
        if ours and floors:
            target = FLOOR_TARGETS.get(method)
            met = target is None or ratio(ours, floors) <= target
            all_met &= met
            verdict = f" (target <= {target}x): {'MET' if met else 'MISSED'}" if target else ""
            print(f"{method}: ours/floor wall {ratio(ours, floors):.2f}x{verdict}")
        if ours and theirs:
            wall, rss, wall_target = ratio(ours, theirs), ratio(ours, theirs, "peak_rss_bytes"), WALL_TARGETS[method]
            met = wall <= wall_target and rss <= RSS_TARGET
            all_met &= met
            # CPU time is printed too: on a shared machine it is the less noisy of the two.
            print(
                f"{method}: ours/mergekit wall {wall:.2f}x (target <= {wall_target}x; CPU time "
                f"{ratio(ours, theirs, 'cpu_seconds'):.2f}x), peak RSS {rss:.2f}x (target <= {RSS_TARGET}x): "
                f"{'MET' if met else 'MISSED'}"
            )
            if floors:
                # A wall-time target below this ratio asks for less than reading and writing the bytes takes.
                print(
                    f"{method}: floor/mergekit wall {ratio(floors, theirs):.2f}x "
                    "(the lowest ratio any engine could reach)"
                )
        if ours and before:
            print(
                f"{method}: ours/before wall {ratio(ours, before):.2f}x, "
                f"CPU {ratio(ours, before, 'cpu_seconds'):.2f}x, peak RSS {ratio(ours, before, 'peak_rss_bytes'):.2f}x"
            )
        if before and theirs:
            print(
                f"{method}: before/mergekit wall {ratio(before, theirs):.2f}x, "
                f"peak RSS {ratio(before, theirs, 'peak_rss_bytes'):.2f}x"
            )
    if identical is not None:
        all_met &= identical[0]
        print(f"ties: ours' output bit-identical to the reference: {'YES' if identical[0] else 'NO'} ({identical[1]})")
    if profile:
        print(
            f"\nprofile of our task_arithmetic merge (in-process: {profile['wall']:.2f} s wall, "
            f"{profile['cpu']:.2f} s CPU; the three threads overlap):"
        )
        ours_startup = [run for run in startup if run.engine == "ours"]
        if ours_startup:
            startup_run = ours_startup[0]
            print(
                f"  start-up of the CLI (the whole command on a 1 MB pair): {startup_run.wall_seconds:.2f} s wall, "
                f"{startup_run.cpu_seconds:.2f} s CPU"
            )
        print(f"  opening and checking the inputs (headers, tokenizers): {profile['open']:.2f} s wall")
        for label in PROFILE_LABELS.values():
            if label in profile["busy"]:
                cpu = profile["thread_cpu"].get(label)
                print(f"  {label}: {profile['busy'][label]:.2f} s wall" + (f", {cpu:.2f} s CPU" if cpu else ""))
        waiting = "main thread: waiting for a read or a write"
        print(f"  {waiting}: {profile['busy'][waiting]:.2f} s wall")
    return all_met


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_cache = Path(os.environ.get("ACM_EXP_BENCH_CACHE", Path(tempfile.gettempdir()) / "acm_exp_merge_bench"))
    parser.add_argument("--shape", choices=sorted(SHAPES), default="0.5b", help="the real model whose shapes to use")
    parser.add_argument("--cache-dir", type=Path, default=default_cache, help="synthetic checkpoints (reused)")
    parser.add_argument("--work-dir", type=Path, default=None, help="merge outputs and logs (default: a temp dir)")
    parser.add_argument("--methods", default="task_arithmetic,ties")
    parser.add_argument("--engines", default="ours,mergekit", help="any of ours, mergekit, before")
    parser.add_argument("--repeats", type=int, default=1, help="runs per engine and method (medians are compared)")
    parser.add_argument("--layers", type=int, default=None, help="override the shape's layer count (smoke runs)")
    parser.add_argument("--vocab-size", type=int, default=None, help="override the shape's vocabulary")
    parser.add_argument("--k", type=float, default=0.8, help="TIES drop fraction (mergekit density = 1 - k)")
    parser.add_argument("--ties-scale", type=float, default=1.0)
    parser.add_argument("--ta-scale", type=float, default=0.7)
    parser.add_argument("--mergekit-dtype", default=None, help="mergekit's dtype (default: the checkpoint's, bf16)")
    parser.add_argument("--before-commit", default=None, help="also time our CLI at this git revision ('before')")
    parser.add_argument("--before-src", type=Path, default=None, help="... or from this source tree (acm_exp, conf)")
    parser.add_argument("--reference", type=Path, default=None, help="a TIES output ours' must equal bit for bit")
    parser.add_argument("--profile", action="store_true", help="profile our task_arithmetic merge (in-process)")
    parser.add_argument("--no-startup", action="store_true", help="skip the 1 MB pair start-up runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the runs here")
    parser.add_argument("--child-floor", nargs=3, metavar=("BASE", "FINETUNED", "OUTPUT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def before_source(arguments: argparse.Namespace, work_dir: Path) -> Path | None:
    if arguments.before_src:
        return arguments.before_src.resolve()
    if not arguments.before_commit:
        return None
    target = work_dir / "before-src"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    return extract_revision(arguments.before_commit, target, ("acm_exp", "conf"))


def extract_revision(revision: str, target: Path, paths: tuple[str, ...]) -> Path:
    """``paths`` of this repository as of git ``revision``, extracted under ``target`` (a benchmark's
    "before" code, put first on a child's PYTHONPATH)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", revision, *paths], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.child_floor:
        read_write_floor(*(Path(value) for value in arguments.child_floor))
        return 0
    shape = SHAPES[arguments.shape]
    shape = replace(shape, layers=arguments.layers or shape.layers, vocab=arguments.vocab_size or shape.vocab)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"commit: {git_description()}")
    print(f"start: {uptime_line()}", flush=True)
    print(
        f"synthetic {shape.key} ({arguments.shape} shape): {shape.parameters / 1e9:.2f}B parameters, "
        f"{2 * shape.parameters / 1e9:.2f} GB bf16 per model, untied lm_head; largest tensor "
        f"{shape.largest_numel / 1e6:.1f}M entries; torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}",
        flush=True,
    )
    base, finetuned = ensure_checkpoints(arguments.cache_dir, shape)
    work_dir = (arguments.work_dir or Path(tempfile.mkdtemp(prefix="merge-bench-"))).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    engines = arguments.engines.split(",")
    before_src = before_source(arguments, work_dir)
    if before_src and "before" not in engines:
        engines.append("before")
    bench = Bench(
        base,
        finetuned,
        work_dir,
        arguments.k,
        {"ties": arguments.ties_scale, "task_arithmetic": arguments.ta_scale},
        arguments.mergekit_dtype,
        before_src,
        keep_ties=bool(before_src or arguments.reference),
    )
    startup: list[Run] = []
    if not arguments.no_startup:
        tiny_base, tiny_finetuned = ensure_tiny_pair(arguments.cache_dir)
        for engine in engines:
            run = bench.run(engine, "task_arithmetic", tiny_base, tiny_finetuned)
            print(f"{engine} start-up (1 MB pair): wall {run.wall_seconds:.2f} s, load {run.load:.2f}", flush=True)
            startup.append(run)
    runs: list[Run] = []
    warm_page_cache(input_shards(base, finetuned))
    for _ in range(arguments.repeats):
        run = bench.run("floor", "read+write+sync")
        print(f"floor: wall {run.wall_seconds:.2f} s, CPU {run.cpu_seconds:.1f} s, load {run.load:.2f}", flush=True)
        runs.append(run)
    for method in arguments.methods.split(","):
        for repeat in range(arguments.repeats):
            # Alternate which engine goes first so page-cache warmth and CPU noise fall on all of them.
            for engine in engines if repeat % 2 == 0 else engines[::-1]:
                run = bench.run(engine, method)
                print(
                    f"{engine} {method}: wall {run.wall_seconds:.2f} s, CPU {run.cpu_seconds:.1f} s, "
                    f"peak RSS {_gib(run.peak_rss_bytes)}, load {run.load:.2f}",
                    flush=True,
                )
                runs.append(run)
    identical = None
    if "ties" in arguments.methods.split(",") and (before_src or arguments.reference):
        reference = arguments.reference or bench.output("before", "ties")
        identical = bit_identical(bench.output("ours", "ties"), reference)
    for engine in engines:
        shutil.rmtree(bench.output(engine, "ties"), ignore_errors=True)
    profile = profile_ours(bench) if arguments.profile else None
    met = report(runs, startup, identical, profile)
    if arguments.json:
        arguments.json.write_text(json.dumps([run.__dict__ for run in startup + runs], indent=2) + "\n")
    if arguments.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(f"\nend: {uptime_line()}")
    print(f"all targets {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
