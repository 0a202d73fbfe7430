"""Generation backends: turn prompts into texts, token counts and finish reasons, nothing more.

- ``hf``: transformers on CPU or CUDA. Prompts are sorted by length and generated in left-padded
  batches with the KV cache; greedy when temperature is 0, else seeded sampling.
- ``vllm``: vLLM's offline ``LLM.generate`` (CUDA only).
- ``auto``: vllm when it is importable and CUDA is available, else hf.

A backend owns one loaded model; ``close()`` frees it (and the GPU memory) before the next loads.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from acm_exp.errors import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "hf", "vllm")
DTYPES = ("auto", "bfloat16", "float16", "float32")
FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class Generation:
    text: str
    # Tokens the model generated for this response (the terminating EOS excluded under hf).
    num_tokens: int
    # "stop": EOS or a stop string ended it; "length": it hit max_new_tokens (truncated).
    finish_reason: str


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()


class Backend(Protocol):
    name: str

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[Generation]:
        """One generation per prompt, in input order."""

    def close(self) -> None:
        """Free the model (and its GPU memory)."""


# ---------------------------------------------------------------------------------------------
# Choosing and checking


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend_name(name: str) -> str:
    """'auto' -> 'vllm' when vllm is importable and CUDA is available, else 'hf'."""
    if name not in BACKENDS:
        raise ConfigError(f"eval.backend={name!r}; expected one of {BACKENDS}")
    if name == "auto":
        return "vllm" if vllm_available() and cuda_available() else "hf"
    return name


def check_backend(name: str) -> None:
    """Fail before any model loads when the requested backend cannot run here."""
    resolved = resolve_backend_name(name)
    if resolved == "vllm" and not vllm_available():
        raise ConfigError("eval.backend=vllm but vllm is not installed; expected `pip install acm_exp[gpu]` "
                          "or eval.backend=hf")
    if resolved == "vllm" and not cuda_available():
        raise ConfigError("eval.backend=vllm but CUDA is not available; expected a GPU or eval.backend=hf")


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; 'cpu', 'cuda' and 'cuda:<i>' pass through, checked."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not cuda_available():
            raise ConfigError(f"eval.device={device!r} but CUDA is not available; expected 'cpu' or 'auto'")
        return device
    raise ConfigError(f"eval.device={device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:<index>'")


def resolve_dtype(dtype: str) -> Any:
    """A torch dtype for the name, or 'auto' (the checkpoint's own dtype)."""
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"eval.dtype={dtype!r}; expected one of {DTYPES}")
    return "auto" if dtype == "auto" else getattr(torch, dtype)


def free_accelerator_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# transformers


def load_tokenizer(model_path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out, so any id works; EOS is always in the vocabulary.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def single_token_id(tokenizer: Any, text: str) -> int | None:
    """The id when ``text`` is exactly one special/added token of the tokenizer (e.g. <|im_end|>)."""
    if text in tokenizer.all_special_tokens or text in tokenizer.get_added_vocab():
        return tokenizer.convert_tokens_to_ids(text)
    return None


def split_stops(tokenizer: Any, stop: Sequence[str]) -> tuple[list[int], list[str]]:
    """Stop strings that are one special token become token ids (decoding skips special tokens,
    so they would never be seen as text); the rest stay strings."""
    ids, strings = [], []
    for text in stop:
        token_id = single_token_id(tokenizer, text)
        if token_id is None:
            strings.append(text)
        else:
            ids.append(token_id)
    return ids, strings


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found (vLLM excludes it too)."""
    positions = [text.find(s) for s in stop if s and s in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


class HfBackend:
    """transformers generation in left-padded, length-sorted batches with the KV cache."""

    name = "hf"

    def __init__(self, model_path: str | Path, *, device: str = "auto", dtype: str = "bfloat16",
                 batch_size: int = 16, tokenizer: Any = None):
        from transformers import AutoModelForCausalLM

        if batch_size < 1:
            raise ConfigError(f"eval.batch_size={batch_size}; expected a positive integer")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_path)
        log.info("hf backend: loading %s on %s (%s)", model_path, self.device, dtype)
        # device_map loads the weights straight onto the device (no full copy in CPU memory first).
        self.model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=resolve_dtype(dtype),
                                                          device_map=self.device)
        self.model.eval()
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> list[int]:
        """EOS of the tokenizer and of the model's generation config (chat models list several)."""
        ids: list[int] = []
        for source in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            for token_id in source if isinstance(source, (list, tuple)) else [source]:
                if token_id is not None and token_id not in ids:
                    ids.append(int(token_id))
        return ids

    def encode(self, prompt: str) -> list[int]:
        # A chat-template prompt may already start with BOS; adding another would shift the model.
        bos = self.tokenizer.bos_token
        add_special = not (bos and prompt.startswith(bos))
        return self.tokenizer(prompt, add_special_tokens=add_special)["input_ids"]

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[Generation]:
        import torch
        from transformers import set_seed

        stop_ids, stop_texts = split_stops(self.tokenizer, settings.stop)
        eos_ids = self.eos_ids + [i for i in stop_ids if i not in self.eos_ids]
        encoded = [self.encode(prompt) for prompt in prompts]
        # Longest first: similar lengths share a batch (little padding), and an out-of-memory error
        # shows up in the first batch rather than hours in.
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[Generation | None] = [None] * len(prompts)
        set_seed(settings.seed)
        with tqdm(total=len(prompts), desc="generating", unit="prompt") as progress, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                outputs = self._generate_batch([encoded[i] for i in batch], settings, eos_ids, stop_texts)
                for index, generation in zip(batch, outputs):
                    results[index] = generation
                progress.update(len(batch))
        return [generation for generation in results if generation is not None]

    def _generate_batch(self, batch: list[list[int]], settings: SamplingSettings, eos_ids: list[int],
                        stop_texts: list[str]) -> list[Generation]:
        import torch
        from transformers import GenerationConfig

        pad_id = self.tokenizer.pad_token_id
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            # Left padding: every prompt ends at the last column, where generation continues.
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        sampling = settings.temperature > 0
        # An explicit config: the checkpoint's generation_config (R1-Distill ships sampling at 0.6)
        # must not silently change the decoding the experiment asked for.
        config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens,
            do_sample=sampling,
            temperature=settings.temperature if sampling else None,
            top_p=settings.top_p if sampling else None,
            top_k=None,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
            stop_strings=stop_texts or None,
        )
        output = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            generation_config=config,
            tokenizer=self.tokenizer if stop_texts else None,
        )
        new_tokens = output[:, width:].tolist()
        return [self._finish(tokens, settings.max_new_tokens, eos_ids, stop_texts) for tokens in new_tokens]

    def _finish(self, tokens: list[int], max_new_tokens: int, eos_ids: list[int], stop_texts: list[str]) -> Generation:
        """Cut one generated row at its first EOS or stop string and name why it ended."""
        eos_at = next((i for i, token in enumerate(tokens) if token in eos_ids), None)
        kept = tokens if eos_at is None else tokens[:eos_at]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        text, stopped_by_string = cut_at_stop(text, stop_texts)
        if eos_at is not None or stopped_by_string:
            reason = "stop"
        else:
            reason = "length" if len(tokens) >= max_new_tokens else "stop"
        if stopped_by_string and eos_at is None:
            # After a stop string the row only holds padding; count the tokens up to it.
            while kept and kept[-1] == self.tokenizer.pad_token_id:
                kept = kept[:-1]
        return Generation(text=text, num_tokens=len(kept), finish_reason=reason)

    def close(self) -> None:
        self.model = None
        free_accelerator_memory()


# ---------------------------------------------------------------------------------------------
# vLLM


def generation_from_vllm(request_output: Any) -> Generation:
    """One vLLM RequestOutput (n=1) as a Generation."""
    completion = request_output.outputs[0]
    reason = "length" if completion.finish_reason == "length" else "stop"
    return Generation(text=completion.text, num_tokens=len(completion.token_ids), finish_reason=reason)


class VllmBackend:
    """vLLM's offline engine; prompts go in as one list, outputs come back in input order."""

    name = "vllm"

    def __init__(self, model_path: str | Path, *, dtype: str = "bfloat16", seed: int = 0,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, enforce_eager: bool = False):
        from vllm import LLM

        resolve_dtype(dtype)
        log.info("vllm backend: loading %s (%s, tp=%d, max_model_len=%s)", model_path, dtype,
                 tensor_parallel_size, max_model_len)
        self.llm = LLM(
            model=str(model_path),
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=enforce_eager,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[Generation]:
        from vllm import SamplingParams

        stop_ids, stop_texts = split_stops(self.tokenizer, settings.stop)
        params = SamplingParams(
            temperature=settings.temperature,
            top_p=settings.top_p,
            # vLLM's default is 16 tokens: always explicit.
            max_tokens=settings.max_new_tokens,
            n=1,
            seed=settings.seed,
            stop=stop_texts or None,
            stop_token_ids=stop_ids or None,
        )
        outputs = self.llm.generate(list(prompts), params, use_tqdm=True)
        return [generation_from_vllm(output) for output in outputs]

    def close(self) -> None:
        self.llm = None
        _destroy_vllm_process_groups()
        free_accelerator_memory()


def _destroy_vllm_process_groups() -> None:
    """Tear down vLLM's distributed state so that the next model can start in this process."""
    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel
    except ImportError:  # older or newer layouts: nothing to tear down by hand
        return
    destroy_model_parallel()
    destroy_distributed_environment()


# ---------------------------------------------------------------------------------------------
# Factory


def load_backend(model_path: str | Path, eval_cfg: Any, *, tokenizer: Any = None, seed: int = 0,
                 max_model_len: int | None = None) -> Backend:
    """The configured backend with the model loaded. ``max_model_len`` applies to vLLM when
    eval.vllm.max_model_len is null (the caller computes what the pending generations need)."""
    name = resolve_backend_name(eval_cfg.backend)
    if name == "vllm":
        check_backend(name)
        vllm_cfg = eval_cfg.vllm
        return VllmBackend(
            model_path,
            dtype=eval_cfg.dtype,
            seed=seed,
            tensor_parallel_size=vllm_cfg.tensor_parallel_size,
            gpu_memory_utilization=vllm_cfg.gpu_memory_utilization,
            max_model_len=vllm_cfg.max_model_len or max_model_len,
            enforce_eager=vllm_cfg.enforce_eager,
        )
    return HfBackend(model_path, device=eval_cfg.device, dtype=eval_cfg.dtype, batch_size=eval_cfg.batch_size,
                     tokenizer=tokenizer)
