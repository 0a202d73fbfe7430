"""Build a stand-in pair: each model's real config, tokenizer and generation config, random weights.

    build_stand_in("/tmp/standin/1p5b", "qwen2.5-1.5b", layers=2)

writes ``OUT/base`` and ``OUT/finetuned`` (``OUT/finetuned_<i>`` for pairs of several fine-tuned
models), each a complete transformers model directory. The pair's hub ids are those of
``conf/model_pair/<pair>.yaml``; the files' values come from ``acm_exp.model_facts`` (or, with
``from_hub``, from the hub's own files, only the weights being random). A model directory is
written under a temporary name and renamed when complete; an existing one built from the same
request is reused, a different one is only replaced with ``overwrite``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from acm_exp.errors import ConfigError
from acm_exp.model_facts import MODELS, ModelFacts
from acm_exp.paths import REPO_ROOT, check_writable_dir, nearest_existing

log = logging.getLogger(__name__)

PAIR_DIR = REPO_ROOT / "conf" / "model_pair"
RECORD = "stand_in.json"
# Bump when the files a stand-in holds change meaning (weights' distribution, tokenizer, layout).
STAND_IN_VERSION = 1
DEFAULT_SHARD_SIZE = "1GB"
# Optional files of a hub checkout that --from-hub copies when the repository has them.
HUB_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)


@dataclass(frozen=True)
class StandInModel:
    hub_id: str
    role: str  # "base" or "finetuned"
    directory: Path
    seconds: float
    bytes: int
    reused: bool


@dataclass(frozen=True)
class StandIn:
    """A built pair: the model directories and what they cost."""

    pair: str
    layers: int
    seed: int
    models: list[StandInModel] = field(default_factory=list)

    @property
    def base(self) -> Path:
        return self.models[0].directory

    @property
    def finetuned(self) -> list[Path]:
        return [model.directory for model in self.models[1:]]

    @property
    def seconds(self) -> float:
        return sum(model.seconds for model in self.models)

    @property
    def bytes(self) -> int:
        return sum(model.bytes for model in self.models)

    def overrides(self) -> list[str]:
        """The command-line overrides that point ``model_pair=<pair>`` at these directories."""
        return [
            f"model_pair={self.pair}",
            f"model_pair.base={self.base}",
            "model_pair.finetuned=[" + ",".join(str(path) for path in self.finetuned) + "]",
        ]


# ---------------------------------------------------------------------------------------------
# The request, checked before anything is written


def paper_pairs() -> list[str]:
    """The configured model pairs whose models the facts table knows."""
    return [name for name in sorted(path.stem for path in PAIR_DIR.glob("*.yaml")) if _pair_ids(name, strict=False)]


def _pair_ids(pair: str, *, strict: bool = True) -> list[str] | None:
    from omegaconf import OmegaConf

    path = PAIR_DIR / f"{pair}.yaml"
    loaded = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else {}
    section = loaded.get("model_pair", loaded) if isinstance(loaded, dict) else {}
    ids = [section.get("base"), *(section.get("finetuned") or [])] if isinstance(section, dict) else []
    if len(ids) >= 2 and all(isinstance(hub_id, str) and hub_id in MODELS for hub_id in ids):
        return ids
    if strict:
        raise ConfigError(f"--pair {pair!r} has no stand-in; expected one of {', '.join(paper_pairs())}")
    return None


def _check_request(pair: str, layers: int | None, seed: int, shard_size: str) -> tuple[list[ModelFacts], int]:
    from acm_exp.merge.checkpoint import parse_shard_size

    facts = [MODELS[hub_id] for hub_id in _pair_ids(pair)]
    depth = int(facts[0].config["num_hidden_layers"])
    if layers is None:
        layers = depth
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= depth:
        raise ConfigError(f"--layers {layers!r}; expected an integer from 1 to {depth} (the real depth of {pair})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed {seed!r}; expected a non-negative integer")
    try:
        parse_shard_size(shard_size)
    except ConfigError:
        raise ConfigError(
            f"--shard-size {shard_size!r}; expected a size such as 1GB or 500MB, or a byte count"
        ) from None
    return facts, layers


# ---------------------------------------------------------------------------------------------
# One model directory


def _role_dirs(out: Path, count: int) -> list[tuple[str, Path]]:
    finetuned = ["finetuned"] if count == 2 else [f"finetuned_{index}" for index in range(1, count)]
    return [("base", out / "base"), *(("finetuned", out / name) for name in finetuned)]


def _record(facts: ModelFacts, layers: int, seed: int, from_hub: bool, base_id: str) -> dict[str, Any]:
    return {
        "stand_in_version": STAND_IN_VERSION,
        "stand_in_of": facts.hub_id,
        "base": base_id,
        "layers": layers,
        "seed": seed,
        "files_from": "hub" if from_hub else "acm_exp.model_facts",
        "config_source": facts.config_source,
        "tokenizer_source": facts.tokenizer.source,
        "generation_source": facts.generation_source,
    }


def _hub_files(hub_id: str, directory: Path) -> dict[str, Any]:
    """Download the model's config and tokenizer files into ``directory``; its config."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for name in HUB_FILES:
        try:
            shutil.copy(hf_hub_download(hub_id, name), directory / name)
        except EntryNotFoundError:
            if name == "config.json":
                raise
    return json.loads((directory / "config.json").read_text(encoding="utf-8"))


def _write_files(facts: ModelFacts, directory: Path, layers: int, from_hub: bool) -> dict[str, Any]:
    from acm_exp.stand_in.tokenizer import write_tokenizer

    if from_hub:
        config = _hub_files(facts.hub_id, directory)
    else:
        config = dict(facts.config)
        write_tokenizer(facts, directory)
        _write_json(directory / "generation_config.json", facts.generation_config)
    config["num_hidden_layers"] = layers
    _write_json(directory / "config.json", config)
    return config


def _build_model(
    facts: ModelFacts,
    base: ModelFacts,
    directory: Path,
    *,
    layers: int,
    seed: int,
    from_hub: bool,
    shard_size: str,
    progress: Callable[[int], None] | None,
) -> None:
    from acm_exp.stand_in.weights import qwen2_tensors, write_weights

    config = _write_files(facts, directory, layers, from_hub)
    tied = bool(config.get("tie_word_embeddings", False))
    specs = qwen2_tensors(config, with_head=not tied)
    finetuned = facts.hub_id != base.hub_id
    # A fine-tuned head over a tied base grows from the base's embedding (its only output matrix).
    base_names = {"lm_head.weight": "model.embed_tokens.weight"} if finetuned and base.tied else None
    write_weights(
        directory,
        specs,
        seed=seed,
        std=float(config.get("initializer_range", 0.02)),
        finetuned=finetuned,
        shard_size=shard_size,
        base_names=base_names,
        progress=progress,
    )
    _write_json(directory / RECORD, _record(facts, layers, seed, from_hub, base.hub_id))


def _directory_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir() if path.is_file())


def _reusable(directory: Path, record: dict[str, Any]) -> bool:
    path = directory / RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8")) == record
    except (OSError, ValueError):
        return False


def _check_space(out: Path, needed: int) -> None:
    free = shutil.disk_usage(nearest_existing(out)).free
    if needed > free:
        raise ConfigError(
            f"the stand-in needs {needed / 2**30:.1f} GiB in {out} but {free / 2**30:.1f} GiB are free; "
            "expected room for its weights (lower --layers, or choose another OUT)"
        )


def build_stand_in(
    out: str | Path,
    pair: str,
    *,
    layers: int | None = None,
    seed: int = 0,
    from_hub: bool = False,
    shard_size: str = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
    progress: bool = True,
) -> StandIn:
    """Write the stand-ins of ``pair``'s models under ``out`` (see the module docstring)."""
    from tqdm.auto import tqdm

    from acm_exp.stand_in.tokenizer import require_extra
    from acm_exp.stand_in.weights import checkpoint_bytes, qwen2_tensors

    facts, layers = _check_request(pair, layers, seed, shard_size)
    if not from_hub:
        require_extra()
    out = check_writable_dir(out, "OUT")
    base = facts[0]
    planned = []
    for model, (role, directory) in zip(facts, _role_dirs(out, len(facts)), strict=True):
        record = _record(model, layers, seed, from_hub, base.hub_id)
        if directory.exists() and not _reusable(directory, record) and not overwrite:
            raise ConfigError(
                f"{directory} exists and is not this stand-in ({model.hub_id}, {layers} layers, seed {seed}); "
                "expected a new OUT, or --overwrite to replace it"
            )
        config = {**model.config, "num_hidden_layers": layers}
        size = checkpoint_bytes(qwen2_tensors(config, with_head=not model.tied))
        planned.append((model, role, directory, record, size))
    _check_space(out, sum(size for _, _, directory, record, size in planned if not _reusable(directory, record)))

    out.mkdir(parents=True, exist_ok=True)
    built = []
    for model, role, directory, record, size in planned:
        if _reusable(directory, record):
            log.info("stand-in %s: reusing %s", model.hub_id, directory)
            built.append(StandInModel(model.hub_id, role, directory, 0.0, _directory_bytes(directory), True))
            continue
        started = time.perf_counter()
        temporary = Path(tempfile.mkdtemp(dir=out, prefix=f".{directory.name}.tmp-"))
        log.info("stand-in %s (%d layers, seed %d) -> %s", model.hub_id, layers, seed, directory)
        try:
            with tqdm(total=size, unit="B", unit_scale=True, desc=f"stand-in {role}", disable=not progress) as bar:
                _build_model(
                    model,
                    base,
                    temporary,
                    layers=layers,
                    seed=seed,
                    from_hub=from_hub,
                    shard_size=shard_size,
                    progress=bar.update,
                )
            temporary.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users
            if directory.exists():
                shutil.rmtree(directory)
            temporary.rename(directory)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        seconds = time.perf_counter() - started
        built.append(StandInModel(model.hub_id, role, directory, seconds, _directory_bytes(directory), False))
        log.info("stand-in %s written in %.1f s (%.2f GB)", model.hub_id, seconds, built[-1].bytes / 1e9)
    return StandIn(pair=pair, layers=layers, seed=seed, models=built)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def describe(stand_in: StandIn) -> str:
    """A few lines naming each directory, its size and build time, and the overrides that use them."""
    lines = [f"stand-in {stand_in.pair}: {stand_in.layers} layers, seed {stand_in.seed}"]
    for model in stand_in.models:
        how = "reused" if model.reused else f"built in {model.seconds:.1f} s"
        lines.append(f"  {model.role:<9} {model.directory}  {model.bytes / 1e9:.2f} GB, {how}  ({model.hub_id})")
    lines.append("use with: python -m acm_exp " + " ".join(stand_in.overrides()))
    return "\n".join(lines)


def as_dict(stand_in: StandIn) -> dict[str, Any]:
    return {**asdict(stand_in), "models": [{**asdict(m), "directory": str(m.directory)} for m in stand_in.models]}
