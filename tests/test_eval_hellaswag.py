"""HellaSwag (multiple choice by log-likelihood, as lm-evaluation-harness): the harness's
preprocessing, acc and acc_norm, the request tokens, the hf backend's log-likelihoods against a
direct computation on a tiny model, and a run end to end. Rows are hand-made; the real ones come
from the hub (Rowan/hellaswag)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from app_config import compose_config
from model_factory import make_model
from omegaconf import open_dict

from acm_exp.errors import ConfigError
from acm_exp.eval import evaluate_model
from acm_exp.eval.backends import HfBackend, encode_prompt, load_tokenizer
from acm_exp.eval.loglikelihood import argmax, choose, encode_pair
from acm_exp.eval.runner import validate_eval_config
from acm_exp.eval.tasks import ChoiceQuestion, Example
from acm_exp.eval.tasks.hellaswag import hellaswag_question, preprocess

# A row in the hub schema (abridged from the dataset card's format; hand-written text).
ROW = {
    "ind": 24,
    "activity_label": "Roof shingle removal",
    "ctx_a": "A man is sitting on a roof.",
    "ctx_b": "he",
    "ctx": "A man is sitting on a roof. he",
    "endings": [
        "is using wrap to wrap a pair of skis.",
        "is ripping level tiles off.",
        "is holding a rubik's cube.",
        "starts pulling up roofing on a roof.",
    ],
    "label": "3",
}


def example(row: dict, gold: str | None = None) -> Example:
    return Example(id=str(row["ind"]), question=row["ctx"], gold=row["label"] if gold is None else gold, row=row)


# ---------------------------------------------------------------------------------------------
# The harness's preprocessing and choice


def test_context_and_choices_are_the_harness_query_and_choices():
    question = hellaswag_question(example(ROW))
    # activity_label + ": " + ctx_a + " " + ctx_b.capitalize()
    assert question.context == "Roof shingle removal: A man is sitting on a roof. He"
    assert question.choices == tuple(ROW["endings"])
    assert question.continuations[0] == " is using wrap to wrap a pair of skis."
    assert question.gold == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Making a cake [title] Preheat the oven.  ", "Making a cake. Preheat the oven."),
        ("Mix [step] the flour [header] well", "Mix the flour well"),
        ("a  b", "a b"),
        ("[title]", ""),
    ],
)
def test_preprocess_removes_the_wikihow_artifacts(text, expected):
    assert preprocess(text) == expected


@pytest.mark.parametrize(("label", "error"), [("", "label ''"), ("4", "label '4'"), ("x", "label 'x'")])
def test_a_label_that_is_no_index_of_the_endings_is_refused(label, error):
    with pytest.raises(ConfigError, match=f"HellaSwag {error}; expected an index 0..3"):
        hellaswag_question(example(ROW, gold=label))


def test_acc_takes_the_highest_loglikelihood_and_acc_norm_the_highest_per_character():
    question = ChoiceQuestion("ctx", ("a", "bbbbbbbbbb", "cc"), gold=1)
    # acc: -2 > -5 > -6; acc_norm: -2/1, -5/10 = -0.5, -6/2 = -3.
    assert choose(question, [-2.0, -5.0, -6.0]) == (0, 1)
    # Ties go to the first, as numpy.argmax; a NaN counts as the largest.
    assert argmax([-1.0, -1.0]) == 0
    assert argmax([-1.0, math.nan, 0.0]) == 1
    with pytest.raises(ValueError, match="2 log-likelihoods for 3 choices"):
        choose(question, [-1.0, -2.0])


# ---------------------------------------------------------------------------------------------
# Request tokens (the harness's _encode_pair)


class BosTokenizer:
    """One id per character plus a BOS (id 1), like Llama's tokenizer adds one."""

    bos_token = "<s>"
    bos_token_id = 1
    eos_token_id = 2

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}


def test_request_tokens_move_trailing_spaces_and_keep_the_bos():
    tokenizer = BosTokenizer()
    encode = lambda text: encode_prompt(tokenizer, text)  # noqa: E731
    request = encode_pair(encode, tokenizer, "ab ", "c")
    assert request.context == (1, ord("a"), ord("b"))
    assert request.continuation == (ord(" "), ord("c"))
    # No context: the prefix token (BOS) conditions the continuation, which gets no BOS of its own.
    assert encode_pair(encode, tokenizer, "", "xy") == encode_pair(encode, tokenizer, "", "xy")
    assert encode_pair(encode, tokenizer, "", "xy").context == (1,)
    # Past the context: the last max_length + 1 tokens are kept, the continuation whole.
    long = encode_pair(encode, tokenizer, "abcdefgh", " ij", max_length=5)
    assert long.ids == [ord(c) for c in "fgh ij"]


# ---------------------------------------------------------------------------------------------
# The hf backend against a direct computation on a tiny model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    # max_position_embeddings 128: the long request below is left-truncated. Its tokenizer has one
    # token per lowercase letter, digit and punctuation mark (spaces are dropped).
    return make_model(tmp_path_factory.mktemp("tiny") / "model", seed=3)


def direct_loglikelihood(model, tokenizer, context: str, continuation: str, keep: int | None = None) -> float:
    """Sum of log p(continuation token | everything before it), one unpadded forward pass, in float64
    from the logits on; ``keep``: only the last ``keep`` tokens are read."""
    context_ids = tokenizer(context)["input_ids"]
    ids = tokenizer(context + continuation)["input_ids"]
    continuation_length = len(ids) - len(context_ids)
    ids = ids[-keep:] if keep else ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    log_probs = torch.log_softmax(logits, dim=-1)
    return sum(
        float(log_probs[position - 1, ids[position]]) for position in range(len(ids) - continuation_length, len(ids))
    )


def test_hf_loglikelihoods_equal_a_direct_computation(tiny_model):
    from transformers import AutoModelForCausalLM

    requests = [
        ("a man is sitting on a roof. he", " is ripping tiles off."),
        ("a man is sitting on a roof. he", " starts pulling up roofing."),
        ("short", " x"),
        ("q: 2+2=", " 4"),
        ("mixing flour", " and water in a bowl, then baking it for an hour."),
    ]
    backend = HfBackend(tiny_model, device="cpu", dtype="float32", batch_size=2)
    try:
        scores = backend.loglikelihoods(requests)
    finally:
        backend.close()
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    tokenizer = load_tokenizer(tiny_model)
    expected = [direct_loglikelihood(model, tokenizer, context, continuation) for context, continuation in requests]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert all(score < 0 for score in scores)


def test_a_request_longer_than_the_context_is_scored_on_its_last_tokens(tiny_model):
    from transformers import AutoModelForCausalLM

    context, continuation = "abcdefghij" * 15, "theend"  # 156 tokens (one per letter), context 128
    backend = HfBackend(tiny_model, device="cpu", dtype="float32", batch_size=4)
    try:
        (score,) = backend.loglikelihoods([(context, continuation)])
    finally:
        backend.close()
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    tokenizer = load_tokenizer(tiny_model)
    assert score == pytest.approx(direct_loglikelihood(model, tokenizer, context, continuation, keep=129), abs=1e-4)
    assert score != pytest.approx(direct_loglikelihood(model, tokenizer, context[-100:], continuation), abs=1e-4)


# ---------------------------------------------------------------------------------------------
# End to end: validation, scoring, records and metrics


def lowercase_rows() -> list[dict]:
    """Rows in lowercase (the test tokenizer knows lowercase letters only, and drops spaces)."""
    rows = []
    for index, (label, endings) in enumerate(
        [
            ("1", ["zzz qqq.", "is cooking dinner.", "xx", "the the the"]),
            ("0", ["a cat sat on a mat.", "jjj", "is a b c d e f g h.", "kk kk"]),
            ("2", ["?", "!!", "runs to the store.", "w w w w w w w w w w"]),
        ]
    ):
        rows.append(
            {
                "ind": index,
                "activity_label": "cooking",
                "ctx_a": "a man stands in a kitchen.",
                "ctx_b": "he",
                "ctx": "a man stands in a kitchen. he",
                "endings": endings,
                "label": label,
            }
        )
    return rows


def hellaswag_eval(data_dir: Path, *overrides: str):
    eval_cfg = compose_config("eval=none", "+eval/benchmark@eval.benchmarks.hellaswag=hellaswag", *overrides).eval
    with open_dict(eval_cfg):
        eval_cfg.benchmarks.hellaswag.local_path = str(data_dir / "hellaswag.jsonl")
    return eval_cfg


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


class CountingBackend(HfBackend):
    calls = 0

    def loglikelihoods(self, requests):
        type(self).calls += 1
        return super().loglikelihoods(requests)


def test_hellaswag_runs_end_to_end_with_acc_and_acc_norm(tiny_model, tmp_path):
    rows = lowercase_rows()
    write_rows(tmp_path / "data" / "hellaswag.jsonl", rows)
    eval_cfg = hellaswag_eval(
        tmp_path / "data", "eval.backend=hf", "eval.device=cpu", "eval.dtype=float32", "eval.seeds=[0,1]"
    )
    # Multiple choice takes any prompt format: it is scored on its own context.
    validate_eval_config(eval_cfg, prompts=["qwen25-math-cot", "toy"])
    CountingBackend.calls = 0

    result = evaluate_model(
        tiny_model,
        label="m",
        role="merged",
        prompt="qwen25-math-cot",
        eval_cfg=eval_cfg,
        out_dir=tmp_path / "out",
        backend_factory=lambda path, cfg, tokenizer, _: CountingBackend(
            path, device="cpu", dtype="float32", batch_size=3, tokenizer=tokenizer
        ),
    )

    assert CountingBackend.calls == 1  # log-likelihoods do not depend on the seed: scored once
    records = [json.loads(line) for line in (tmp_path / "out" / "samples" / "hellaswag__seed0.jsonl").open()]
    assert [r["prompt"] for r in records] == ["cooking: a man stands in a kitchen. He"] * 3
    for record, row in zip(records, rows, strict=True):
        question = hellaswag_question(example(row))
        pick, pick_norm = choose(question, record["loglikelihoods"])
        assert (record["extracted"], record["extracted_norm"]) == (str(pick), str(pick_norm))
        assert record["correct"] == (pick == int(row["label"])) and record["correct_norm"] == (
            pick_norm == int(row["label"])
        )
        assert record["response"] == question.choices[pick] and math.isnan(record["tokens"])
    per_seed = [r for r in result if r["seed"] == 0][0]
    assert per_seed["n"] == 3
    assert per_seed["accuracy"] == pytest.approx(100 * sum(r["correct"] for r in records) / 3)
    assert per_seed["accuracy_norm"] == pytest.approx(100 * sum(r["correct_norm"] for r in records) / 3)
    assert math.isnan(per_seed["mean_tokens"]) and per_seed["truncation_rate"] == 0.0
    aggregate = [r for r in result if r["seed"] is None][0]
    assert aggregate["accuracy_norm"] == per_seed["accuracy_norm"] and aggregate["accuracy_norm_std"] == 0.0


def test_a_bad_hellaswag_row_stops_validation_with_one_line(tmp_path):
    rows = lowercase_rows()
    rows[2]["label"] = "7"
    path = write_rows(tmp_path / "data" / "hellaswag.jsonl", rows)
    with pytest.raises(ConfigError) as error:
        validate_eval_config(hellaswag_eval(tmp_path / "data"), prompts=["cot"])
    message = str(error.value)
    assert message.startswith(f"benchmark hellaswag: row 2 of {path}: HellaSwag label '7'") and "\n" not in message


def test_multiple_choice_needs_a_family_that_scores_choices():
    eval_cfg = compose_config("eval=none", "+eval/benchmark@eval.benchmarks.gsm8k=gsm8k").eval
    eval_cfg.benchmarks.gsm8k.kind = "multiple_choice"
    with pytest.raises(ConfigError, match="kind=multiple_choice but task 'gsm8k' scores no choices"):
        validate_eval_config(eval_cfg, prompts=["cot"])
