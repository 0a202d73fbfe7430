"""Sens-Merging: per-layer sensitivity of each model, and the layer-wise merge weights it gives.

Sensitivity (Sens-Merging; the L2S code's ``layer_sensitivity_sens.py``). For one model with parameters θ
and its own calibration pairs
(prompt, answer), the loss L of a sample is the causal-LM cross-entropy over the *answer* tokens
only (prompt positions carry the label -100). The sensitivity of decoder layer l sums, over the
samples and over every parameter of that layer (attention, MLP, both norms, biases), the first-order
estimate of the loss change if the parameter were removed:

    S[l] = Σ_samples Σ_{θ ∈ layer l} |θ ⊙ ∇θ L|

and the per-layer vector is L2-normalized across layers: s = S / ||S||₂. It is computed for the
base θ0 and for the fine-tuned model θ_ft separately, each on its own (prompt, answer) pairs.

Weights. Per layer l, a softmax with temperature T over the two models' α-weighted sensitivities,
scaled so that the two weights sum to 2 (both 1 when the sensitivities balance):

    [c_base[l], c_ft[l]] = 2 · softmax([(1 − α) · s_base[l], α · s_ft[l]] / T)

Merge. With τ = θ_ft − θ0, the tensors of decoder layer l become c_base[l] · θ0 + c_ft[l] · α · τ;
every other tensor (embeddings, final norm, lm_head) is plain task arithmetic θ0 + α · τ. The merge
engine computes Δ = α · τ (task arithmetic with scale α) and ``SensCoefficients.adjustment_for``
supplies (base_factor, delta_factor) = (c_base[l], c_ft[l]) for it.

The paper's α and T per model size live in conf/paper_defaults/.

Memory: gradients are reduced as soon as autograd has accumulated them (a post-accumulate-grad
hook adds |θ ⊙ ∇θ L| to its layer's sum and drops the gradient), and the parameters outside the
decoder layers are frozen, so at no point does a full set of gradients exist beside the weights.

Placement (``sens.device``, ``sens.max_memory``, ``sens.offload_dir``; see
``devices.resolve_placement``): a model dispatched by accelerate over several devices keeps each
layer's running sum on the device that layer runs on. Modules that accelerate offloads (to the CPU
beside GPUs, or to disk) hold ``meta`` parameters and get their weights as fresh tensors at each
forward; an accelerate hook appended after the offload hook reduces those tensors' gradients, so
offloaded layers count like resident ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from acm_exp.acm.cache import StatisticsCache, model_identity
from acm_exp.acm.coefficients import point_for_parameter, save_line_plot
from acm_exp.acm.modeling import decoder_layers, input_device, load_causal_lm, load_tokenizer
from acm_exp.acm.sens_texts import describe_skipped
from acm_exp.coefficients_file import SensCoefficientsFile, read_coefficients, write_coefficients
from acm_exp.devices import dtype_name, free_accelerator_memory, resolve_dtype, resolve_placement
from acm_exp.errors import ConfigError, DataError
from acm_exp.merge_parameters import ALPHA, TEMPERATURE

log = logging.getLogger(__name__)

# Bump when the sensitivity changes meaning (loss, masking, tokenization, reduction).
SENS_VERSION = 1
IGNORE_INDEX = -100  # the label that torch's cross-entropy (and transformers' loss) skips

# Forward passes run by this module (one per example and model): lets tests check that a cached
# computation runs none.
SENSITIVITY_PASSES = 0


# ---------------------------------------------------------------------------------------------
# The statistics


@dataclass
class LayerSensitivity:
    """``raw[l]`` = Σ over samples and over the parameters of decoder layer l of |θ ⊙ ∇θ L|."""

    raw: np.ndarray
    num_samples: int
    # Provenance: the cache key and directory, the spec the statistics were computed from.
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.raw = np.asarray(self.raw, dtype=np.float64)
        if self.raw.ndim != 1 or self.raw.size == 0:
            raise DataError(f"layer sensitivity has shape {self.raw.shape}; expected one value per decoder layer")
        if not np.isfinite(self.raw).all():
            raise DataError("layer sensitivity contains NaN or Inf; expected finite sums of |θ ⊙ ∇L|")
        if (self.raw < 0).any():
            raise DataError(f"layer sensitivity has a negative value ({self.raw.min()}); expected sums of |θ ⊙ ∇L|")
        if (
            isinstance(self.num_samples, bool)
            or not isinstance(self.num_samples, (int, np.integer))
            or self.num_samples < 1
        ):
            raise DataError(f"layer sensitivity num_samples={self.num_samples!r}; expected a positive integer")
        self.num_samples = int(self.num_samples)

    @property
    def num_layers(self) -> int:
        return self.raw.size

    @property
    def normalized(self) -> np.ndarray:
        """raw / ||raw||₂ (the per-layer vector Sens-Merging's softmax sees)."""
        return l2_normalize(self.raw)

    def save(self, target) -> None:
        """Write an .npz (the sums and the sample count; metadata as JSON) to a path or a binary handle.

        Callers make it atomic."""
        np.savez(
            target,
            raw=self.raw,
            num_samples=np.array(self.num_samples),
            metadata=np.array(json.dumps(self.metadata, sort_keys=True)),
        )

    @classmethod
    def load(cls, path: str | Path) -> LayerSensitivity:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                raw=data["raw"], num_samples=int(data["num_samples"]), metadata=json.loads(str(data["metadata"]))
            )


def l2_normalize(values: np.ndarray) -> np.ndarray:
    """values / ||values||₂; DataError when that is undefined (all zero, or not finite)."""
    values = np.asarray(values, dtype=np.float64)
    norm = float(np.linalg.norm(values))
    if not np.isfinite(values).all() or not math.isfinite(norm):
        raise DataError("layer sensitivity is not finite; expected finite sums of |θ ⊙ ∇L|")
    if norm == 0.0:
        raise DataError(
            "layer sensitivity is zero in every layer; expected a nonzero gradient (are the answers "
            "empty, or the model's weights zero?)"
        )
    return values / norm


# ---------------------------------------------------------------------------------------------
# Examples: token ids with the loss restricted to the answer


class UnscorableExample(ConfigError):
    """An example that leaves no answer token to score: its answer is empty (``reason`` "empty_answer")
    or its prompt fills ``max_tokens`` ("too_long"). Such calibration samples are skipped and counted."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def answer_only_example(
    tokenizer, prompt: str, answer: str, max_tokens: int | None = None
) -> tuple[list[int], list[int]]:
    """(input ids of prompt + answer, labels with -100 over the prompt).

    Prompt and answer are tokenized separately and concatenated, so the boundary between them is
    exact (joint tokenization could merge the last prompt and first answer characters into one
    token). The prompt gets the tokenizer's special tokens (a BOS where the model uses one); the
    answer ends with the EOS token when the tokenizer has one, so the model is also judged on
    stopping. ``max_tokens`` keeps the first tokens (truncation from the right).
    """
    check_max_tokens(max_tokens)
    if not isinstance(prompt, str) or not isinstance(answer, str):
        raise ConfigError(
            f"a Sens-Merging example is ({type(prompt).__name__}, {type(answer).__name__}); expected "
            "(prompt: str, answer: str)"
        )
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if not answer_ids:
        raise UnscorableExample(
            f"the answer {answer[:40]!r} tokenizes to no tokens; expected a non-empty answer", "empty_answer"
        )
    if tokenizer.eos_token_id is not None:
        answer_ids.append(int(tokenizer.eos_token_id))
    input_ids = prompt_ids + answer_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    if max_tokens is not None:
        input_ids, labels = input_ids[:max_tokens], labels[:max_tokens]
    if not _has_answer_target(labels):
        raise UnscorableExample(
            f"the example with prompt {prompt[:40]!r} keeps no predictable answer token "
            f"(prompt {len(prompt_ids)} tokens, max_tokens={max_tokens}); expected max_tokens above the "
            "prompt length",
            "too_long",
        )
    return input_ids, labels


def tokenize_examples(
    tokenizer, examples_text: Sequence[tuple[str, str]], max_tokens: int | None
) -> tuple[list[tuple[list[int], list[int]]], dict[str, int]]:
    """(the scorable examples as ``answer_only_example`` pairs, how many were skipped and why).

    The L2S code truncates each text to 2,048 tokens and skips a sample that fails; here a sample
    whose prompt leaves no answer token within ``max_tokens`` ("too_long") or whose answer is empty
    ("empty_answer") is skipped and counted, and a longer answer is truncated from the right."""
    examples, skipped = [], Counter()
    for prompt, answer in examples_text:
        try:
            examples.append(answer_only_example(tokenizer, prompt, answer, max_tokens))
        except UnscorableExample as error:
            skipped[error.reason] += 1
    return examples, dict(skipped)


def check_max_tokens(max_tokens: int | None) -> None:
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2):
        raise ConfigError(
            f"max_tokens={max_tokens!r}; expected an integer of at least 2 (a prompt token and an answer token) or null"
        )


def _has_answer_target(labels: Sequence[int]) -> bool:
    # The causal-LM loss predicts token t from tokens < t: a label at position 0 is never a target.
    return any(label != IGNORE_INDEX for label in labels[1:])


def _example_tensors(example, index: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) of one example as (1, n) LongTensors, validated."""
    try:
        input_ids, labels = example
    except (TypeError, ValueError):
        raise ConfigError(
            f"sensitivity example {index} is a {type(example).__name__}; expected a pair (input_ids, labels)"
        ) from None
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1)
    targets = torch.as_tensor(labels, dtype=torch.long).reshape(1, -1)
    if ids.shape != targets.shape or ids.shape[1] == 0:
        raise ConfigError(
            f"sensitivity example {index} has {ids.shape[1]} input ids and {targets.shape[1]} labels; "
            "expected equally many, at least one"
        )
    if not _has_answer_target(targets[0].tolist()):
        raise ConfigError(
            f"sensitivity example {index} has no answer label after its first token; expected at least "
            f"one label other than {IGNORE_INDEX}"
        )
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ConfigError(
            f"sensitivity example {index} has token ids in [{int(ids.min())}, {int(ids.max())}]; "
            f"expected ids in [0, {vocab_size}) (the model's vocabulary)"
        )
    return ids, targets


# ---------------------------------------------------------------------------------------------
# Collection on a loaded model


def _layer_parameters(layers: torch.nn.ModuleList) -> list[list[torch.nn.Parameter]]:
    return [list(layer.parameters()) for layer in layers]


def _is_offloaded(module: torch.nn.Module) -> bool:
    """accelerate offloads this module's own weights: they sit on ``meta`` between forwards."""
    return hasattr(module, "_hf_hook") and any(
        parameter.device.type == "meta" for parameter in module.parameters(recurse=False)
    )


class _GradientReducer:
    """Adds |θ ⊙ ∇θ L| (float32) to its layer's total the moment autograd has accumulated ∇θ L.

    The gradient is dropped right away, so the model never holds more than the gradient being
    reduced; the layer parameters must not already hold a gradient (we set it to None each time).
    Each layer's total lives on the device its weights are used on.
    """

    def __init__(self, layers: torch.nn.ModuleList):
        from accelerate.hooks import ModelHook, add_hook_to_module

        self._totals: list[torch.Tensor | None] = [None] * len(layers)
        self._handles = []
        # Hooks on an offloaded module's weights of the current pass (tensors dropped after it).
        self._pass_handles = []
        self._offload_hooks: list[tuple[torch.nn.Module, Any]] = []
        reducer = self

        class _ReduceMaterializedWeights(ModelHook):
            # Runs after accelerate's offload hook has put this forward's weights on the module.
            def __init__(self, layer: int):
                self.layer = layer

            def pre_forward(self, module, *args, **kwargs):
                for parameter in module._parameters.values():
                    if parameter is not None and parameter.requires_grad:
                        reducer._pass_handles.append(
                            parameter.register_post_accumulate_grad_hook(reducer._hook(self.layer))
                        )
                return args, kwargs

        hooked: set[int] = set()  # a parameter shared by two modules is counted once, as layer.parameters() does
        for index, layer in enumerate(layers):
            for module in layer.modules():
                if _is_offloaded(module):
                    self._offload_hooks.append((module, module._hf_hook))
                    add_hook_to_module(module, _ReduceMaterializedWeights(index), append=True)
                    continue
                for parameter in module.parameters(recurse=False):
                    if id(parameter) not in hooked:
                        hooked.add(id(parameter))
                        self._handles.append(parameter.register_post_accumulate_grad_hook(self._hook(index)))

    def _hook(self, layer: int):
        def hook(parameter: torch.Tensor) -> None:
            with torch.no_grad():
                contribution = (parameter.float() * parameter.grad.float()).abs().sum()
                if self._totals[layer] is None:
                    self._totals[layer] = torch.zeros((), dtype=torch.float32, device=contribution.device)
                self._totals[layer] += contribution.to(self._totals[layer].device)
            parameter.grad = None

        return hook

    def take(self) -> np.ndarray:
        """The totals of the last backward pass (float64), reset to zero."""
        values = np.array([0.0 if total is None else float(total.double()) for total in self._totals])
        self._totals = [None] * len(self._totals)
        for handle in self._pass_handles:
            handle.remove()
        self._pass_handles = []
        return values

    def close(self) -> None:
        from accelerate.hooks import add_hook_to_module

        for handle in self._handles + self._pass_handles:
            handle.remove()
        self._handles, self._pass_handles = [], []
        for module, original in self._offload_hooks:
            add_hook_to_module(module, original)
        self._offload_hooks = []


def _enable_checkpointing(model: torch.nn.Module, layers: torch.nn.ModuleList) -> None:
    # Non-reentrant checkpointing gives the layer parameters their gradients even though the
    # (frozen) embedding output does not require grad.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    # transformers checkpoints a decoder layer only when that layer is in training mode. Flag just the
    # layer modules themselves (not their children), so attention and any dropout stay in eval mode.
    for layer in layers:
        layer.training = True


def _disable_checkpointing(model: torch.nn.Module, layers: torch.nn.ModuleList) -> None:
    for layer in layers:
        layer.training = False
    if hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()
    if hasattr(model, "disable_input_require_grads"):
        model.disable_input_require_grads()


def _forward_backward(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> float:
    global SENSITIVITY_PASSES
    SENSITIVITY_PASSES += 1
    device = input_device(model)
    output = model(input_ids=ids.to(device), labels=labels.to(device), use_cache=False)
    loss_value = float(output.loss.detach())
    if not math.isfinite(loss_value):
        raise DataError(f"the answer loss is {loss_value}; expected a finite cross-entropy (try dtype=float32)")
    output.loss.backward()
    return loss_value


def collect_layer_sensitivity(
    model: torch.nn.Module,
    examples: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    gradient_checkpointing: bool = False,
    progress: bool = True,
    description: str = "Sens-Merging sensitivity",
) -> LayerSensitivity:
    """Σ over ``examples`` of Σ |θ ⊙ ∇θ L| per decoder layer of ``model``.

    ``examples``: (input_ids, labels) pairs, e.g. from ``answer_only_example``; one per forward and
    backward pass (batch 1, no padding). L is the model's own causal-LM loss for ``labels`` (the
    mean cross-entropy over the positions whose label is not -100). The model runs in eval mode (no
    dropout) with gradients enabled; its modes, ``requires_grad`` flags and gradients are restored.
    """
    if len(examples) == 0:
        raise ConfigError("no sensitivity examples were given; expected at least one (prompt, answer) pair")
    layers = decoder_layers(model)
    parameters_by_layer = _layer_parameters(layers)
    vocab_size = model.get_input_embeddings().num_embeddings
    tensors = [_example_tensors(example, index, vocab_size) for index, example in enumerate(examples)]

    was_training = model.training
    requires_grad = {parameter: parameter.requires_grad for parameter in model.parameters()}
    layer_parameter_ids = {id(parameter) for parameters in parameters_by_layer for parameter in parameters}
    model.eval()
    # Only the layers' gradients are needed: freezing the embeddings, final norm and head saves
    # their (vocabulary-sized) gradients; the gradients still flow through their activations.
    for parameter in requires_grad:
        parameter.requires_grad_(id(parameter) in layer_parameter_ids)
        parameter.grad = None
    reducer = _GradientReducer(layers)
    if gradient_checkpointing:
        _enable_checkpointing(model, layers)
    totals = np.zeros(len(layers), dtype=np.float64)
    answer_tokens = 0
    losses = []
    try:
        with torch.enable_grad():
            for ids, labels in tqdm(tensors, desc=description, disable=not progress):
                losses.append(_forward_backward(model, ids, labels))
                totals += reducer.take()
                answer_tokens += int((labels[0, 1:] != IGNORE_INDEX).sum())
    finally:
        reducer.close()
        if gradient_checkpointing:
            _disable_checkpointing(model, layers)
        for parameter, flag in requires_grad.items():
            parameter.grad = None
            parameter.requires_grad_(flag)
        model.train(was_training)
    metadata = {
        "num_tokens": sum(ids.shape[1] for ids, _ in tensors),
        "num_answer_tokens": answer_tokens,
        "mean_answer_loss": float(np.mean(losses)),
    }
    return LayerSensitivity(raw=totals, num_samples=len(tensors), metadata=metadata)


# ---------------------------------------------------------------------------------------------
# From a path and texts, cached


class SensitivityCache(StatisticsCache):
    """Layer sensitivity of Sens-Merging: ``cache_root/sens/<key>``, one entry per model."""

    kind = "sens"
    file_name = "layer_sensitivity.npz"
    statistics_type = LayerSensitivity
    label = "layer sensitivity"


def examples_hash(examples_text: Sequence[tuple[str, str]]) -> str:
    pairs = [[prompt, answer] for prompt, answer in examples_text]
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()


def sensitivity_spec(
    model_path: str | Path, examples_text: Sequence[tuple[str, str]], *, max_tokens: int | None, dtype: str
) -> dict[str, Any]:
    """Everything a model's layer sensitivity depends on (not the device: see statistics_spec); its
    hash is the cache key.

    Gradient checkpointing recomputes the same activations, so it is not part of the key.
    """
    return {
        "sens_version": SENS_VERSION,
        "model": model_identity(model_path),
        "examples_sha256": examples_hash(examples_text),
        "num_examples": len(examples_text),
        "max_tokens": max_tokens,
        "dtype": dtype,
    }


def _check_examples_text(examples_text: Sequence[tuple[str, str]]) -> None:
    if not examples_text:
        raise ConfigError(
            "no Sens-Merging calibration examples were given; expected at least one (prompt, answer) pair"
        )
    for index, example in enumerate(examples_text):
        if not (
            isinstance(example, (tuple, list)) and len(example) == 2 and all(isinstance(text, str) for text in example)
        ):
            raise ConfigError(
                f"Sens-Merging example {index} is {type(example).__name__} {str(example)[:60]!r}; "
                "expected a (prompt: str, answer: str) pair"
            )


def compute_layer_sensitivity(
    model_path: str | Path,
    examples_text: Sequence[tuple[str, str]],
    *,
    device: Any,
    dtype: str,
    max_memory: Any = None,
    offload_dir: str | None = None,
    max_tokens: int | None = None,
    gradient_checkpointing: bool = False,
    cache_dir: str | Path | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> LayerSensitivity:
    """The layer sensitivity of the model at ``model_path`` on its own (prompt, answer) pairs.

    Reads the cache first (a hit runs no forward pass); otherwise tokenizes with the model's own
    tokenizer, loads the model on ``device`` in ``dtype`` (dispatched by accelerate over several devices
    with ``max_memory`` / ``offload_dir``: see ``devices.resolve_placement``), collects and stores the result. The
    cache key and directory are in ``sensitivity.metadata`` ("cache_key", "cache_dir").
    """
    _check_examples_text(examples_text)
    check_max_tokens(max_tokens)
    # Cache keys record the canonical name, so bf16 and bfloat16 share an entry.
    dtype = dtype_name(dtype, "sens.dtype")
    placement = resolve_placement(device, max_memory, offload_dir, setting="sens")
    spec = sensitivity_spec(model_path, examples_text, max_tokens=max_tokens, dtype=dtype)
    cache = SensitivityCache(spec, cache_dir, device=placement.primary)

    def compute() -> LayerSensitivity:
        tokenizer = load_tokenizer(model_path, trust_remote_code)
        examples, skipped = tokenize_examples(tokenizer, examples_text, max_tokens)
        if not examples:
            raise DataError(
                f"Sens-Merging: none of the {len(examples_text)} examples of {model_path} can be scored "
                f"({describe_skipped(skipped, max_tokens)}); expected at least one with an answer token "
                "within sens.max_tokens"
            )
        if skipped:
            log.info(
                "Sens-Merging: %s scored on %d of %d examples; skipped %s",
                model_path,
                len(examples),
                len(examples_text),
                describe_skipped(skipped, max_tokens),
            )
        log.info(
            "layer sensitivity of %s: %d examples (%d tokens), %s on %s%s",
            model_path,
            len(examples),
            sum(len(ids) for ids, _ in examples),
            dtype,
            placement.describe(),
            ", gradient checkpointing" if gradient_checkpointing else "",
        )
        model = load_causal_lm(model_path, placement, resolve_dtype(dtype, "sens.dtype"), trust_remote_code)
        try:
            sensitivity = collect_layer_sensitivity(
                model,
                examples,
                gradient_checkpointing=gradient_checkpointing,
                progress=progress,
                description=f"Sens-Merging sensitivity ({Path(model_path).name})",
            )
        finally:
            del model
            free_accelerator_memory()
        sensitivity.metadata = {
            **sensitivity.metadata,
            "model": str(model_path),
            "num_examples": len(examples_text),
            "skipped": skipped,
        }
        return sensitivity

    sensitivity = cache.get_or_compute(compute)
    log.info(
        "layer sensitivity of %s (normalized): %s", model_path, np.array2string(sensitivity.normalized, precision=4)
    )
    return sensitivity


# ---------------------------------------------------------------------------------------------
# Merge weights


def sens_layer_weights(
    s_base: np.ndarray, s_ft: np.ndarray, alpha: float, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """(c_base, c_ft) per layer: 2 · softmax([(1 − α) · s_base[l], α · s_ft[l]] / T); c_base + c_ft = 2."""
    ALPHA.check(alpha)
    TEMPERATURE.check(temperature)
    base = np.asarray(s_base, dtype=np.float64)
    finetuned = np.asarray(s_ft, dtype=np.float64)
    if base.ndim != 1 or base.size == 0 or base.shape != finetuned.shape:
        raise DataError(
            f"sensitivities of shapes {base.shape} (base) and {finetuned.shape} (fine-tuned); expected "
            "two vectors with one value per decoder layer, of equal length"
        )
    if not (np.isfinite(base).all() and np.isfinite(finetuned).all()):
        raise DataError("sensitivities contain NaN or Inf; expected finite values")
    logits = np.stack([(1.0 - alpha) * base, alpha * finetuned]) / temperature
    # Subtracting the per-layer maximum keeps exp() from overflowing; the softmax is unchanged.
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    weights = 2.0 * weights / weights.sum(axis=0, keepdims=True)
    return weights[0], weights[1]


def layer_index_for_parameter(name: str) -> int | None:
    """Decoder layer of checkpoint tensor ``name`` ("model.layers.3.…" → 3); None outside the layers."""
    try:
        point = point_for_parameter(name)
    except ConfigError:
        return None
    return int(point.split(".", 1)[1]) if point.startswith("layers.") else None


@dataclass
class SensCoefficients:
    """Per-layer Sens-Merging weights of the base (c_base) and of α·τ (c_ft), with their inputs."""

    c_base: np.ndarray
    c_ft: np.ndarray
    alpha: float
    temperature: float
    # The L2-normalized sensitivities the weights came from.
    s_base: np.ndarray
    s_ft: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ALPHA.check(self.alpha)
        TEMPERATURE.check(self.temperature)
        arrays = {
            name: np.asarray(getattr(self, name), dtype=np.float64) for name in ("c_base", "c_ft", "s_base", "s_ft")
        }
        lengths = {name: values.shape for name, values in arrays.items()}
        if len(set(lengths.values())) != 1 or arrays["c_base"].ndim != 1 or arrays["c_base"].size == 0:
            raise ConfigError(
                f"Sens-Merging coefficients of shapes {lengths}; expected one value per decoder layer each"
            )
        for name, values in arrays.items():
            setattr(self, name, values)
        self.alpha, self.temperature = float(self.alpha), float(self.temperature)

    @property
    def num_layers(self) -> int:
        return self.c_base.size

    def adjustment_for(self, parameter_name: str) -> tuple[float, float]:
        """(base_factor, delta_factor) for a checkpoint tensor, the merged tensor being
        base_factor · θ0 + delta_factor · α·τ: (c_base[l], c_ft[l]) inside decoder layer l, else (1, 1)."""
        layer = layer_index_for_parameter(parameter_name)
        if layer is None:
            return 1.0, 1.0
        if layer >= self.num_layers:
            raise ConfigError(
                f"parameter {parameter_name!r} is in decoder layer {layer} but the Sens-Merging weights "
                f"cover {self.num_layers} layers; expected sensitivities of the merged architecture"
            )
        return float(self.c_base[layer]), float(self.c_ft[layer])

    def to_file(self) -> SensCoefficientsFile:
        """What coefficients.json holds: per layer the weights and the sensitivities."""
        return SensCoefficientsFile(
            alpha=self.alpha,
            temperature=self.temperature,
            c_base=self.c_base,
            c_ft=self.c_ft,
            s_base=self.s_base,
            s_ft=self.s_ft,
            metadata=self.metadata,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.to_file().to_dict()

    def to_json(self, path: str | Path) -> Path:
        """Write the per-layer weights and sensitivities (atomically)."""
        return write_coefficients(path, self.to_file())

    @classmethod
    def from_json(cls, path: str | Path) -> SensCoefficients:
        stored = read_coefficients(path, SensCoefficientsFile)
        return cls(
            c_base=stored.c_base,
            c_ft=stored.c_ft,
            alpha=stored.alpha,
            temperature=stored.temperature,
            s_base=stored.s_base,
            s_ft=stored.s_ft,
            metadata=stored.metadata,
        )

    def plot(self, path: str | Path) -> Path:
        """Write a PNG: c_base and c_ft per decoder layer."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        layers = np.arange(self.num_layers)
        figure, axis = plt.subplots(figsize=(max(6.0, 0.25 * (self.num_layers + 3)), 3.6))
        axis.plot(layers, self.c_base, marker="o", markersize=3, label="c_base (weight of θ0)")
        axis.plot(layers, self.c_ft, marker="o", markersize=3, label="c_ft (weight of α·τ)")
        axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        axis.set_xlabel("layer")
        axis.set_ylabel("Sens-Merging weight")
        axis.set_title(f"Sens-Merging weights (α={self.alpha:g}, T={self.temperature:g})", fontsize=9)
        return save_line_plot(figure, axis, path)


def compute_sens_coefficients(
    base: LayerSensitivity,
    finetuned: LayerSensitivity,
    alpha: float,
    temperature: float,
    metadata: dict[str, Any] | None = None,
) -> SensCoefficients:
    """The Sens-Merging weights from the two models' layer sensitivities."""
    if base.num_layers != finetuned.num_layers:
        raise ConfigError(
            f"the base has {base.num_layers} decoder layers and the fine-tuned model "
            f"{finetuned.num_layers}; expected the same architecture"
        )
    s_base, s_ft = base.normalized, finetuned.normalized
    c_base, c_ft = sens_layer_weights(s_base, s_ft, alpha, temperature)
    log.info(
        "Sens-Merging weights (α=%g, T=%g): c_base in [%.4f, %.4f], c_ft in [%.4f, %.4f]",
        alpha,
        temperature,
        c_base.min(),
        c_base.max(),
        c_ft.min(),
        c_ft.max(),
    )
    provenance = {"base": base.metadata, "finetuned": finetuned.metadata, **(metadata or {})}
    return SensCoefficients(
        c_base=c_base, c_ft=c_ft, alpha=alpha, temperature=temperature, s_base=s_base, s_ft=s_ft, metadata=provenance
    )
