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
            "--no-rehearsal",
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


def s1k_calibration_file(path: Path, shared_data_dir: Path, count: int) -> Path:
    """What --prepare-calibration writes, for ``count`` s1K rows (texts as merge=sens builds them)."""
    import json

    from acm_exp.acm.sens_texts import sens_texts
    from acm_exp.config import CalibrationConfig, SensConfig

    rows = [json.loads(line) for line in (shared_data_dir / "s1k" / "train.jsonl").open()]
    rows = sorted(rows, key=lambda row: len(row["question"]))[:count]  # short: each fits a small budget
    cfg = CalibrationConfig(name="s1k", source="simplescaling/s1K")
    sens = {}
    for role in ("base", "finetuned"):
        chosen = sens_texts(rows, cfg, SensConfig(), role)
        sens[role] = {"examples": chosen.examples, "description": chosen.description, "skipped": chosen.skipped}
    texts = [row["question"].strip() for row in rows]
    path.write_text(json.dumps({"spec": "test", "selection_hash": "h", "texts": texts, "sens": sens}))
    return path


@pytest.mark.slow
def test_gpu_check_rehearsal_runs_at_one_layer_on_cpu(tmp_path, capsys, shared_data_dir):
    """Step 6 as it runs on the GPU machine, on CPU: a one-layer stand-in at full width, 3 samples."""
    gpu_check = load_script()
    calibration = s1k_calibration_file(tmp_path / "s1k.json", shared_data_dir, 3)
    options = ["--device", "cpu", "--work-dir", str(tmp_path / "work"), "--calibration", str(calibration)]
    status = gpu_check.main(
        ["--tiny", *options, "--methods", "ties", "--samples", "1", "--sample-tokens", "4,4", "--mi-tokens", "2"]
        + ["--max-new-tokens", "1", "--rehearsal-layers", "1", "--rehearsal-max-tokens", "48"]
    )
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert re.search(r"stand-in qwen2.5-1.5b\s+1 layers, \d+\.\d+ GB \(built in \d+ s\)", printed)
    assert re.search(r"ACM capture \+ MI \(cpu\)\s+3 samples \(\d+ tokens, longest \d+\) in \d+\.\d s", printed)
    assert re.search(r"Sens-Merging base\s+[1-3] of 3 examples \(l2s \(solution\)\)", printed)
    assert re.search(r"Sens-Merging gradients \(cpu\)\s+both models, float32 in \d+\.\d s .*about 90 s", printed)


def test_gpu_check_prepares_the_calibration_file(tmp_path, monkeypatch):
    import json

    from acm_exp import calibration
    from acm_exp.calibration import CalibrationSet

    picked = CalibrationSet(
        name="s1k",
        texts=["Q1", "Q2"],
        indices=[4, 2],
        selection_hash="abc",
        spec="s1k:cluster(k=20,per=1,seed=42,pick=reference,shuffle_seed=54)",
        corpus_size=1000,
        records=[{"question": " Q1", "solution": "1", "cot_type": "x"}, {"question": "Q2", "solution": "2"}],
    )
    seen = {}
    monkeypatch.setattr(calibration, "select_calibration", lambda cfg: seen.setdefault("cfg", cfg) and picked)
    gpu_check = load_script()
    assert gpu_check.main(["--prepare-calibration", str(tmp_path / "out" / "s1k.json"), "--per-cluster", "1"]) == 0
    written = json.loads((tmp_path / "out" / "s1k.json").read_text())
    assert written["texts"] == ["Q1", "Q2"]
    assert written["sens"]["base"]["examples"][0] == ["<|question|>\nQ1\n\n<|cot_solution|>\n", "1"]
    assert written["sens"]["finetuned"]["description"] == "template (short answers)"
    assert (seen["cfg"].per_cluster, seen["cfg"].cluster_pick, seen["cfg"].source) == (
        1,
        "reference",
        "simplescaling/s1K",
    )


def test_gpu_check_rehearsal_needs_its_calibration_file(tmp_path, capsys):
    gpu_check = load_script()
    assert gpu_check.main(["--tiny", "--device", "cpu", "--calibration", str(tmp_path / "missing.json")]) == 2
    assert "--rehearsal needs --calibration FILE" in capsys.readouterr().out
