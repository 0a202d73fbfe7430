"""evaluate_model: records, metrics.json, sample-file reuse (the backend is not even created),
per-role token budgets, several seeds; and one slow end-to-end run on the toy pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_config import compose_config
from model_factory import save_tokenizer

from acm_exp.eval import evaluate_model
from acm_exp.eval.backends import Generation, SamplingSettings


def compose_eval(*overrides: str):
    return compose_config(*overrides).eval


def gsm8k_and_math500(*overrides: str):
    return compose_eval(
        "eval=none",
        "+eval/benchmark@eval.benchmarks.gsm8k=gsm8k",
        "+eval/benchmark@eval.benchmarks.math500=math500",
        "eval.backend=hf",
        "eval.device=cpu",
        "eval.limit=4",
        *overrides,
    )


class FakeBackend:
    """Answers every prompt with the same boxed number; records what it was asked."""

    name = "fake"

    def __init__(self, answer: str = "18"):
        self.answer = answer
        self.calls: list[tuple[int, SamplingSettings]] = []
        self.closed = False

    def generate(self, prompts, settings):
        self.calls.append((len(prompts), settings))
        return [
            Generation(
                f"Wait, let me check. The answer is \\boxed{{{self.answer}}}.", 12, "length" if i == 0 else "stop"
            )
            for i in range(len(prompts))
        ]

    def close(self):
        self.closed = True


class CountingFactory:
    def __init__(self):
        self.backends: list[FakeBackend] = []

    def __call__(self, model_path, eval_cfg, tokenizer, max_model_len):
        assert max_model_len > 0
        self.backends.append(FakeBackend())
        return self.backends[-1]

    @property
    def generate_calls(self) -> int:
        return sum(len(b.calls) for b in self.backends)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("runner_tokenizer")
    save_tokenizer(directory)
    return directory


def run(tokenizer_dir, eval_cfg, out_dir, data_dir, factory, role="merged", prompt="qwen25-math-cot"):
    return evaluate_model(
        tokenizer_dir,
        label="m",
        role=role,
        prompt=prompt,
        eval_cfg=eval_cfg,
        out_dir=out_dir,
        data_dir=data_dir,
        backend_factory=factory,
    )


def test_records_metrics_and_reuse(tokenizer_dir, shared_data_dir, tmp_path):
    eval_cfg = gsm8k_and_math500()
    factory = CountingFactory()
    rows = run(tokenizer_dir, eval_cfg, tmp_path, shared_data_dir, factory)
    assert factory.generate_calls == 2 and factory.backends[0].closed
    assert [(r["benchmark"], r["seed"], r["n"]) for r in rows] == [("gsm8k", 0, 4), ("math500", 0, 4)]
    assert rows[0]["truncation_rate"] == 25.0 and rows[0]["reflections"] == 2.0

    records = [json.loads(line) for line in (tmp_path / "samples" / "gsm8k.jsonl").read_text().splitlines()]
    assert len(records) == 4
    assert set(records[0]) >= {
        "id",
        "prompt",
        "response",
        "extracted",
        "gold",
        "correct",
        "tokens",
        "finish_reason",
        "seed",
        "reflections",
    }
    assert all(r["prompt"].startswith("<|im_start|>system\n") for r in records)
    assert all(r["correct"] == (r["gold"] == "18") for r in records)
    assert rows[0]["accuracy"] == 100.0 * sum(r["correct"] for r in records) / 4
    # tokens: the stripped response re-tokenized (a character tokenizer: one token per character).
    assert records[0]["tokens"] == len(records[0]["response"].strip())
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["rows"] == rows and summary["model"] == "m"

    # Second call: every samples file is complete, so no backend is even created.
    again = CountingFactory()
    assert run(tokenizer_dir, eval_cfg, tmp_path, shared_data_dir, again) == rows
    assert again.backends == []

    # A run killed before writing math500 regenerates only math500.
    (tmp_path / "samples" / "math500.jsonl").unlink()
    partial = CountingFactory()
    run(tokenizer_dir, eval_cfg, tmp_path, shared_data_dir, partial)
    assert partial.generate_calls == 1 and partial.backends[0].calls[0][0] == 4


def test_changed_limit_regenerates(tokenizer_dir, shared_data_dir, tmp_path):
    run(tokenizer_dir, gsm8k_and_math500(), tmp_path, shared_data_dir, CountingFactory())
    factory = CountingFactory()
    run(tokenizer_dir, gsm8k_and_math500("eval.limit=6"), tmp_path, shared_data_dir, factory)
    assert factory.generate_calls == 2


def test_token_budget_per_role_and_benchmark(tokenizer_dir, shared_data_dir, tmp_path):
    eval_cfg = gsm8k_and_math500(
        "eval.max_new_tokens=300", "eval.base_max_new_tokens=200", "eval.benchmarks.math500.max_new_tokens=111"
    )
    base = CountingFactory()
    run(tokenizer_dir, eval_cfg, tmp_path / "base", shared_data_dir, base, role="base", prompt="cot")
    assert [s.max_new_tokens for _, s in base.backends[0].calls] == [200, 111]
    assert base.backends[0].calls[0][1].stop == ("\nQuestion:",)
    merged = CountingFactory()
    run(tokenizer_dir, eval_cfg, tmp_path / "merged", shared_data_dir, merged)
    assert [s.max_new_tokens for _, s in merged.backends[0].calls] == [300, 111]
    assert merged.backends[0].calls[0][1].temperature == 0.0


def test_several_seeds(tokenizer_dir, shared_data_dir, tmp_path):
    eval_cfg = gsm8k_and_math500("eval.seeds=[0,1,2]", "eval.limit=3")
    factory = CountingFactory()
    rows = run(tokenizer_dir, eval_cfg, tmp_path, shared_data_dir, factory)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        f"{b}__seed{s}.jsonl" for b in ("gsm8k", "math500") for s in (0, 1, 2)
    ]
    assert [s.seed for _, s in factory.backends[0].calls] == [0, 1, 2, 0, 1, 2]
    aggregates = [r for r in rows if r["seed"] is None]
    assert [(r["benchmark"], r["num_seeds"], r["accuracy_std"]) for r in aggregates] == [
        ("gsm8k", 3, 0.0),
        ("math500", 3, 0.0),
    ]


@pytest.mark.slow
def test_toy_pair_end_to_end(tmp_path, one_torch_thread):
    """The real hf backend on the toy fine-tuned model, twice: the second run reuses the samples."""

    from acm_exp.toy import ensure_toy_model

    model = ensure_toy_model("finetuned")
    eval_cfg = compose_eval("eval=toy", "eval.limit=16", "eval.batch_size=8")
    request = dict(
        label="toy-finetuned", role="finetuned", prompt="toy", eval_cfg=eval_cfg, out_dir=tmp_path, data_dir=None
    )
    rows = evaluate_model(model, **request)
    assert len(rows) == 1 and rows[0]["n"] == 16
    assert rows[0]["mean_tokens"] > 0
    # The trained toy model solves a good part of its own task.
    assert rows[0]["accuracy"] >= 25.0
    records = [json.loads(line) for line in (tmp_path / "samples" / "toy.jsonl").read_text().splitlines()]
    assert {r["finish_reason"] for r in records} <= {"stop", "length"}

    def no_backend(*args):
        raise AssertionError("complete samples must be reused")

    assert evaluate_model(model, backend_factory=no_backend, **request) == rows
