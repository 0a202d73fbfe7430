"""AIM (Activation-Informed Merging): per-input-channel importance of the base model's weights.

Method (the official AIM code, ``ahnobari/ActivationAwareRelaxation``). Run the calibration set
through the base model θ0 and, for every module with a weight except the embeddings (attention
q/k/v/o_proj, MLP gate/up/down_proj, the RMSNorms, lm_head: what the official code hooks), average the
absolute value of its *input* over every token of every sample: ``a_c = mean |x_c|`` for input
channel c. Divide by the largest channel of that module, so the most active channel has importance 1.
A merge method then relaxes the merged delta Δ of that weight channel by channel:

    θ = θ0 + Δ ⊙ (1 − imp · (1 − ω))          (ω = 0.4 by default)

with the factor a row [1, in] for a linear weight [out, in] and a vector [hidden] for a norm weight
[hidden]. A channel the base relies on most (imp = 1) keeps only ω of the change, and an idle
channel (imp = 0) takes the full change. Biases get no relaxation; ``relax=linear``
(``merge.relax``) restricts it to the 2-D (linear) weights. Only the base model's activations count.

Embeddings are not hooked, but a merge written tied (lm_head = the merged embedding: a tied base with
``model_pair.tied_head=tie``) relaxes the shared [vocab, hidden] matrix by lm_head's factor over its
hidden channels: the official code assigns the relaxed lm_head to the module's weight, which a tied
model shares with its embedding, so the saved embedding is the relaxed head (``relax_on_merged``).
``merge.tied_embedding=unrelaxed`` leaves the shared matrix as the base method merged it. An untied
merge keeps its embedding unrelaxed and relaxes its own lm_head.

The statistics depend on the base, the calibration texts, max_tokens, the dtype and the device type
(``cpu``/``cuda``: bf16 kernels round differently), never on ω nor on the placement: they are cached
like ACM's MI statistics (``cache_root/aim/<key>/input_importance.npz``), and ACM's capture pass fills
that entry as a by-product (see ``capture.compute_mi_statistics``), so a sweep running ACM and then
AIM runs the base over the calibration set once.

    importance = compute_input_importance(base_dir, texts, device="cpu", dtype="bfloat16")
    factor = importance.factor_for("model.layers.0.mlp.up_proj.weight", weight.shape, omega=0.4)
"""

from __future__ import annotations

import json
import logging
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from acm_exp.acm.cache import StatisticsCache, device_type, model_identity, texts_hash
from acm_exp.acm.modeling import checked_token_ids, forward, load_causal_lm, tokenize_texts
from acm_exp.devices import dtype_name, free_accelerator_memory, resolve_dtype, resolve_placement
from acm_exp.errors import ConfigError, DataError
from acm_exp.merge_parameters import OMEGA, RELAX

log = logging.getLogger(__name__)

# Bump when the importance changes meaning (which modules, which reduction, normalization).
AIM_VERSION = 2


@dataclass
class InputImportance:
    """``importance[parameter name]``: per input channel of that weight (a linear or norm weight),
    mean |input activation| of the base over the calibration tokens divided by its maximum (values
    in [0, 1])."""

    importance: dict[str, np.ndarray]
    # Calibration tokens seen (the most any one module saw: every token, for a dense LM).
    tokens: int
    # Provenance: the cache key and directory, the spec the importance was computed from.
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.importance, dict) or not self.importance:
            raise DataError("AIM input importance holds no parameter; expected at least one non-embedding weight")
        self.importance = {str(name): _checked_vector(name, values) for name, values in self.importance.items()}
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, numbers.Integral) or self.tokens < 1:
            raise DataError(f"AIM input importance tokens={self.tokens!r}; expected a positive integer")
        self.tokens = int(self.tokens)

    def factor_for(
        self, parameter_name: str, shape: Sequence[int], omega: float, relax: str = "all"
    ) -> torch.Tensor | None:
        """The relaxation factor of the weight ``parameter_name`` of ``shape``: [1, in] for a linear
        weight [out, in], [in] for a norm weight [in]; None when that tensor has no importance
        (embeddings, biases) or ``relax="linear"`` leaves it alone (a 1-D weight)."""
        OMEGA.check(omega)
        RELAX.check(relax)
        importance = self.importance.get(parameter_name)
        if importance is None:
            return None
        shape = tuple(int(size) for size in shape)
        if len(shape) not in (1, 2) or shape[-1] != importance.size:
            raise ConfigError(
                f"{parameter_name} has shape {shape} but its AIM importance covers {importance.size} "
                f"input channels; expected a [out, {importance.size}] or [{importance.size}] weight "
                "(the base's architecture)"
            )
        if len(shape) == 1 and relax == "linear":
            return None
        return relaxation_factor(importance, omega).reshape(shape if len(shape) == 1 else (1, -1))

    def save(self, target) -> None:
        """Write an .npz (one array per parameter, the names, tokens; metadata as JSON) to a path or a
        binary handle. Callers make it atomic."""
        names = list(self.importance)
        arrays = {f"importance_{index}": self.importance[name] for index, name in enumerate(names)}
        np.savez(
            target,
            parameter_names=np.array(names),
            tokens=np.array(self.tokens),
            metadata=np.array(json.dumps(self.metadata, sort_keys=True)),
            **arrays,
        )

    @classmethod
    def load(cls, path: str | Path) -> InputImportance:
        with np.load(path, allow_pickle=False) as data:
            names = [str(name) for name in data["parameter_names"]]
            return cls(
                importance={name: data[f"importance_{index}"] for index, name in enumerate(names)},
                tokens=int(data["tokens"]),
                metadata=json.loads(str(data["metadata"])),
            )


def _checked_vector(name: str, values) -> np.ndarray:
    vector = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if vector.ndim != 1 or vector.size == 0:
        raise DataError(
            f"AIM importance of {name} has shape {vector.shape}; expected a non-empty vector (one value "
            "per input channel)"
        )
    if not np.isfinite(vector).all():
        raise DataError(f"AIM importance of {name} contains NaN or Inf values; expected finite values")
    if vector.min() < 0 or vector.max() > 1:
        raise DataError(
            f"AIM importance of {name} spans [{vector.min():g}, {vector.max():g}]; expected values in "
            "[0, 1] (normalized by the module's maximum)"
        )
    return vector


def relaxation_factor(importance: np.ndarray | torch.Tensor, omega: float) -> torch.Tensor:
    """1 − imp · (1 − ω) as a float32 row [1, in], to multiply a merged delta of shape [out, in]."""
    OMEGA.check(omega)
    values = torch.as_tensor(
        np.asarray(importance.detach().cpu() if isinstance(importance, torch.Tensor) else importance, dtype=np.float64)
    )
    if values.ndim != 1 or values.numel() == 0:
        raise DataError(f"AIM importance has shape {tuple(values.shape)}; expected a non-empty vector")
    return (1.0 - values * (1.0 - float(omega))).to(torch.float32).reshape(1, -1)


def weight_factors(
    importance: InputImportance,
    shapes: dict[str, Sequence[int]],
    omega: float,
    relax: str = "all",
    *,
    tied_through: tuple[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """The relaxation factor of every tensor of ``shapes`` (name -> shape: what the merge writes) that
    AIM relaxes.

    ``tied_through`` = (embedding name, head name) when the merge writes the head as the merged
    embedding and relaxes that shared matrix through the head: the embedding then takes the head's
    factor (the head's input channels are the embedding's hidden channels).
    """
    factors = {}
    for name, shape in shapes.items():
        factor = importance.factor_for(name, shape, omega, relax)
        if factor is not None:
            factors[name] = factor
    if tied_through is not None:
        embedding, head = tied_through
        if embedding in shapes and head in importance.importance:
            factor = importance.factor_for(head, shapes[embedding], omega, relax)
            if factor is not None:
                factors[embedding] = factor
    return factors


# ---------------------------------------------------------------------------------------------
# Recording


def _module_input(args: tuple, kwargs: dict) -> torch.Tensor:
    # Linear's forward names its input `input`, the RMSNorms `hidden_states`.
    return args[0] if args else kwargs.get("input", kwargs.get("hidden_states"))


def relaxable_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every module holding a weight of its own, embeddings excepted: the modules
    the official AIM code hooks (``hasattr(m, "weight") and "embed" not in name``)."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module._parameters.get("weight"), torch.Tensor)
        and not isinstance(module, torch.nn.Embedding)
        and "embed" not in name
    ]


class ImportanceRecorder:
    """Forward pre-hooks on every relaxable module of ``model`` (linear layers, norms, lm_head)
    summing |input| per channel.

    Memory: one float64 vector per module (its input width), whatever the number of samples.
    A tied ``lm_head`` is still its own Linear module, so it gets its own entry.
    """

    def __init__(self, model: torch.nn.Module):
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        modules = relaxable_modules(model)
        if not modules:
            raise ConfigError(
                f"{type(model).__name__} has no module with a weight besides its embeddings; AIM needs weights to relax"
            )
        self._names = [f"{name}.weight" for name, _ in modules]
        self._handles = [
            module.register_forward_pre_hook(self._hook(parameter), with_kwargs=True)
            for parameter, (_, module) in zip(self._names, modules, strict=False)
        ]

    def _hook(self, parameter: str):
        def hook(module, args, kwargs):
            inputs = _module_input(args, kwargs).detach()
            rows = inputs.reshape(-1, inputs.shape[-1])
            # float64 accumulation: a long calibration set adds up many bf16 magnitudes.
            channel_sums = rows.abs().sum(dim=0, dtype=torch.float64)
            # Out of place: an in-place update of a tensor made under inference_mode fails outside it.
            previous = self._sums.get(parameter)
            self._sums[parameter] = channel_sums if previous is None else previous + channel_sums
            self._counts[parameter] = self._counts.get(parameter, 0) + rows.shape[0]

        return hook

    def result(self, metadata: dict[str, Any] | None = None) -> InputImportance:
        """The max-normalized mean |input| of every Linear that has seen at least one token."""
        unused = [name for name in self._names if not self._counts.get(name)]
        if len(unused) == len(self._names):
            raise ConfigError("AIM recorded no tokens; expected at least one forward pass over a calibration sample")
        if unused:
            log.warning(
                "AIM: %d module(s) saw no input and get no relaxation: %s",
                len(unused),
                ", ".join(unused[:5]) + (" ..." if len(unused) > 5 else ""),
            )
        importance = {
            name: normalized_importance(self._sums[name].cpu().numpy() / self._counts[name])
            for name in self._names
            if self._counts.get(name)
        }
        return InputImportance(importance=importance, tokens=max(self._counts.values()), metadata=dict(metadata or {}))

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> ImportanceRecorder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def normalized_importance(mean_magnitude: np.ndarray) -> np.ndarray:
    """Divide by the largest channel; a module whose inputs were all zero has importance zero."""
    largest = float(mean_magnitude.max())
    return mean_magnitude / largest if largest > 0 else np.zeros_like(mean_magnitude)


def collect_input_importance(
    model: torch.nn.Module,
    samples: Iterable[Sequence[int] | torch.Tensor],
    *,
    progress: bool = True,
    description: str = "AIM input importance",
) -> InputImportance:
    """AIM importance of ``model`` (the base) over ``samples``: token id lists or LongTensors, one
    calibration sample per forward pass (no padding)."""
    total = len(samples) if hasattr(samples, "__len__") else None
    recorder = ImportanceRecorder(model)
    count = 0
    try:
        with torch.inference_mode():
            for index, sample in enumerate(tqdm(samples, total=total, desc=description, disable=not progress)):
                forward(model, checked_token_ids(sample, index, [model]))
                count += 1
        if count == 0:
            raise ConfigError("no calibration samples were given; expected at least one")
        return recorder.result({"num_samples": count})
    finally:
        recorder.close()


# ---------------------------------------------------------------------------------------------
# From paths and texts, with the cache


class ImportanceCache(StatisticsCache):
    """AIM input importance of a base model: ``cache_root/aim/<key>``."""

    kind = "aim"
    file_name = "input_importance.npz"
    statistics_type = InputImportance
    label = "AIM input importance"


def importance_spec(
    base_path: str | Path, texts: Sequence[str], *, max_tokens: int | None, dtype: str, device_type: str
) -> dict[str, Any]:
    """Everything the AIM importance depends on, the device type ('cpu', 'cuda') included but not the
    placement (see ``acm_exp.acm.cache``); its hash is the cache key."""
    return {
        "aim_version": AIM_VERSION,
        "base": model_identity(base_path),
        "texts_sha256": texts_hash(texts),
        "num_texts": len(texts),
        "max_tokens": max_tokens,
        "dtype": dtype,
        "device_type": device_type,
    }


def compute_input_importance(
    base_path: str | Path,
    texts: Sequence[str],
    *,
    device: Any,
    dtype: str,
    max_memory: Any = None,
    offload_dir: str | None = None,
    max_tokens: int | None = None,
    cache_dir: str | Path | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> InputImportance:
    """AIM importance of the base on the calibration ``texts``, from the cache when present (no forward
    pass; ACM's capture of the same base, texts, max_tokens and dtype fills it too). ``device``,
    ``max_memory``, ``offload_dir``: the placement (``devices.resolve_placement``; acm.* settings); a
    dispatched base records each module's input on the device that module runs on."""
    # Cache keys record the canonical name, as ACM's capture does when it fills this cache.
    dtype = dtype_name(dtype, "acm.dtype")
    placement = resolve_placement(device, max_memory, offload_dir, setting="acm")
    if not texts:
        raise ConfigError("compute_input_importance needs at least one calibration text")
    spec = importance_spec(
        base_path, texts, max_tokens=max_tokens, dtype=dtype, device_type=device_type(placement.primary)
    )
    cache = ImportanceCache(spec, cache_dir, device=placement.primary)

    def compute() -> InputImportance:
        token_ids = tokenize_texts(base_path, texts, max_tokens, trust_remote_code)
        log.info(
            "AIM: recording input activations of %s: %d samples (%d tokens), %s on %s",
            base_path,
            len(token_ids),
            sum(len(ids) for ids in token_ids),
            dtype,
            placement.describe(),
        )
        model = load_causal_lm(base_path, placement, resolve_dtype(dtype, "acm.dtype"), trust_remote_code)
        try:
            return collect_input_importance(model, token_ids, progress=progress)
        finally:
            del model
            free_accelerator_memory()

    return cache.get_or_compute(compute)
