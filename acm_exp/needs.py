"""What a run reads from the Hugging Face hub, and whether it can have it here: every run checks, before
any merge, that each model and dataset it needs is local (a directory, a shipped or ``data_dir`` copy,
the toy pair), in the Hugging Face cache, or reachable on the hub (``check_resolvable``); otherwise it
stops with one line naming what is missing and the command that fetches it,
``python -m acm_exp.prefetch <the same overrides>`` (acm_exp.prefetch). With ``HF_HUB_OFFLINE=1`` (set
it on compute nodes) the hub counts as unreachable, so nothing waits on a network that is not there.
"""

from __future__ import annotations

import functools
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from acm_exp.errors import ConfigError

MODEL, DATASET, EMBEDDING = "model", "dataset", "embedding model"
# How long the reachability check waits for the hub, per repository.
HUB_TIMEOUT_S = 10.0
CALIBRATED_PROVIDERS = ("acm", "aim", "sens")


@dataclass(frozen=True)
class Need:
    """One thing a run reads from the hub: a model or dataset repository (``split``/``subset`` for a
    dataset loaded with ``datasets``), and the config key that names it."""

    kind: str
    name: str
    used_as: str
    revision: str | None = None
    subset: str | None = None
    # "datasets" (loaded with datasets.load_dataset: its own cache) or "hub" (files in the hub cache).
    via: str = "hub"

    @property
    def repo_type(self) -> str:
        return "dataset" if self.kind == DATASET else "model"

    def describe(self) -> str:
        revision = f"@{self.revision}" if self.revision else ""
        return f"{self.used_as} ({self.kind} {self.name}{revision})"


# ---------------------------------------------------------------------------------------------
# What a run needs


def run_needs(cfg: DictConfig) -> list[Need]:
    """The hub repositories a run of ``cfg`` reads; local, shipped and toy inputs are not needs."""
    from acm_exp.merge.registry import get_method
    from acm_exp.models import is_local_reference, model_refs
    from acm_exp.paths import data_dir
    from acm_exp.toy import is_toy_id

    needs = [
        Need(MODEL, ref.name, f"model_pair.{ref.role}", ref.revision)
        for ref in model_refs(cfg.model_pair)
        if not is_toy_id(ref.name) and not is_local_reference(ref.name)
    ]
    shared = data_dir(cfg.data_dir)
    if cfg.eval.benchmarks:
        from acm_exp.eval.benchmarks import local_file, task_of

        for key, benchmark in cfg.eval.benchmarks.items():
            family = task_of(benchmark)
            if family.generates_rows or local_file(benchmark, shared) is not None or not benchmark.get("source"):
                continue
            source = str(benchmark.source)
            if Path(source).expanduser().exists():
                continue
            via = "hub" if family.load_rows is not None else "datasets"
            needs.append(Need(DATASET, source, f"eval.benchmarks.{key}", subset=benchmark.get("subset"), via=via))
    if get_method(cfg.merge.method).coefficients in CALIBRATED_PROVIDERS:
        needs += calibration_needs(cfg, shared)
    return list(dict.fromkeys(needs))


def calibration_needs(cfg: DictConfig, shared: Path | None) -> list[Need]:
    from acm_exp.calibration import OFFLINE_COPIES, TOY_SOURCE, resolve_embedding_model

    needs = []
    source = str(cfg.calibration.source)
    offline_copy = OFFLINE_COPIES.get((source.lower(), cfg.calibration.split))
    local = Path(source).expanduser().exists() or (shared is not None and (shared / source).exists())
    shipped = offline_copy is not None and shared is not None and (shared / offline_copy).is_file()
    if source != TOY_SOURCE and not local and not shipped:
        needs.append(Need(DATASET, source, "calibration.source", via="datasets"))
    if cfg.calibration.selection == "cluster":
        location, _ = resolve_embedding_model(str(cfg.calibration.embedding_model))
        if not Path(location).exists():
            needs.append(Need(EMBEDDING, location, "calibration.embedding_model"))
    return needs


# ---------------------------------------------------------------------------------------------
# Where a need is: the Hugging Face caches


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def datasets_cache() -> Path:
    from huggingface_hub import constants

    return Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes")


def _snapshot(need: Need) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(need.name, repo_type=need.repo_type, revision=need.revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - not in the cache (LocalEntryNotFoundError and kin)
        return None
    return Path(folder)


def _complete_model(folder: Path) -> bool:
    """config.json, every weight shard the index names (or a single file), and a tokenizer."""
    import json

    from acm_exp.models import has_tokenizer

    if not (folder / "config.json").is_file():
        return False
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError):
            return False
        weights = all((folder / shard).is_file() for shard in shards)
    else:
        weights = (folder / "model.safetensors").is_file() or any(folder.glob("*.safetensors"))
    return weights and has_tokenizer(folder)


def _datasets_entry(need: Need) -> Path | None:
    """datasets' cache of a hub dataset: <cache>/<owner>___<name>/<config>/... with a dataset_info.json."""
    cache = datasets_cache()
    if not cache.is_dir():
        return None
    wanted = need.name.replace("/", "___").lower()
    for entry in cache.iterdir():
        if entry.is_dir() and entry.name.lower() == wanted:
            configs = [entry / need.subset] if need.subset else [child for child in entry.iterdir() if child.is_dir()]
            if any(next(config.rglob("dataset_info.json"), None) for config in configs if config.is_dir()):
                return entry
    return None


def locate(need: Need) -> Path | None:
    """Where the cache holds the need, complete enough to run offline; None when it does not."""
    if need.via == "datasets":
        return _datasets_entry(need)
    folder = _snapshot(need)
    if folder is None:
        return None
    if need.kind == MODEL and not _complete_model(folder):
        return None
    return folder


@functools.lru_cache(maxsize=256)
def unreachable(need: Need) -> str | None:
    """Why the hub cannot give the need (offline mode, no such repository, no network); None if it can."""
    if offline():
        return "offline mode (HF_HUB_OFFLINE)"
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().repo_info(need.name, repo_type=need.repo_type, revision=need.revision, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return "gated on the hub: accept its terms and log in (huggingface-cli login)"
    except RevisionNotFoundError:
        return f"the hub has no revision {need.revision!r} of it"
    except RepositoryNotFoundError:
        return "not found on the hub (a typo, or a private repository: huggingface-cli login)"
    except Exception as error:  # noqa: BLE001 - network errors of every kind mean the same here
        return f"the hub is not reachable ({type(error).__name__})"
    return None


def prefetch_command(overrides: Sequence[str] | None) -> str:
    if overrides is None:
        return "python -m acm_exp.prefetch <the run's overrides>"
    return " ".join(["python -m acm_exp.prefetch", *map(shlex.quote, overrides)])


def check_resolvable(cfg: DictConfig, overrides: Sequence[str] | None = None) -> None:
    """Raise a one-line ConfigError unless every hub repository the run needs is cached or reachable."""
    needs = run_needs(cfg)
    if not needs:
        return
    missing = []
    for need in needs:
        if locate(need) is None:
            reason = unreachable(need)
            if reason is not None:
                missing.append((need, reason))
    if not missing:
        return
    reasons = list(dict.fromkeys(reason for _, reason in missing))
    them = "it" if len(missing) == 1 else "them"
    raise ConfigError(
        f"{'; '.join(need.describe() for need, _ in missing)}: not local, not in the Hugging Face cache "
        f"(HF_HOME={hub_cache().parent}) and the hub cannot give {them}: {'; '.join(reasons)}; fetch {them} on a "
        f"machine with internet and the same HF_HOME: {prefetch_command(overrides)}"
    )
