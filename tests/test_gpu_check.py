"""The prepared GPU check (tests/benchmarks/gpu_check.py) at its tiny size on CPU, as CI runs it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCRIPT = Path(__file__).resolve().parent / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_check_runs_at_tiny_size_on_cpu(tmp_path, capsys):
    gpu_check = load_script()
    status = gpu_check.main(
        [
            "--tiny",
            "--device",
            "cpu",
            "--work-dir",
            str(tmp_path),
            "--methods",
            "ties,task_arithmetic",
            "--samples",
            "3",
            "--sample-tokens",
            "8,16",
            "--mi-tokens",
            "4",
            "--max-new-tokens",
            "4",
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0, printed
    # cpu against cpu: the same kernels, so every figure that compares must show no difference.
    assert re.search(r"MI kernels, .* rel diff 0\.0e\+00", printed)
    for method in ("ties", "task_arithmetic"):
        match = re.search(rf"merge {method} .* (\d+)/(\d+) tensors bit-identical, 0 of", printed)
        assert match and match.group(1) == match.group(2), printed
    assert re.search(r"MI, device vs cpu capture\s+largest abs diff 0\.000e\+00", printed)
    assert re.search(r"ACM λ \(t=0\.7\), cpu vs cpu\s+largest abs diff 0\.000e\+00", printed)
    assert re.search(r"hf generation on cpu\s+6 prompts, \d+ new tokens", printed)


def test_gpu_check_refuses_cuda_without_it(capsys):
    gpu_check = load_script()
    if gpu_check.torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert gpu_check.main(["--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().out
