"""The causal LMs that the statistics run (ACM capture, AIM importance, Sens-Merging sensitivity):
loading, their module layout, tokenization, token-id checks and the counted forward pass.

    model = load_causal_lm(path, placement, torch.bfloat16)
    for index, ids in enumerate(tokenize_texts(path, texts, max_tokens=512)):
        forward(model, checked_token_ids(ids, index, [model]))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from acm_exp.devices import Placement
from acm_exp.errors import ConfigError

log = logging.getLogger(__name__)

# Forward passes run through ``forward`` (every model, every sample; capture and AIM alike): lets
# tests check that a sweep reusing cached statistics runs none.
FORWARD_PASSES = 0


@dataclass(frozen=True)
class ModelLayout:
    """Where the parts the statistics hook live in a causal-LM module tree (dotted paths)."""

    embed: str = "model.embed_tokens"
    layers: str = "model.layers"
    layer_output: str = "mlp.down_proj"
    norm: str = "model.norm"
    head: str = "lm_head"


STANDARD_LAYOUT = ModelLayout()
# Architectures checked to follow the standard layout (model_type from config.json).
LAYOUTS: dict[str, ModelLayout] = {
    "qwen2": STANDARD_LAYOUT,
    "qwen3": STANDARD_LAYOUT,
    "llama": STANDARD_LAYOUT,
    "mistral": STANDARD_LAYOUT,
}
SUPPORTED_ARCHITECTURES = ", ".join(sorted(LAYOUTS))


def architecture(model: torch.nn.Module) -> str:
    """The model's ``model_type`` (its class name when it has no config)."""
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or type(model).__name__


def layout_of(model: torch.nn.Module) -> ModelLayout:
    """The checked layout of the model's architecture; the standard one for any other."""
    return LAYOUTS.get(architecture(model), STANDARD_LAYOUT)


def submodule(model: torch.nn.Module, path: str) -> torch.nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's decoder layers (``model.layers`` in the standard layout)."""
    path = layout_of(model).layers
    layers = submodule(model, path)
    if not isinstance(layers, (torch.nn.ModuleList, torch.nn.Sequential)) or len(layers) == 0:
        raise ConfigError(
            f"architecture {architecture(model)!r} ({type(model).__name__}) has no list of decoder layers at "
            f"{path}; supported: {SUPPORTED_ARCHITECTURES}"
        )
    return layers


def input_device(model: torch.nn.Module) -> torch.device:
    """Where the token ids go: the embedding's device. An offloaded embedding (weights on ``meta``,
    loaded per forward by accelerate's hook) takes them on the CPU and its hook moves them."""
    device = model.get_input_embeddings().weight.device
    return torch.device("cpu") if device.type == "meta" else device


# ---------------------------------------------------------------------------------------------
# Token ids


def checked_token_ids(sample: Any, index: int, models: Sequence[torch.nn.Module]) -> torch.Tensor:
    """Calibration sample ``index`` (token ids or a LongTensor) as a (1, n) LongTensor that every
    one of ``models`` can embed."""
    ids = sample if isinstance(sample, torch.Tensor) else torch.as_tensor(list(sample), dtype=torch.long)
    ids = ids.reshape(1, -1).to(torch.long)
    if ids.shape[1] == 0:
        raise ConfigError(f"calibration sample {index} has no tokens; expected at least one token id")
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
    return ids


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)


def tokenize_texts(
    tokenizer_path: str | Path, texts: Sequence[str], max_tokens: int | None = None, trust_remote_code: bool = False
) -> list[list[int]]:
    """Token ids of each text with the model's tokenizer: no chat template, truncated to max_tokens."""
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"max_tokens={max_tokens!r}; expected a positive integer or null")
    tokenizer = load_tokenizer(tokenizer_path, trust_remote_code)
    token_ids = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ConfigError(f"calibration text {index} is a {type(text).__name__}; expected a string")
        ids = tokenizer(text, truncation=max_tokens is not None, max_length=max_tokens)["input_ids"]
        if not ids:
            raise ConfigError(f"calibration text {index} tokenizes to no tokens; expected non-empty text")
        token_ids.append(list(ids))
    return token_ids


# ---------------------------------------------------------------------------------------------
# Loading and running


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


def forward(model: torch.nn.Module, ids: torch.Tensor) -> None:
    """One inference forward pass over ``ids`` (1, n), counted in FORWARD_PASSES; hooks read the result."""
    global FORWARD_PASSES
    FORWARD_PASSES += 1
    model(input_ids=ids.to(input_device(model)), use_cache=False)
