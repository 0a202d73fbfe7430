"""The embedded toy long-to-short (L2S) model pair: a tiny base and a tiny "slow thinker".

The package builds both models itself, on CPU, without network (one torch thread; measured on 2
CPU cores shared with other jobs: 53 s at load average 3, 145 s at 7-8), and caches
them (model ids ``toy:base`` / ``toy:finetuned``; ``toy_cache_dir``, one folder per TOY_VERSION and
seed, so a new recipe is built afresh and never mistaken for an older pair; the version is also part
of the results' config hash). They mirror the real 1.5B pair in miniature:

- The task: the sum of four digits, ``"8 + 6 + 7 + 6"``, with gold answers (:func:`toy_problems`;
  the train, test and calibration splits never share a question).
- The prompt is ``TOY_PROMPT_TEMPLATE`` (``"Q: {question}\\nA:"``). Three answer formats, the final
  answer always inside ``\\boxed{}`` for the math grader, then EOS:

  - direct (``TOY_SHORT_ANSWER_TEMPLATE``): ``" \\boxed{27}"``, about 10 tokens;
  - step by step (``TOY_STEP_ANSWER_TEMPLATE``), the running totals:
    ``" 08, 14, 21, 27, so the answer is \\boxed{27}"``, 43 tokens;
  - step by step with a redundant reflection (``TOY_LONG_ANSWER_TEMPLATE``, the problems'
    ``solution``): ``" 08, 14, 21, 27, wait, let me check: 08, 14, 21, 27, so the answer is
    \\boxed{27}"``, 79 tokens (two reflection phrases, "wait" and "let me check").

- The *base* (like Qwen2.5-Math) has the skill but answers fast: it learns the step-by-step format
  first, then briefly a mix with 70 % direct answers. Greedy, it mostly answers directly, which it
  has not learned to do well. It reflects on some of its step-by-step examples, the more often the
  larger the answer (never above an even chance): greedy it never reflects, but how close it comes
  differs from problem to problem.
- The *fine-tuned* model (like R1-Distill) continues from the base with a small learning rate and
  few steps, so it stays in the base's basin: 70 % of its examples carry the reflection, 30 % are
  plain step by step. Greedy, it always thinks step by step and reflects.
- Merging them therefore does what L2S merging does to the real pair, with the coefficient as the
  knob: a merge keeps the fine-tuned model's step-by-step reasoning, and its reflection comes back
  problem by problem as the coefficient grows. Seed 0, the 100 test problems of ``eval=toy``
  (accuracy % / mean tokens; toy v4, tied merges, the package's merges and evaluation): base 16 / 14.2,
  fine-tuned 83 / 78.9; Task Arithmetic scale 0.1 75 / 40.4, 0.3 85 / 43.3, 0.5 81 / 46.9, 0.7
  82 / 64.5, 0.9 81 / 75.0, 1.1 82 / 77.8; ACM-TIES (the default: k 0.8) t -40 36 / 23.1, -30
  56 / 30.9, -20 73 / 39.1, -15 82 / 42.3, -10 83 / 42.9, -5 and 0.3 to 1.1 81 / 42.9. ACM's t
  has no effect between 0.3 and 1.1 here: the calibration questions all have one length, their
  MI per capture point varies by about 0.05-0.1 nats between samples, and the λ of the layers
  the merge uses moves from 0.51 to at most 0.53 (lm_head's, tied to the embedding, is unused);
  negative t (the paper uses t = -1.8 for LLaMA) lowers λ towards the base.
- The base ties its output layer to the embedding (``tie_word_embeddings: true``); the fine-tuned
  model is untied, its ``lm_head`` starting from the base embedding, like Qwen2.5-Math-1.5B vs.
  DeepSeek-R1-Distill-Qwen-1.5B.

Both are Qwen2-architecture causal LMs (2 layers, hidden 64, 2 attention heads of size 32 and
one key/value head: vLLM's CPU attention supports head sizes 32 and up) saved in bfloat16, each
directory with a byte-level ``tokenizers`` tokenizer (``tokenizer.json``, ChatML chat template)
and a greedy ``generation_config.json``. ``toy_build.json`` lists every file's size and sha256;
a cached pair whose files no longer match is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from acm_exp.errors import ConfigError
from acm_exp.paths import cache_root, sha256_file

log = logging.getLogger(__name__)

# Bump when the task, tokenizer, architecture or training recipe changes: it names the cache folder.
TOY_VERSION = 4
TOY_ROLES = ("base", "finetuned")
TOY_PREFIX = "toy:"
TOY_SPLITS = ("train", "test", "calibration")

TOY_PROMPT_TEMPLATE = "Q: {question}\nA:"
# The answers, after the prompt: the base answers at once, the fine-tuned model thinks step by step
# and then checks its steps again (a redundant reflection, like R1's "Wait, let me check ...").
TOY_SHORT_ANSWER_TEMPLATE = " \\boxed{{{answer}}}"
TOY_STEP_ANSWER_TEMPLATE = " {steps}, so the answer is \\boxed{{{answer}}}"
TOY_LONG_ANSWER_TEMPLATE = " {steps}, wait, let me check: {steps}, so the answer is \\boxed{{{answer}}}"

EOS_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = (EOS_TOKEN, "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# The task: the sum of NUM_TERMS digits (0..9), written "8 + 6 + 7 + 6".
NUM_TERMS = 4
# Each split owns the questions whose hash falls in its tenths: disjoint whatever the seed.
_SPLIT_TENTHS = {"test": (0,), "calibration": (1,), "train": tuple(range(2, 10))}


@dataclass(frozen=True)
class ToyRecipe:
    """Architecture and training schedule of the pair (a change needs a new TOY_VERSION)."""

    hidden_size: int = 64
    num_layers: int = 2
    # Head size hidden_size / num_heads = 32: the smallest that vLLM's CPU attention accepts (v2's
    # 4 heads of 16 did not load there). One key/value head keeps v2's projection shapes.
    num_heads: int = 2
    num_kv_heads: int = 1
    intermediate_size: int = 256
    max_position_embeddings: int = 256
    # The base learns the step-by-step format for base_direct_from steps, then, for the remaining
    # steps, a mix with base_direct_fraction direct answers: enough to make it answer directly
    # (greedy), too little to learn to add in one step. How often it reflects grows with the
    # problem's answer (its difficulty), from none at 0 to base_verify_max of the examples at 36
    # (base_late_verify_max in the mix), always below an even chance: greedy, the base never
    # reflects, but how far it is from reflecting differs from problem to problem, so a merge
    # brings the fine-tuned model's reflection back one problem at a time as its coefficient grows
    # (v3 reflected on 10 % of its examples whatever the problem: every problem switched at the
    # same coefficient, and merges between 0.3 and 0.9 answered identically).
    base_steps: int = 660
    base_lr: float = 3e-3
    base_direct_from: int = 600
    base_direct_fraction: float = 0.7
    base_verify_max: float = 0.6
    base_late_verify_max: float = 0.14
    # The fine-tuned model: a short, gentle continuation of the base (a small task vector, so that
    # weight interpolation works) on step-by-step answers, finetune_verify_fraction of them with
    # the reflection.
    finetune_steps: int = 80
    finetune_lr: float = 5e-4
    finetune_warmup_steps: int = 10
    finetune_verify_fraction: float = 0.7
    batch_size: int = 32
    warmup_steps: int = 20
    weight_decay: float = 0.01


RECIPE = ToyRecipe()


# ---------------------------------------------------------------------------------------------
# The task
#
# The step-by-step answer lists the running totals, zero-padded to two digits: "08, 13, 16, 20".
# Each total takes four characters, like each term of the question ("8 + "), so the term a step
# needs is always the same distance back: a tiny model learns this in a few hundred steps, while
# summing all the terms at once (the direct answer) takes it longer. The reflection repeats the
# totals at a fixed distance too, so it is cheap to learn and changes no answer.


def _split_of(question: str) -> str:
    tenth = int(hashlib.sha256(question.encode()).hexdigest()[:8], 16) % 10
    return next(split for split, tenths in _SPLIT_TENTHS.items() if tenth in tenths)


def _steps(terms: list[int]) -> str:
    """The running totals, zero-padded to two digits: "08, 14, 21, 27"."""
    return ", ".join(f"{sum(terms[: index + 1]):02d}" for index in range(len(terms)))


def _problem(terms: list[int]) -> dict:
    answer = str(sum(terms))
    steps = _steps(terms)
    return {
        "question": " + ".join(str(term) for term in terms),
        "answer": answer,
        "solution": TOY_LONG_ANSWER_TEMPLATE.format(steps=steps, answer=answer).lstrip(),
    }


def _check_split(split: str) -> None:
    if split not in TOY_SPLITS:
        raise ConfigError(f"toy split {split!r} is unknown; expected one of {TOY_SPLITS}")


def _problem_stream(split: str, seed: int | str, *, unique: bool):
    """Endless problems of ``split``, deterministic in (split, seed)."""
    rng = random.Random(f"acm_exp-toy-{split}-{seed}")
    seen: set[str] = set()
    misses = 0
    while True:
        problem = _problem([rng.randrange(10) for _ in range(NUM_TERMS)])
        if _split_of(problem["question"]) != split or (unique and problem["question"] in seen):
            misses += 1
            if misses > 100_000:
                return  # the split is exhausted
            continue
        misses = 0
        seen.add(problem["question"])
        yield problem


def toy_problems(split: str = "test", n: int = 100, seed: int = 0) -> list[dict]:
    """``n`` distinct toy problems of ``split`` (train / test / calibration), deterministic in
    ``(split, seed)``; a smaller ``n`` gives a prefix of a larger one.

    Each is ``{"id", "question", "answer", "solution"}``: ``answer`` is the gold answer,
    ``solution`` the step-by-step answer the fine-tuned model is trained on (it ends with
    ``\\boxed{answer}``). Splits never share a question, whatever the seeds.
    """
    _check_split(split)
    if n < 0:
        raise ConfigError(f"toy_problems: n={n}; expected a non-negative integer")
    problems = []
    for index, problem in enumerate(_problem_stream(split, seed, unique=True)):
        if index >= n:
            break
        problems.append({"id": f"toy-{split}-{seed}-{index:05d}", **problem})
    if len(problems) < n:
        raise ConfigError(f"toy split {split!r} has only {len(problems)} distinct problems; asked for {n}")
    return problems


# ---------------------------------------------------------------------------------------------
# Tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-printable-character map, which byte-level BPE tokenizers (Qwen's too) use."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), ord("\xff") + 1),
    ]
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, characters), strict=False))


def build_tokenizer():
    """The toy tokenizer: byte-level BPE without merges (one token per UTF-8 byte, id = byte value)
    plus the special tokens, as a transformers PreTrainedTokenizerFast.

    Byte-level like Qwen's own tokenizer, so it loads identically whether transformers reads
    tokenizer.json as it is or rebuilds it as a Qwen2Tokenizer (transformers 5 does for a
    qwen2 model directory); any text round-trips exactly.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = _bytes_to_unicode()
    vocab = {byte_chars[byte]: byte for byte in range(256)}
    vocab.update({token: 256 + index for index, token in enumerate(SPECIAL_TOKENS)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        clean_up_tokenization_spaces=False,
        model_max_length=RECIPE.max_position_embeddings,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Models


def _model_config(tokenizer, *, tie: bool):
    from transformers import Qwen2Config

    eos = tokenizer.eos_token_id
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=RECIPE.hidden_size,
        intermediate_size=RECIPE.intermediate_size,
        num_hidden_layers=RECIPE.num_layers,
        num_attention_heads=RECIPE.num_heads,
        num_key_value_heads=RECIPE.num_kv_heads,
        max_position_embeddings=RECIPE.max_position_embeddings,
        rope_theta=10000.0,
        tie_word_embeddings=tie,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        use_cache=True,
    )


def _answer(problem: dict, kind: str) -> str:
    """The text after the prompt (without EOS) of ``kind``: "short", "steps" or "long"."""
    if kind == "short":
        return TOY_SHORT_ANSWER_TEMPLATE.format(answer=problem["answer"])
    if kind == "steps":
        steps = _steps([int(term) for term in problem["question"].split(" + ")])
        return TOY_STEP_ANSWER_TEMPLATE.format(steps=steps, answer=problem["answer"])
    return " " + problem["solution"]


def _training_batch(tokenizer, problems, kinds):
    """Prompt + answer + EOS, right-padded; the loss covers the answer and EOS only."""
    import torch

    rows, prompt_lengths = [], []
    for problem, kind in zip(problems, kinds, strict=False):
        prompt = TOY_PROMPT_TEMPLATE.format(question=problem["question"])
        answer = _answer(problem, kind)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt_ids + answer_ids)
        prompt_lengths.append(len(prompt_ids))
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, (row, start) in enumerate(zip(rows, prompt_lengths, strict=False)):
        input_ids[index, : len(row)] = torch.tensor(row)
        labels[index, start : len(row)] = torch.tensor(row[start:])
        attention_mask[index, : len(row)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def _stage(desc: str) -> dict:
    """The recipe's steps, learning rate, warmup and data mix of one training stage."""
    if desc == "base":
        return {"steps": RECIPE.base_steps, "lr": RECIPE.base_lr, "warmup": RECIPE.warmup_steps, "mix": _base_mix}
    return {
        "steps": RECIPE.finetune_steps,
        "lr": RECIPE.finetune_lr,
        "warmup": RECIPE.finetune_warmup_steps,
        "mix": _finetune_mix,
    }


def _train(model, tokenizer, *, steps: int, lr: float, warmup: int, mix, seed: int, desc: str) -> float:
    """A fixed number of AdamW steps (linear warmup, cosine decay) on fresh training problems;
    returns the mean loss of the last 20 steps.

    ``mix(step, problem)`` is ``(short, long)``: the probability of a direct answer and of a
    step-by-step answer with the reflection; the rest are plain step by step."""
    import torch
    from tqdm.auto import tqdm

    stream = _problem_stream("train", f"{seed}-{desc}", unique=False)
    kinds_rng = random.Random(f"acm_exp-toy-kinds-{seed}-{desc}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=RECIPE.weight_decay, betas=(0.9, 0.98))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    losses: list[float] = []
    with tqdm(total=steps, desc=f"training toy {desc}", unit="step", leave=False) as bar:
        for step in range(steps):
            problems = [next(stream) for _ in range(RECIPE.batch_size)]
            kinds = []
            for problem in problems:
                short, long = mix(step, problem)
                draw = kinds_rng.random()
                kinds.append("short" if draw < short else "long" if draw < short + long else "steps")
            batch = _training_batch(tokenizer, problems, kinds)
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update()
            if step % 10 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return sum(losses[-20:]) / len(losses[-20:])


def _difficulty(problem: dict) -> float:
    """0 for the smallest answer (0), 1 for the largest (9 per term)."""
    return int(problem["answer"]) / (9 * NUM_TERMS)


def _base_mix(step: int, problem: dict) -> tuple[float, float]:
    """The base's (direct, reflection) answer probabilities for ``problem`` at ``step``."""
    if step < RECIPE.base_direct_from:
        return 0.0, RECIPE.base_verify_max * _difficulty(problem)
    return RECIPE.base_direct_fraction, RECIPE.base_late_verify_max * _difficulty(problem)


def _finetune_mix(step: int, problem: dict) -> tuple[float, float]:
    return 0.0, RECIPE.finetune_verify_fraction


def _new_model(tokenizer, *, tie: bool):
    from transformers import Qwen2ForCausalLM

    # Eager attention trains these tiny shapes faster on CPU than SDPA; the saved config keeps
    # the default, so whoever loads the model picks its own.
    model = Qwen2ForCausalLM(_model_config(tokenizer, tie=tie))
    model.config._attn_implementation = "eager"
    return model


def _save(model, tokenizer, directory: Path) -> None:
    import torch
    from transformers import GenerationConfig

    model = model.to(torch.bfloat16)
    model.config._attn_implementation = "sdpa"
    eos = tokenizer.eos_token_id
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, do_sample=False)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def build_toy_pair(output_dir: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Train the toy base and fine-tuned models and save them under ``output_dir/<role>``.

    Deterministic given ``seed`` (on one kind of CPU and torch build): seeded initialization,
    seeded data, a fixed number of steps, and one CPU thread (which also keeps the build fast when
    other processes share the cores).
    """
    import torch

    output_dir = Path(output_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        random.seed(seed)
        torch.manual_seed(seed)
        tokenizer = build_tokenizer()

        log.info("training the toy base (step-by-step, then mostly direct answers, %d steps)", RECIPE.base_steps)
        base = _new_model(tokenizer, tie=True)
        loss = _train(base, tokenizer, seed=seed, desc="base", **_stage("base"))
        log.info("toy base trained: loss %.3f", loss)
        _save(base, tokenizer, output_dir / "base")

        # The fine-tuned model continues from the base as saved (bfloat16), untied like
        # DeepSeek-R1-Distill-Qwen-1.5B vs. Qwen2.5-Math-1.5B: its lm_head starts as the embedding.
        state = {name: tensor.float() for name, tensor in base.state_dict().items()}
        state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
        finetuned = _new_model(tokenizer, tie=False)
        finetuned.load_state_dict(state)
        log.info(
            "training the toy fine-tuned model (step-by-step answers with a reflection, %d steps)",
            RECIPE.finetune_steps,
        )
        loss = _train(finetuned, tokenizer, seed=seed, desc="finetuned", **_stage("finetuned"))
        log.info("toy fine-tuned model trained: loss %.3f", loss)
        _save(finetuned, tokenizer, output_dir / "finetuned")
    finally:
        torch.set_num_threads(threads)
    log.info("toy pair built in %.1f s", time.perf_counter() - started)
    return {role: output_dir / role for role in TOY_ROLES}


# ---------------------------------------------------------------------------------------------
# Cache

_COMPLETE_MARKER = "toy_build.json"


def file_manifest(pair_dir: Path) -> dict[str, dict]:
    """Size and sha256 of every file of the pair's model folders, by path relative to ``pair_dir``."""
    return {
        path.relative_to(pair_dir).as_posix(): {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        for role in TOY_ROLES
        for path in sorted((pair_dir / role).rglob("*"))
        if path.is_file()
    }


def manifest_problem(pair_dir: Path, manifest: dict[str, dict]) -> str | None:
    """Why the files under ``pair_dir`` do not match ``manifest`` (sizes first: cheap), or None."""
    if not manifest:
        return "no file manifest"
    for name, expected in manifest.items():
        path = pair_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, expected {expected['bytes']}"
    for name, expected in manifest.items():
        if sha256_file(pair_dir / name) != expected["sha256"]:
            return f"{name} does not match its sha256"
    return None


def toy_cache_dir(cache_dir: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Where the pair of ``seed`` lives: ``<cache root>/toy/v<TOY_VERSION>-seed<seed>``."""
    return cache_root(cache_dir) / "toy" / f"v{TOY_VERSION}-seed{seed}"


def _pair_problem(pair_dir: Path) -> str | None:
    """Why the cached pair cannot be used (absent, unfinished, corrupt), or None when it can."""
    marker = pair_dir / _COMPLETE_MARKER
    if not marker.is_file():
        return "it has no completion marker" if pair_dir.exists() else "absent"
    try:
        manifest = json.loads(marker.read_text()).get("files")
    except (OSError, ValueError, AttributeError) as error:
        return f"its {_COMPLETE_MARKER} is unreadable ({error})"
    return manifest_problem(pair_dir, manifest)


def _check_role(role: str) -> None:
    if role not in TOY_ROLES:
        raise ConfigError(f"toy model role {role!r} is unknown; expected one of {TOY_ROLES}")


def ensure_toy_model(role: str, cache_dir: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """The directory of the toy ``role`` ("base" or "finetuned") model, building the pair first if
    the cache does not hold it yet.

    The pair is built in a temporary folder beside its final place and renamed when complete, so an
    interrupted build never looks finished; a file lock makes concurrent callers (processes, SLURM
    tasks) build it once and wait for it. A cached pair whose files differ from the manifest written
    at build time (a truncated or overwritten file) is rebuilt.
    """
    from filelock import FileLock

    _check_role(role)
    pair_dir = toy_cache_dir(cache_dir, seed)
    if _pair_problem(pair_dir) is None:
        return pair_dir / role
    pair_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(pair_dir.parent / f"{pair_dir.name}.lock"))
    with lock:
        problem = _pair_problem(pair_dir)
        if problem is None:  # another process built it while this one waited
            return pair_dir / role
        if pair_dir.exists():
            log.warning("toy pair at %s cannot be used (%s); rebuilding it", pair_dir, problem)
            shutil.rmtree(pair_dir)
        # Builds run under the lock only, so any staging folder seen here was left by a killed one.
        for stale in pair_dir.parent.glob(f".{pair_dir.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = pair_dir.parent / f".{pair_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        log.info("building the toy model pair (seed %d) into %s", seed, pair_dir)
        try:
            started = time.perf_counter()
            build_toy_pair(staging, seed=seed)
            info = {
                "toy_version": TOY_VERSION,
                "seed": seed,
                "build_seconds": round(time.perf_counter() - started, 2),
                "roles": list(TOY_ROLES),
                "files": file_manifest(staging),
            }
            (staging / _COMPLETE_MARKER).write_text(json.dumps(info, indent=2) + "\n")
            os.replace(staging, pair_dir)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        log.info("toy model pair ready at %s (%.1f s)", pair_dir, info["build_seconds"])
    return pair_dir / role


def is_toy_id(model_id: str) -> bool:
    """Whether ``model_id`` names the embedded toy pair (``toy:<role>``)."""
    return isinstance(model_id, str) and model_id.startswith(TOY_PREFIX)


def resolve_toy_id(model_id: str, cache_dir: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """The local directory of ``toy:base`` / ``toy:finetuned``, built and cached on first use."""
    if not is_toy_id(model_id):
        raise ConfigError(
            f"{model_id!r} is not a toy model id; expected one of {tuple(TOY_PREFIX + role for role in TOY_ROLES)}"
        )
    role = model_id[len(TOY_PREFIX) :]
    if role not in TOY_ROLES:
        raise ConfigError(
            f"toy model {model_id!r}: unknown role {role!r}; expected one of "
            f"{tuple(TOY_PREFIX + role for role in TOY_ROLES)}"
        )
    return ensure_toy_model(role, cache_dir=cache_dir, seed=seed)
