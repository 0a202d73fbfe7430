"""Activation capture: MI between the base's and each compared model's activations, sample by sample.

Capture points (DESIGN.md §1 item 2), in this order: the token embedding's output
(``embed_tokens``), each decoder layer's MLP output projection (``layers.i`` = ``mlp.down_proj``'s
output), the final norm (``norm``) and the output head (``lm_head``). One calibration sample per
forward pass, no padding. Per sample the base model runs first and keeps that sample's activations;
each compared model then runs on the same token ids and every hook hands its activation to one
worker thread that reduces it to one MI while the forward passes go on (the MI kernels release the
GIL, so counting overlaps the next layers' compute). A sample's MI values are collected once the
next sample has been handed over, so memory holds the activations of two samples at most.

The same pass can also record AIM's input importance of the base (``acm_exp.acm.importance``): on a
cache miss ``compute_mi_statistics`` attaches an importance recorder to the base during its first
compared model's pass and caches the result, so AIM on the same base and texts runs no forward pass.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from acm_exp.acm.mi import check_estimator, mutual_information
from acm_exp.acm.stats import MIStatistics
from acm_exp.errors import ConfigError

log = logging.getLogger(__name__)

# Forward passes run by this module (every model, every sample): lets tests check that a sweep
# reusing cached statistics runs none.
FORWARD_PASSES = 0

CAPTURE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class CaptureLayout:
    """Where the capture points live in a causal-LM module tree (dotted paths)."""

    embed: str = "model.embed_tokens"
    layers: str = "model.layers"
    layer_output: str = "mlp.down_proj"
    norm: str = "model.norm"
    head: str = "lm_head"


STANDARD_LAYOUT = CaptureLayout()
# Architectures checked to follow the standard layout (model_type from config.json).
LAYOUTS: dict[str, CaptureLayout] = {
    "qwen2": STANDARD_LAYOUT,
    "qwen3": STANDARD_LAYOUT,
    "llama": STANDARD_LAYOUT,
    "mistral": STANDARD_LAYOUT,
}


def _submodule(model: torch.nn.Module, path: str) -> torch.nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _architecture(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or type(model).__name__


def capture_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(point name, module) for every capture point, in the canonical order."""
    architecture = _architecture(model)
    layout = LAYOUTS.get(architecture, STANDARD_LAYOUT)
    supported = ", ".join(sorted(LAYOUTS))

    def find(path: str) -> torch.nn.Module:
        module = _submodule(model, path)
        if module is None:
            raise ConfigError(
                f"activation capture does not support architecture {architecture!r} "
                f"({type(model).__name__}): it has no module {path}; supported: {supported}"
            )
        return module

    embed = find(layout.embed)
    layers = find(layout.layers)
    if not isinstance(layers, (torch.nn.ModuleList, torch.nn.Sequential)) or len(layers) == 0:
        raise ConfigError(
            f"activation capture: {layout.layers} of architecture {architecture!r} is not a list of "
            f"decoder layers; supported: {supported}"
        )
    points = [("embed_tokens", embed)]
    points += [(f"layers.{i}", find(f"{layout.layers}.{i}.{layout.layer_output}")) for i in range(len(layers))]
    points += [("norm", find(layout.norm)), ("lm_head", find(layout.head))]
    if architecture not in LAYOUTS:
        log.warning(
            "architecture %r is not in the checked list (%s); capturing its standard module names",
            architecture,
            supported,
        )
    return points


def capture_point_names(model: torch.nn.Module) -> tuple[str, ...]:
    return tuple(name for name, _ in capture_modules(model))


def _output_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _input_device(model: torch.nn.Module) -> torch.device:
    """Where the token ids go: the embedding's device. An offloaded embedding (weights on ``meta``,
    loaded per forward by accelerate's hook) takes them on the CPU and its hook moves them."""
    device = model.get_input_embeddings().weight.device
    return torch.device("cpu") if device.type == "meta" else device


def _as_token_ids(sample: Any, index: int) -> torch.Tensor:
    ids = sample if isinstance(sample, torch.Tensor) else torch.as_tensor(list(sample), dtype=torch.long)
    ids = ids.reshape(1, -1).to(torch.long)
    if ids.shape[1] == 0:
        raise ConfigError(f"calibration sample {index} has no tokens; expected at least one token id")
    return ids


def _check_vocabulary(models: Sequence[torch.nn.Module], ids: torch.Tensor, index: int) -> None:
    smallest, largest = int(ids.min()), int(ids.max())
    if smallest < 0:
        raise ConfigError(f"calibration sample {index} has token id {smallest}; expected non-negative token ids")
    for model in models:
        size = model.get_input_embeddings().num_embeddings
        if largest >= size:
            raise ConfigError(
                f"calibration sample {index} has token id {largest} but a model's vocabulary has {size} "
                "entries; the compared models must share the base's tokenizer"
            )


def _forward(model: torch.nn.Module, ids: torch.Tensor) -> None:
    global FORWARD_PASSES
    FORWARD_PASSES += 1
    model(input_ids=ids.to(_input_device(model)), use_cache=False)


class _Recorder:
    """Forward hooks on every capture point: the base keeps outputs, a compared model reduces them.

    ``reduce`` returns a value or a Future of one (the MI, computed on the worker thread).
    """

    def __init__(self, model: torch.nn.Module, reduce=None):
        self.outputs: dict[str, torch.Tensor] = {}
        self.reduced: dict[str, float | Future] = {}
        self._reduce = reduce
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in capture_modules(model)]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            tensor = _output_tensor(output).detach()
            if self._reduce is None:
                self.outputs[name] = tensor
            else:
                self.reduced[name] = self._reduce(name, tensor)

        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self.outputs.clear()


def collect_mi_statistics(
    base_model: torch.nn.Module,
    compared_models: Sequence[torch.nn.Module],
    samples: Iterable[Sequence[int] | torch.Tensor],
    estimator: str = "discrete",
    bins: int | None = None,
    binning: str = "uniform",
    *,
    model_names: Sequence[str] | None = None,
    progress: bool = True,
    description: str = "ACM activations",
) -> MIStatistics:
    """MI between ``base_model`` and each compared model at every capture point, for every sample.

    ``samples``: token id lists or LongTensors, one calibration sample each (no padding).
    """
    check_estimator(estimator, bins, binning)
    if not compared_models:
        raise ConfigError("collect_mi_statistics needs at least one compared model")
    points = capture_point_names(base_model)
    for index, model in enumerate(compared_models):
        other = capture_point_names(model)
        if other != points:
            raise ConfigError(
                f"compared model {index} has {len(other) - 3} decoder layers and the base has "
                f"{len(points) - 3}; expected the same architecture"
            )
    names = tuple(model_names) if model_names is not None else tuple(f"model{i}" for i in range(len(compared_models)))
    if len(names) != len(compared_models):
        raise ConfigError(f"{len(names)} model names for {len(compared_models)} compared models")

    base_recorder = _Recorder(base_model)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="acm-mi")

    def measure(reference: torch.Tensor, activation: torch.Tensor) -> float:
        with torch.inference_mode():
            return mutual_information(reference, activation, estimator=estimator, bins=bins, binning=binning)

    def reduce(name: str, activation: torch.Tensor) -> Future:
        reference = base_recorder.outputs[name]
        if reference.device != activation.device:
            # Dispatched models run a capture point's layer on different devices: the pair meets on
            # the compared model's device, one capture point at a time.
            reference = reference.to(activation.device)
        if reference.shape != activation.shape:
            raise ConfigError(
                f"capture point {name}: the base's activation has shape {tuple(reference.shape)} and a "
                f"compared model's {tuple(activation.shape)}; expected equal shapes"
            )
        # The future holds both tensors until its MI is done; the forward passes go on meanwhile.
        return worker.submit(measure, reference, activation)

    compared_recorders = [_Recorder(model, reduce) for model in compared_models]
    per_sample: list[np.ndarray] = []
    pending: list[list[dict[str, Future]]] = []  # per sample, per compared model: point -> its MI

    def collect(futures: list[dict[str, Future]]) -> None:
        per_sample.append(np.array([[reduced[name].result() for name in points] for reduced in futures]))

    total = len(samples) if hasattr(samples, "__len__") else None
    try:
        with torch.inference_mode():
            for index, sample in enumerate(tqdm(samples, total=total, desc=description, disable=not progress)):
                ids = _as_token_ids(sample, index)
                _check_vocabulary([base_model, *compared_models], ids, index)
                _forward(base_model, ids)
                futures = []
                for model, recorder in zip(compared_models, compared_recorders, strict=False):
                    recorder.reduced = {}
                    _forward(model, ids)
                    futures.append(recorder.reduced)
                    # A model that is also the base (or another compared model) fires these hooks in
                    # later passes too: they must not overwrite this sample's futures.
                    recorder.reduced = {}
                base_recorder.outputs = {}
                pending.append(futures)
                if len(pending) == 2:  # the previous sample's MI ran during this sample's passes
                    collect(pending.pop(0))
            for futures in pending:
                collect(futures)
    finally:
        worker.shutdown(wait=True, cancel_futures=True)
        base_recorder.close()
        for recorder in compared_recorders:
            recorder.close()
    if not per_sample:
        raise ConfigError("no calibration samples were given; expected at least one")
    return MIStatistics(mi=np.stack(per_sample, axis=-1), point_names=points, model_names=names)


# ---------------------------------------------------------------------------------------------
# From paths and texts


def resolve_device(device: str, setting: str = "acm.device") -> torch.device:
    """``auto`` (cuda when available), ``cpu``, ``cuda`` or ``cuda:<index>``: one device (see
    ``resolve_placement`` for several)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{setting}={device!r}; expected auto, cpu, cuda or cuda:<index>") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"{setting}={device!r}; expected auto, cpu, cuda or cuda:<index>")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting}={device!r} but CUDA is not available; use {setting}=cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ConfigError(f"{setting}={device!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return resolved


# Of each device's free memory, the share a placement without max_memory leaves to activations
# (one sample's lm_head outputs, the MI's working memory) rather than to weights.
ACTIVATION_HEADROOM = 0.1


@dataclass(frozen=True)
class Placement:
    """Where a stage's models go: compute ``devices`` and the weight budget of each memory tier.

    One device without ``max_memory`` loads every model whole onto it. Otherwise transformers'
    ``device_map="auto"`` lets accelerate place each model's modules over the tiers of
    ``max_memory`` (GPU indices, ``"cpu"``; beyond them ``"disk"`` under ``offload_dir``), each
    model of a stage getting ``1/side_by_side`` of every tier, since they run side by side on every
    sample (capture: base and compared model).
    """

    devices: tuple[torch.device, ...]
    # accelerate's form: {gpu index or "cpu": bytes}; empty = the devices' free memory.
    max_memory: tuple[tuple[int | str, int], ...] = ()
    offload_dir: str | None = None

    @property
    def primary(self) -> torch.device:
        return self.devices[0]

    @property
    def dispatched(self) -> bool:
        return len(self.devices) > 1 or bool(self.max_memory)

    def describe(self) -> str:
        devices = ",".join(str(device) for device in self.devices)
        if not self.max_memory:
            return devices
        budget = ", ".join(f"{tier}: {size / 2**30:.3g} GiB" for tier, size in self.max_memory)
        return f"{devices} (max_memory {budget}" + (f"; offload to {self.offload_dir})" if self.offload_dir else ")")

    def memory_per_model(self, side_by_side: int) -> dict[int | str, int]:
        """Each model's budget per tier: ``max_memory`` (else accelerate's reading of the free
        memory, less ACTIVATION_HEADROOM) divided among the models held together."""
        if self.max_memory:
            budget = dict(self.max_memory)
        else:
            from accelerate.utils import get_max_memory

            free = get_max_memory()
            budget = {tier: int(free[tier] * (1 - ACTIVATION_HEADROOM)) for tier in _memory_tiers(self.devices)}
        return {tier: size // side_by_side for tier, size in budget.items()}

    def load_arguments(self, side_by_side: int = 1) -> dict[str, Any]:
        """``from_pretrained`` keyword arguments for one of ``side_by_side`` models of a stage."""
        if not self.dispatched:
            return {"device_map": str(self.primary)}
        arguments: dict[str, Any] = {"device_map": "auto", "max_memory": self.memory_per_model(side_by_side)}
        if self.offload_dir is not None:
            arguments["offload_folder"] = self.offload_dir
        return arguments


def _memory_tier(device: torch.device) -> int | str:
    return "cpu" if device.type == "cpu" else (device.index or 0)


def _memory_tiers(devices: Sequence[torch.device]) -> list[int | str]:
    return list(dict.fromkeys(_memory_tier(device) for device in devices))


def _device_list(device: Any, setting: str) -> list[str]:
    if isinstance(device, str):
        names = [part.strip() for part in device.strip().strip("[]").split(",")]
    elif isinstance(device, Sequence) and not isinstance(device, (bytes, bytearray)):
        names = [str(part).strip() for part in device]
    else:
        names = []
    if not names or not all(names):
        raise ConfigError(
            f"{setting}={device!r}; expected auto, cpu, cuda:<index> or a list of devices such as [cuda:0,cuda:1]"
        )
    return names


def resolve_placement(
    device: Any = "auto", max_memory: Any = None, offload_dir: Any = None, *, setting: str = "acm"
) -> Placement:
    """The placement of ``<setting>.device`` / ``.max_memory`` / ``.offload_dir``.

    ``device``: ``auto`` (every visible GPU, else the CPU), one device, or several as a list or a
    comma-separated string (``cuda:0,cuda:1``). ``max_memory``: {device: size} with sizes as
    accelerate reads them (``"40GiB"``, ``"500MB"``, bytes); devices are ``cpu``, ``cuda:<i>`` or a
    GPU index; a ``cpu`` entry beside GPUs is accelerate's CPU offload. ``offload_dir``: where
    accelerate offloads what fits no tier (disk offload, the last resort).
    """
    from accelerate.utils import convert_file_size_to_int

    if device == "auto":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        devices = [torch.device(f"cuda:{index}") for index in range(count)] or [torch.device("cpu")]
    else:
        devices = [resolve_device(name, f"{setting}.device") for name in _device_list(device, f"{setting}.device")]
        devices = [torch.device("cuda:0") if d.type == "cuda" and d.index is None else d for d in devices]
    if len(set(devices)) != len(devices):
        raise ConfigError(f"{setting}.device={device!r} names a device twice; expected distinct devices")
    if len(devices) > 1 and any(d.type == "cpu" for d in devices):
        raise ConfigError(
            f"{setting}.device={device!r} mixes cpu with GPUs; list the GPUs and give the CPU's share "
            f"as {setting}.max_memory.cpu (accelerate's CPU offload)"
        )
    budget: dict[int | str, int] = {}
    if max_memory:
        if not hasattr(max_memory, "items"):
            raise ConfigError(
                f"{setting}.max_memory={max_memory!r}; expected a mapping device -> size, e.g. "
                "{0: 70GiB, cpu: 100GiB} (GPUs by index)"
            )
        for key, size in max_memory.items():
            name = f"cuda:{key}" if isinstance(key, int) or str(key).isdigit() else str(key)
            tier = _memory_tier(resolve_device(name, f"{setting}.max_memory"))
            try:
                budget[tier] = convert_file_size_to_int(size)
            except (ValueError, TypeError, AttributeError):
                budget[tier] = -1
            if isinstance(size, bool) or budget[tier] <= 0:
                raise ConfigError(
                    f"{setting}.max_memory.{key}={size!r}; expected a positive size such as 40GiB or "
                    "500MB, GPUs keyed by index ({0: 70GiB, cpu: 100GiB})"
                )
        missing = [str(d) for d in devices if _memory_tier(d) not in budget]
        if missing:
            raise ConfigError(
                f"{setting}.max_memory names no size for {', '.join(missing)}; expected one per device "
                f"of {setting}.device"
            )
        extra = [tier for tier in budget if tier != "cpu" and tier not in _memory_tiers(devices)]
        if extra:
            raise ConfigError(f"{setting}.max_memory has GPU {extra[0]}, which is not in {setting}.device={device!r}")
    if offload_dir is not None and (not isinstance(offload_dir, (str, Path)) or not str(offload_dir)):
        raise ConfigError(f"{setting}.offload_dir={offload_dir!r}; expected a directory path or null")
    return Placement(tuple(devices), tuple(budget.items()), str(offload_dir) if offload_dir is not None else None)


def placement_of(cfg, setting: str) -> Placement:
    """The placement of a config group with ``device`` (and optionally ``max_memory``, ``offload_dir``)."""
    return resolve_placement(
        cfg.device, getattr(cfg, "max_memory", None), getattr(cfg, "offload_dir", None), setting=setting
    )


def resolve_dtype(dtype: str, setting: str = "acm.dtype") -> torch.dtype:
    try:
        return CAPTURE_DTYPES[dtype]
    except KeyError:
        raise ConfigError(f"{setting}={dtype!r}; expected one of {tuple(CAPTURE_DTYPES)}") from None


def tokenize_texts(tokenizer_path: str | Path, texts: Sequence[str], max_tokens: int | None = None) -> list[list[int]]:
    """Token ids of each text with the model's tokenizer: no chat template, truncated to max_tokens."""
    from transformers import AutoTokenizer

    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"max_tokens={max_tokens!r}; expected a positive integer or null")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path))
    token_ids = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ConfigError(f"calibration text {index} is a {type(text).__name__}; expected a string")
        ids = tokenizer(text, truncation=max_tokens is not None, max_length=max_tokens)["input_ids"]
        if not ids:
            raise ConfigError(f"calibration text {index} tokenizes to no tokens; expected non-empty text")
        token_ids.append(list(ids))
    return token_ids


def load_causal_lm(
    path: str | Path,
    placement: Placement | torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    *,
    side_by_side: int = 1,
):
    """The model at ``path`` in eval mode, placed by transformers/accelerate (``Placement.load_arguments``):
    whole on one device, or dispatched over several with its share of each one's memory."""
    from transformers import AutoModelForCausalLM

    if isinstance(placement, torch.device):
        placement = Placement((placement,))
    # device_map loads the weights straight onto their device (no full copy in CPU memory first).
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, trust_remote_code=trust_remote_code, **placement.load_arguments(side_by_side)
        )
    except ValueError as error:
        if "offload" not in str(error):
            raise
        raise ConfigError(
            f"{path} does not fit the placement {placement.describe()} ({side_by_side} model(s) side "
            "by side) and no offload_dir is set; add GPUs, raise max_memory or set offload_dir for "
            "accelerate's disk offload"
        ) from None
    if placement.dispatched:
        log.info(
            "%s dispatched over %s: %s",
            Path(path).name,
            placement.describe(),
            dict(getattr(model, "hf_device_map", {})),
        )
    return model.eval()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def capture_from_paths(
    base_path: str | Path,
    compared_paths: Sequence[str | Path],
    token_ids: Sequence[Sequence[int]],
    *,
    device: Placement | torch.device,
    dtype: torch.dtype,
    estimator: str,
    bins: int | None,
    binning: str,
    model_names: Sequence[str],
    trust_remote_code: bool = False,
    progress: bool = True,
    importance_sink: Callable[[Any], None] | None = None,
) -> MIStatistics:
    """Load the base once and the compared models one at a time (two models in memory at most).

    With several compared models the base runs once per compared model and sample: the price of
    never holding a third model or any sample's activations beyond the current one.

    ``importance_sink``, when given, receives the base's AIM ``InputImportance`` recorded during the
    first compared model's pass (each sample counted once, however many compared models there are).
    """
    # Base and compared model run side by side on every sample: each gets half of every device.
    base = load_causal_lm(base_path, device, dtype, trust_remote_code, side_by_side=2)
    parts = []
    try:
        for index, path in enumerate(compared_paths):
            importance_recorder = _importance_recorder(base) if importance_sink is not None and index == 0 else None
            compared = load_causal_lm(path, device, dtype, trust_remote_code, side_by_side=2)
            try:
                parts.append(
                    collect_mi_statistics(
                        base,
                        [compared],
                        token_ids,
                        estimator,
                        bins,
                        binning,
                        model_names=[model_names[index]],
                        progress=progress,
                        description=f"ACM activations ({index + 1}/{len(compared_paths)})",
                    )
                )
                if importance_recorder is not None:
                    importance_sink(importance_recorder.result({"num_samples": len(token_ids)}))
            finally:
                if importance_recorder is not None:
                    importance_recorder.close()
                del compared
                _free_memory()
    finally:
        del base
        _free_memory()
    return MIStatistics.concatenate_models(parts)


def _importance_recorder(model: torch.nn.Module):
    # Imported here: importance.py builds on this module.
    from acm_exp.acm.importance import ImportanceRecorder

    return ImportanceRecorder(model)


def _missing_importance_cache(
    base_path: str | Path,
    texts: Sequence[str],
    *,
    max_tokens: int | None,
    dtype: str,
    device: torch.device,
    cache_dir: str | Path | None,
):
    """AIM's cache entry for this base and calibration set, or None when it is already filled."""
    from acm_exp.acm.importance import ImportanceCache, importance_spec

    cache = ImportanceCache(
        importance_spec(base_path, texts, max_tokens=max_tokens, dtype=dtype), cache_dir, device=device
    )
    return None if cache.load() is not None else cache


def compute_mi_statistics(
    base_path: str | Path,
    compared_paths: Sequence[str | Path],
    texts: Sequence[str],
    *,
    acm_cfg,
    max_tokens: int | None = None,
    cache_dir: str | Path | None = None,
    model_names: Sequence[str] | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> MIStatistics:
    """MI statistics of the base against every compared model on the calibration ``texts``.

    Reads the cache first (a hit runs no forward pass); otherwise tokenizes with the base's
    tokenizer, captures on ``acm_cfg.device`` in ``acm_cfg.dtype`` and stores the result. The cache
    key and directory are in ``statistics.metadata`` ("cache_key", "cache_dir"). A capture also fills
    AIM's importance cache for the same base, texts, max_tokens, dtype and device when it is empty.
    """
    from acm_exp.acm.cache import MICache, statistics_spec

    check_estimator(acm_cfg.estimator, acm_cfg.bins, acm_cfg.binning)
    dtype = resolve_dtype(acm_cfg.dtype)
    placement = placement_of(acm_cfg, "acm")
    device = placement.primary
    if not compared_paths:
        raise ConfigError("compute_mi_statistics needs at least one compared model")
    if not texts:
        raise ConfigError("compute_mi_statistics needs at least one calibration text")
    names = tuple(model_names) if model_names is not None else tuple(str(p) for p in compared_paths)
    spec = statistics_spec(
        base_path,
        compared_paths,
        texts,
        max_tokens=max_tokens,
        dtype=acm_cfg.dtype,
        estimator=acm_cfg.estimator,
        bins=acm_cfg.bins,
        binning=acm_cfg.binning,
    )
    cache_dir = cache_dir if cache_dir is not None else acm_cfg.cache_dir
    cache = MICache(spec, cache_dir, device=device)

    def compute() -> MIStatistics:
        token_ids = tokenize_texts(base_path, texts, max_tokens)
        log.info(
            "capturing activations: %d samples (%d tokens), %d compared model(s), %s on %s",
            len(token_ids),
            sum(len(ids) for ids in token_ids),
            len(compared_paths),
            acm_cfg.dtype,
            placement.describe(),
        )
        importance_cache = _missing_importance_cache(
            base_path, texts, max_tokens=max_tokens, dtype=acm_cfg.dtype, device=device, cache_dir=cache_dir
        )
        if importance_cache is not None:
            log.info("recording AIM input importance of the base during the same pass")

        def store_importance(importance) -> None:
            # Through get_or_compute: under the lock, and a task that filled it meanwhile wins.
            importance_cache.get_or_compute(lambda: importance)

        return capture_from_paths(
            base_path,
            compared_paths,
            token_ids,
            device=placement,
            dtype=dtype,
            estimator=acm_cfg.estimator,
            bins=acm_cfg.bins,
            binning=acm_cfg.binning,
            model_names=names,
            trust_remote_code=trust_remote_code,
            progress=progress,
            importance_sink=store_importance if importance_cache is not None else None,
        )

    statistics = cache.get_or_compute(compute)
    statistics.model_names = names
    return statistics
