"""Activation capture: MI between the base's and each compared model's activations, sample by sample.

Capture points (the outputs the paper's method compares), in this order: the token embedding's output
(``embed_tokens``), each decoder layer's MLP output projection (``layers.i`` = ``mlp.down_proj``'s
output), the final norm (``norm``) and the output head (``lm_head``). One calibration sample per
forward pass, no padding. Per sample the base model runs first and keeps that sample's activations;
each compared model then runs on the same token ids and every hook hands its activation to one
worker thread that reduces it to one MI while the forward passes go on (the MI kernels release the
GIL, so counting overlaps the next layers' compute). A sample's MI values are collected once the
next sample has been handed over, so the MI of a sample's lm_head overlaps the base's pass over the
next sample; but the base computes that next sample's lm_head output (tokens x vocabulary, by far
the largest activation) only once every MI of the previous sample is done. Memory therefore holds
both models, the base's outputs of one sample at every capture point, the compared model's lm_head
output and the MI's working memory on that pair (``acm_exp.costs.capture_memory``), and no more.

The same pass can also record AIM's input importance of the base (``acm_exp.acm.importance``): on a
cache miss ``compute_mi_statistics`` attaches an importance recorder to the base during its first
compared model's pass and caches the result, so AIM on the same base and texts runs no forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from acm_exp.acm.cache import MICache, device_type, statistics_spec
from acm_exp.acm.importance import ImportanceCache, ImportanceRecorder, importance_spec
from acm_exp.acm.mi import check_estimator, mutual_information
from acm_exp.acm.modeling import (
    LAYOUTS,
    SUPPORTED_ARCHITECTURES,
    architecture,
    checked_token_ids,
    decoder_layers,
    forward,
    layout_of,
    load_causal_lm,
    submodule,
    tokenize_texts,
)
from acm_exp.acm.stats import MIStatistics
from acm_exp.devices import Placement, dtype_name, free_accelerator_memory, placement_of, resolve_dtype
from acm_exp.errors import ConfigError

log = logging.getLogger(__name__)


def capture_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(point name, module) for every capture point, in the canonical order."""
    model_type = architecture(model)
    layout = layout_of(model)

    def find(path: str) -> torch.nn.Module:
        module = submodule(model, path)
        if module is None:
            raise ConfigError(
                f"activation capture does not support architecture {model_type!r} "
                f"({type(model).__name__}): it has no module {path}; supported: {SUPPORTED_ARCHITECTURES}"
            )
        return module

    embed = find(layout.embed)
    layers = decoder_layers(model)
    points = [("embed_tokens", embed)]
    points += [(f"layers.{i}", find(f"{layout.layers}.{i}.{layout.layer_output}")) for i in range(len(layers))]
    points += [("norm", find(layout.norm)), ("lm_head", find(layout.head))]
    if model_type not in LAYOUTS:
        log.warning(
            "architecture %r is not in the checked list (%s); capturing its standard module names",
            model_type,
            SUPPORTED_ARCHITECTURES,
        )
    return points


def capture_point_names(model: torch.nn.Module) -> tuple[str, ...]:
    return tuple(name for name, _ in capture_modules(model))


def _output_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


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

    def finish_previous_samples(module, inputs) -> None:
        # Before the base computes its head output, the previous sample's MI (its lm_head pair above
        # all) must be done: one sample's head activations in memory, never two.
        wait([future for futures in pending for reduced in futures for future in reduced.values()])

    head_gate = capture_modules(base_model)[-1][1].register_forward_pre_hook(finish_previous_samples)

    def collect(futures: list[dict[str, Future]]) -> None:
        per_sample.append(np.array([[reduced[name].result() for name in points] for reduced in futures]))

    total = len(samples) if hasattr(samples, "__len__") else None
    try:
        with torch.inference_mode():
            for index, sample in enumerate(tqdm(samples, total=total, desc=description, disable=not progress)):
                ids = checked_token_ids(sample, index, [base_model, *compared_models])
                forward(base_model, ids)
                futures = []
                for model, recorder in zip(compared_models, compared_recorders, strict=False):
                    recorder.reduced = {}
                    forward(model, ids)
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
        head_gate.remove()
        worker.shutdown(wait=True, cancel_futures=True)
        base_recorder.close()
        for recorder in compared_recorders:
            recorder.close()
    if not per_sample:
        raise ConfigError("no calibration samples were given; expected at least one")
    return MIStatistics(mi=np.stack(per_sample, axis=-1), point_names=points, model_names=names)


# ---------------------------------------------------------------------------------------------
# From paths and texts


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
            importance_recorder = ImportanceRecorder(base) if importance_sink is not None and index == 0 else None
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
                free_accelerator_memory()
    finally:
        del base
        free_accelerator_memory()
    return MIStatistics.concatenate_models(parts)


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
    spec = importance_spec(base_path, texts, max_tokens=max_tokens, dtype=dtype, device_type=device_type(device))
    cache = ImportanceCache(spec, cache_dir, device=device)
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
    check_estimator(acm_cfg.estimator, acm_cfg.bins, acm_cfg.binning)
    # Cache keys record the canonical name, so bf16 and bfloat16 share an entry.
    dtype = dtype_name(acm_cfg.dtype, "acm.dtype")
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
        dtype=dtype,
        estimator=acm_cfg.estimator,
        bins=acm_cfg.bins,
        binning=acm_cfg.binning,
        device_type=device_type(device),
    )
    cache_dir = cache_dir if cache_dir is not None else acm_cfg.cache_dir
    cache = MICache(spec, cache_dir, device=device)

    def compute() -> MIStatistics:
        token_ids = tokenize_texts(base_path, texts, max_tokens, trust_remote_code)
        log.info(
            "capturing activations: %d samples (%d tokens), %d compared model(s), %s on %s",
            len(token_ids),
            sum(len(ids) for ids in token_ids),
            len(compared_paths),
            dtype,
            placement.describe(),
        )
        importance_cache = _missing_importance_cache(
            base_path, texts, max_tokens=max_tokens, dtype=dtype, device=device, cache_dir=cache_dir
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
            dtype=resolve_dtype(dtype, "acm.dtype"),
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
