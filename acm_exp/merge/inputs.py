"""A merge's inputs and settings, checked before any weight is read.

``open_inputs`` opens every checkpoint's headers and checks that the models can be merged tensor by
tensor: architectures, tensor names and shapes, vocabularies (``acm_exp.merge.vocabulary``), and the
dtype the output is written in. ``preflight`` checks what else needs no weight: the device, the shard
plan, the tokenizer to copy, the output's place and free space (``acm_exp.merge.publish``).

The output dtype, unless ``merge.dtype`` sets it, is the dtype the base's floating-point tensors are
stored in (the one holding most of their entries). A base ``config.json`` that declares another one
(``torch_dtype``/``dtype``) is warned about and not followed: the stored weights are what is merged,
and a narrower declared dtype (float16 over bfloat16 weights) would overflow. The merged model's
``config.json`` declares the dtype it is written in.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from acm_exp.devices import resolve_device, resolve_dtype
from acm_exp.errors import ConfigError
from acm_exp.merge.checkpoint import (
    EMBEDDING_NAME,
    LM_HEAD_NAME,
    Checkpoint,
    PlannedTensor,
    ShardPlan,
    open_checkpoint,
    plan_shards,
)
from acm_exp.merge.publish import check_free_space, check_output_location, tokenizer_files
from acm_exp.merge.validation import TIED_HEAD_MODES
from acm_exp.merge.vocabulary import (
    VOCABULARY_TENSORS,
    VocabularyPlan,
    check_vocabulary_shapes,
    plan_vocabulary,
)
from acm_exp.models import has_tokenizer

log = logging.getLogger(__name__)

# Config keys that must agree for two checkpoints to be merged tensor by tensor.
ARCHITECTURE_KEYS = ("model_type", "architectures", "num_hidden_layers", "hidden_size")


def writes_tied_head(base_tied: bool, finetuned_tied: Sequence[bool], tied_head: str) -> bool:
    """Whether the merge is written tied (lm_head = the merged embedding): the base ties them, and
    ``tied_head`` is ``tie`` or every fine-tuned model ties them too."""
    return base_tied and (tied_head == "tie" or all(finetuned_tied))


@dataclass
class MergeInputs:
    """The opened checkpoints, validated against each other; no weight has been read."""

    base: Checkpoint
    finetuned: list[Checkpoint]
    output_tensors: list[tuple[str, tuple[int, ...], torch.dtype]]
    tied_output: bool
    # What the tokenizer comparison found: added/special tokens that differ, models not compared.
    vocabulary_check: dict = field(default_factory=dict)
    # Warnings already given about these inputs: a check repeated before the merge stays quiet.
    warned: set[str] = field(default_factory=set)
    # Which rows of the embedding and lm_head are written (model_pair.vocabulary).
    vocabulary: VocabularyPlan = field(default_factory=VocabularyPlan)

    def close(self) -> None:
        for checkpoint in (self.base, *self.finetuned):
            checkpoint.close()


@dataclass
class MergeSettings:
    output_dir: Path
    shard_size: str = "5GB"
    device: str = "cpu"
    dtype: str | None = None
    overwrite: bool = False
    seed: int = 0
    # Where config.json, generation_config.json and the tokenizer come from: "base" (what every
    # reference pipeline saves) or "finetuned" (the first fine-tuned model).
    tokenizer_from: str = "base"
    # Whether the merged model must ship a tokenizer (its evaluation needs one); without one the
    # merge is written with a warning, as for a merge-only use.
    require_tokenizer: bool = False
    manifest_extra: dict = field(default_factory=dict)


def _config_summary(config: dict) -> dict:
    return {key: config.get(key) for key in ARCHITECTURE_KEYS}


def _check_architectures(base: Checkpoint, finetuned: Sequence[Checkpoint]) -> None:
    expected = _config_summary(base.config)
    for checkpoint in finetuned:
        found = _config_summary(checkpoint.config)
        for key in ARCHITECTURE_KEYS:
            if expected[key] != found[key]:
                raise ConfigError(
                    f"architecture mismatch: {key}={found[key]!r} in {checkpoint.path} but {expected[key]!r} "
                    f"in the base {base.path}"
                )


def _tensor_names(checkpoint: Checkpoint) -> set[str]:
    names = set(checkpoint.tensors)
    if checkpoint.tied_embeddings:
        names.add(LM_HEAD_NAME)
    return names


def _check_tensors(base: Checkpoint, finetuned: Sequence[Checkpoint]) -> list[str]:
    names = _tensor_names(base)
    for checkpoint in finetuned:
        other = _tensor_names(checkpoint)
        missing, extra = sorted(names - other), sorted(other - names)
        if missing or extra:
            detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
            raise ConfigError(f"tensor names differ between the base {base.path} and {checkpoint.path}: {detail}")
        for name in sorted(names, key=_tensor_order):
            base_shape, other_shape = base.info(name).shape, checkpoint.info(name).shape
            if base_shape == other_shape:
                continue
            if name in VOCABULARY_TENSORS:
                # Extra rows (an extended vocabulary) are acceptable; plan_vocabulary decides about them.
                check_vocabulary_shapes(base, checkpoint, name)
                continue
            raise ConfigError(
                f"shape mismatch for tensor {name}: {base_shape} in the base {base.path} "
                f"vs {other_shape} in {checkpoint.path}"
            )
    return sorted(names, key=_tensor_order)


def _tensor_order(name: str) -> tuple:
    # Embedding first, then layers in numeric order, then the rest: the order transformers writes.
    parts = name.split(".")
    if len(parts) > 2 and parts[1] == "layers" and parts[2].isdigit():
        return (1, int(parts[2]), name)
    return (0 if name == EMBEDDING_NAME else 2, 0, name)


def open_inputs(
    base: str | Path,
    finetuned: Sequence[str | Path],
    *,
    allow_pickle: bool = False,
    dtype: str | None = None,
    tied_head: str = "tie",
    vocabulary: str = "base",
) -> MergeInputs:
    """Open every checkpoint's headers and check they can be merged; reads no weights.

    ``tied_head``: with a base that ties lm_head to its embedding, ``tie`` keeps the merge tied (its
    lm_head is the merged embedding, the fine-tuned models' lm_head is unused: what the reference
    pipelines save, since they merge into the base model object); ``untie`` merges lm_head as a
    tensor of its own and writes an untied model. An untied base is merged tensor by tensor either way.

    ``vocabulary``: what a fine-tuned model's rows past the base's vocabulary become, ``base`` (dropped,
    with a warning) or ``union`` (kept); see ``acm_exp.merge.vocabulary``.

    ``dtype``: the output's floating-point dtype; None takes the dtype the base's tensors are stored in
    (see the module docstring for a base config.json that declares another).
    """
    if tied_head not in TIED_HEAD_MODES:
        raise ConfigError(f"model_pair.tied_head={tied_head!r}; expected one of {TIED_HEAD_MODES}")
    if not finetuned:
        raise ConfigError("model_pair.finetuned is empty; expected at least one fine-tuned model")
    base_checkpoint = open_checkpoint(base, allow_pickle=allow_pickle)
    finetuned_checkpoints = [open_checkpoint(path, allow_pickle=allow_pickle) for path in finetuned]
    _check_architectures(base_checkpoint, finetuned_checkpoints)
    names = _check_tensors(base_checkpoint, finetuned_checkpoints)
    plan, vocabulary_check = plan_vocabulary(base_checkpoint, finetuned_checkpoints, str(vocabulary), names)
    all_tied = all(c.tied_embeddings for c in finetuned_checkpoints)
    tied_output = writes_tied_head(
        base_checkpoint.tied_embeddings, [c.tied_embeddings for c in finetuned_checkpoints], tied_head
    )
    if tied_output:
        names = [name for name in names if name != LM_HEAD_NAME]
        if not all_tied:
            log.info(
                "base %s ties lm_head to its embedding: the merge stays tied (lm_head = merged embedding); "
                "the fine-tuned lm_head is not used (model_pair.tied_head=untie merges it)",
                base_checkpoint.path,
            )
    elif base_checkpoint.tied_embeddings:
        log.info(
            "base %s ties lm_head to its embedding; model_pair.tied_head=untie: the merge materializes lm_head "
            "and is untied",
            base_checkpoint.path,
        )
    output_dtype = _output_dtype(base_checkpoint, dtype)
    output_tensors = []
    for name in names:
        info = base_checkpoint.info(name)
        out = output_dtype if info.dtype.is_floating_point else info.dtype
        shape = (plan.output_rows, *info.shape[1:]) if name in plan.model_rows else info.shape
        output_tensors.append((name, shape, out))
    return MergeInputs(
        base_checkpoint, finetuned_checkpoints, output_tensors, tied_output, vocabulary_check, vocabulary=plan
    )


def _output_dtype(base: Checkpoint, dtype: str | None) -> torch.dtype:
    """``merge.dtype`` when set, else the dtype the base's tensors are stored in; a base config.json that
    declares another dtype than the stored one is a warning naming both and the dtype written."""
    stored = stored_dtype(base)
    output = resolve_dtype(dtype, "merge.dtype") if dtype else stored
    declared_text = base.config.get("torch_dtype") or base.config.get("dtype")
    if isinstance(declared_text, str) and declared_text != "auto":
        declared = resolve_dtype(declared_text, f"{base.path / 'config.json'} torch_dtype")
        if declared != stored:
            log.warning(
                "%s declares torch_dtype=%s but its floating-point weights are stored as %s; the merge is written "
                "as %s (%s)",
                base.path / "config.json",
                dtype_name(declared),
                dtype_name(stored),
                dtype_name(output),
                "merge.dtype" if dtype else "the stored dtype; set merge.dtype to choose another",
            )
    return output


def stored_dtype(checkpoint: Checkpoint) -> torch.dtype:
    """The dtype a checkpoint's floating-point tensors are stored in: the one holding most entries
    (float32 for a checkpoint without floating-point tensors)."""
    entries: dict[torch.dtype, int] = {}
    for info in checkpoint.tensors.values():
        if info.dtype.is_floating_point:
            entries[info.dtype] = entries.get(info.dtype, 0) + math.prod(info.shape)
    return max(entries, key=entries.__getitem__) if entries else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def config_source(inputs: MergeInputs, tokenizer_from: str) -> Path:
    """The model directory whose config.json and generation config the merged model is saved with."""
    return inputs.base.path if tokenizer_from == "base" else inputs.finetuned[0].path


def tokenizer_source(inputs: MergeInputs, tokenizer_from: str) -> Path:
    """The model directory whose tokenizer the merged model is saved with: ``tokenizer_from``'s, or
    under ``model_pair.vocabulary=union`` with an extension, the model's that names every token."""
    return inputs.vocabulary.tokenizer_dir or config_source(inputs, tokenizer_from)


def check_tokenizer_source(source: Path, tokenizer_from: str, *, required: bool) -> dict:
    """What the merged model's tokenizer will be, checked before any weight is read.

    No tokenizer in ``source`` is an error when the merged model must be evaluated, and a warning
    for a merge-only use (the weights are still written, without a tokenizer).
    """
    if has_tokenizer(source):
        return {"from": str(source), "files": tokenizer_files(source)}
    message = f"no tokenizer files in {source} (model_pair.tokenizer_from={tokenizer_from})"
    if required:
        raise ConfigError(
            f"{message}; evaluating the merged model needs its tokenizer: use a model directory "
            "with tokenizer files or set model_pair.tokenizer_from to the other model"
        )
    return {
        "from": str(source),
        "files": tokenizer_files(source),
        "missing": f"{message}: the merged model is written without a tokenizer (only its weights and config)",
    }


def _check_tokenizer_fits(inputs: MergeInputs, tokenizer_from: str) -> None:
    """A tokenizer that names tokens past the rows written would index rows that do not exist."""
    plan = inputs.vocabulary
    source = tokenizer_source(inputs, tokenizer_from)
    for extension in plan.extensions:
        if extension.path == source and extension.rows > (plan.output_rows or 0):
            raise ConfigError(
                f"model_pair.tokenizer_from={tokenizer_from}: the tokenizer of {source} has tokens up to id "
                f"{extension.rows - 1} but model_pair.vocabulary={plan.mode} writes the base's {plan.output_rows} "
                "rows; set model_pair.vocabulary=union to keep its tokens, or model_pair.tokenizer_from=base"
            )


@dataclass(frozen=True)
class MergePreflight:
    """What a merge was checked against before any weight is read."""

    output_dir: Path
    device: torch.device
    plan: ShardPlan
    tokenizer: dict


def preflight(inputs: MergeInputs, settings: MergeSettings) -> MergePreflight:
    """Every check on the settings and the output that needs no weight: run before the heavy work."""
    output_dir = Path(settings.output_dir).resolve()
    check_output_location(output_dir, overwrite=settings.overwrite)
    device = resolve_device(settings.device, "merge.device")
    planned = [PlannedTensor(name, shape, dtype) for name, shape, dtype in inputs.output_tensors]
    plan = plan_shards(planned, settings.shard_size)
    _check_tokenizer_fits(inputs, settings.tokenizer_from)
    tokenizer = check_tokenizer_source(
        tokenizer_source(inputs, settings.tokenizer_from), settings.tokenizer_from, required=settings.require_tokenizer
    )
    if "missing" in tokenizer and tokenizer["missing"] not in inputs.warned:
        log.warning("%s", tokenizer["missing"])
        inputs.warned.add(tokenizer["missing"])
    if settings.overwrite or not output_dir.is_dir():
        check_free_space(output_dir, plan.total_size)
    return MergePreflight(output_dir, device, plan, tokenizer)
