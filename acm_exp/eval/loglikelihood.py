"""Log-likelihood of continuations, as lm-evaluation-harness computes it, and multiple-choice answers.

A request is (context, continuation). Its tokens follow the harness (``lm_eval/api/model.py``,
``_encode_pair``): trailing spaces of the context move to the continuation; the context is encoded
with the tokenizer's default special tokens (a BOS where the tokenizer adds one), the continuation's
tokens are what encoding ``context + continuation`` adds after the context's. The score is the sum of
the log-probabilities of the continuation's tokens, each given everything before it; a sequence
longer than the model's context keeps its last ``context + 1`` tokens (the harness's left
truncation). A continuation that adds no token (the tokenizer merged it into the context's last
token) scores 0, as in the harness.

Backends: the hf backend runs the model on the tokens (``score_batch``); vLLM returns the prompt's
log-probabilities (``SamplingParams(prompt_logprobs=0)``) and ``sum_prompt_logprobs`` adds those of
the continuation's positions.

Choices (``choose``): ``acc`` takes the choice of highest log-likelihood, ``acc_norm`` the highest
log-likelihood divided by the choice's length in characters (``len(choice)``, the harness's
``completion_len``; for the ASCII text of HellaSwag, its length in bytes), the first on ties as
``numpy.argmax``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from acm_exp.eval.tasks.base import ChoiceQuestion


@dataclass(frozen=True)
class ScoredTokens:
    """One request as token ids: the (possibly truncated) context's and the continuation's."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]

    @property
    def ids(self) -> list[int]:
        return [*self.context, *self.continuation]


def encode_pair(
    encode: Callable[[str], list[int]],
    tokenizer: Any,
    context: str,
    continuation: str,
    max_length: int | None = None,
) -> ScoredTokens:
    """The request's tokens as lm-evaluation-harness makes them (module docstring). ``encode``: a
    text's ids with the tokenizer's default special tokens (acm_exp.eval.backends.encode_prompt)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    if context:
        whole = encode(context + continuation)
        context_ids = encode(context)
        continuation_ids = whole[len(context_ids) :]
    else:
        # No context: the harness conditions on its prefix token (BOS, else EOS).
        continuation_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        context_ids = [prefix]
    if max_length is not None and len(context_ids) + len(continuation_ids) > max_length + 1:
        keep = max(max_length + 1 - len(continuation_ids), 1)
        context_ids = context_ids[-keep:]
    return ScoredTokens(tuple(context_ids), tuple(continuation_ids))


def score_batch(model: Any, batch: Sequence[ScoredTokens], pad_id: int, device: Any) -> list[float]:
    """Sum of the continuation tokens' log-probabilities for each request, one right-padded forward
    pass for the batch (logits in float32)."""
    import torch

    inputs = [request.ids[:-1] for request in batch]
    width = max(len(ids) for ids in inputs)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(inputs):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1).cpu()
    scores = []
    for row, request in enumerate(batch):
        length = len(inputs[row])
        positions = torch.arange(length - len(request.continuation), length)
        targets = torch.tensor(request.continuation, dtype=torch.long)
        scores.append(float(log_probs[row, positions, targets].sum()))
    return scores


def sum_prompt_logprobs(prompt_logprobs: Sequence[Any], request: ScoredTokens) -> float:
    """The continuation's log-likelihood from vLLM's per-position prompt log-probabilities (position
    i: {token id: Logprob} for the prompt's token i given the tokens before it; None at 0)."""
    ids = request.ids
    total = 0.0
    for position in range(len(ids) - len(request.continuation), len(ids)):
        entry = prompt_logprobs[position]
        token = ids[position]
        if entry is None or token not in entry:
            raise RuntimeError(f"vLLM returned no log-probability for prompt token {token} at position {position}")
        value = entry[token]
        total += float(getattr(value, "logprob", value))
    return total


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value, the first on ties, a NaN counting as the largest (numpy.argmax)."""
    best = 0
    for index, value in enumerate(values):
        if math.isnan(value):
            return index
        if value > values[best]:
            best = index
    return best


def per_character(score: float, choice: str) -> float:
    """The log-likelihood divided by the choice's length, with numpy's float division by zero."""
    if choice:
        return score / float(len(choice))
    return math.nan if score == 0 else math.copysign(math.inf, score)


def choose(question: ChoiceQuestion, loglikelihoods: Sequence[float]) -> tuple[int, int]:
    """(acc's choice, acc_norm's choice) from the choices' log-likelihoods, as the harness picks them."""
    if len(loglikelihoods) != len(question.choices):
        raise ValueError(f"{len(loglikelihoods)} log-likelihoods for {len(question.choices)} choices")
    normalized = [per_character(score, choice) for score, choice in zip(loglikelihoods, question.choices, strict=True)]
    return argmax(loglikelihoods), argmax(normalized)
