"""The benchmark and calibration copies ship inside the package, and a lone clone evaluates offline.

A researcher who clones only the repository must get the same offline benchmarks as this checkout:
the copies, their checksums and provenance are package data, nothing is read from beside the
checkout, and an evaluation from a fresh copy of the repository finds every shipped benchmark.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from acm_exp.errors import ConfigError
from acm_exp.paths import PACKAGED_DATA_DIR, data_dir, sha256_file

ROOT = Path(__file__).resolve().parent.parent
# Benchmark YAML name -> rows of its shipped copy (the full test sets).
SHIPPED_BENCHMARKS = {
    "gsm8k": 1319,
    "math500": 500,
    "aime24": 30,
    "minerva_math": 272,
    "olympiadbench": 675,
    "college_math": 2818,
    "humaneval_pro": 164,
}
# Positions of the lone-clone test's models: the longest shipped prompt, byte by byte, fits.
CONTEXT = 16384


def _data_files() -> list[str]:
    return sorted(
        str(path.relative_to(PACKAGED_DATA_DIR))
        for path in PACKAGED_DATA_DIR.rglob("*")
        if path.is_file() and path.name not in ("README.md", "SHA256SUMS") and "__pycache__" not in path.parts
    )


def _checksums() -> dict[str, str]:
    lines = (PACKAGED_DATA_DIR / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines if line.strip())}


def test_every_shipped_file_has_its_checksum_and_matches_it():
    checksums = _checksums()
    assert sorted(checksums) == _data_files()
    for name, digest in checksums.items():
        assert sha256_file(PACKAGED_DATA_DIR / name) == digest, f"{name} differs from its recorded checksum"


def test_the_data_readme_gives_every_file_its_provenance_and_licence():
    readme = (PACKAGED_DATA_DIR / "README.md").read_text()
    rows = {
        cells[0].strip("` "): cells
        for cells in (
            [cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in readme.splitlines()
            if line.startswith("| `")
        )
    }
    assert sorted(rows) == _data_files()
    for name, cells in rows.items():
        # file | rows | fields | source | licence | gold answer: every cell filled in.
        assert len(cells) == 6 and all(cells), f"incomplete provenance row for {name}"


def test_every_shipped_file_is_declared_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["acm_exp"]
    for name in [*_data_files(), "README.md", "SHA256SUMS"]:
        assert any(fnmatch.fnmatch(f"data/{name}", pattern) for pattern in patterns), f"{name} is not package data"


@pytest.mark.parametrize("name, rows", sorted(SHIPPED_BENCHMARKS.items()))
def test_each_benchmark_yaml_points_at_its_shipped_copy(name, rows):
    import yaml

    local_path = yaml.safe_load((ROOT / "conf" / "eval" / "benchmark" / f"{name}.yaml").read_text())["local_path"]
    path = PACKAGED_DATA_DIR / local_path
    count = len(json.loads(path.read_text())) if path.suffix == ".json" else len(path.read_text().splitlines())
    assert count == rows


def test_data_dir_defaults_to_the_shipped_copies_and_accepts_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("ACM_EXP_DATA_DIR", raising=False)
    assert data_dir() == PACKAGED_DATA_DIR
    monkeypatch.setenv("ACM_EXP_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    assert data_dir(tmp_path / ".") == tmp_path
    with pytest.raises(ConfigError, match=r"data_dir='.*missing' is not a directory"):
        data_dir(tmp_path / "missing")
    monkeypatch.setenv("ACM_EXP_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(ConfigError, match=r"\$ACM_EXP_DATA_DIR='.*gone' is not a directory"):
        data_dir()


def test_nothing_in_the_repository_refers_to_files_beside_it():
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # Spelled in two pieces so that this file does not match itself.
    pattern = re.compile(r"\.\./" + "shared|DESIGN" + r"\.md")
    offenders = [
        name
        for name in tracked
        if (ROOT / name).is_file()
        and not name.startswith("acm_exp/data/")
        and pattern.search((ROOT / name).read_text(errors="replace"))
    ]
    assert offenders == []


def _copy_of_the_repository(target: Path) -> Path:
    """The repository's files as a clone has them: git's tracked and untracked-but-not-ignored
    files, without the venv, outputs or caches (as .ci/run copies them for the main job)."""
    names = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def _long_context_pair(root: Path) -> list[str]:
    """A tiny pair with a byte-level tokenizer (any benchmark text and stop string encodes) and a
    context that holds the longest shipped prompt, as command-line overrides."""
    from model_factory import make_model

    from acm_exp.toy import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.model_max_length = CONTEXT
    base = make_model(root / "base", seed=0, vocab_size=len(tokenizer))
    finetuned = make_model(root / "finetuned", seed=1, from_model=base, vocab_size=len(tokenizer))
    for model in (base, finetuned):
        tokenizer.save_pretrained(model)
        config = json.loads((model / "config.json").read_text())
        config.update(max_position_embeddings=CONTEXT, eos_token_id=tokenizer.eos_token_id)
        config.update(pad_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
        (model / "config.json").write_text(json.dumps(config))
    return ["model_pair=custom", f"model_pair.base={base}", f"model_pair.finetuned=[{finetuned}]"]


@pytest.mark.slow
def test_a_lone_clone_evaluates_every_shipped_benchmark_offline(tmp_path):
    # The clone lies in an empty directory: nothing beside it, no data_dir, no network.
    clone = _copy_of_the_repository(tmp_path / "lone" / "acm_exp-clone")
    assert sorted(os.listdir(clone.parent)) == ["acm_exp-clone"]
    pair = _long_context_pair(tmp_path / "models")
    results = tmp_path / "results"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ACM_EXP_", "HF_"))}
    env.update(
        PYTHONPATH=str(clone),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="disabled",
        ACM_EXP_CACHE=str(tmp_path / "cache"),
        HF_HOME=str(tmp_path / "hf-home"),
    )
    shipped = sorted(SHIPPED_BENCHMARKS)
    overrides = [
        *pair,
        "merge=task_arithmetic",
        f"merge.output_dir={tmp_path / 'merged'}",
        "eval=l2s",
        "+eval/benchmark@eval.benchmarks.humaneval_pro=humaneval_pro",
        "eval.models=[merged]",
        "eval.backend=hf",
        "eval.device=cpu",
        "eval.dtype=float32",
        "eval.limit=2",
        "eval.max_new_tokens=4",
        f"logger.results_dir={results}",
        "logger=disabled",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    probe = subprocess.run(
        [sys.executable, "-c", "import acm_exp, acm_exp.paths as p; print(acm_exp.__file__); print(p.data_dir())"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert probe == [str(clone / "acm_exp" / "__init__.py"), str(clone / "acm_exp" / "data")]
    run = subprocess.run(
        [sys.executable, "-m", "acm_exp", *overrides], cwd=clone, env=env, capture_output=True, text=True, timeout=1200
    )
    assert run.returncode == 0, run.stderr[-3000:]
    frame = __import__("pandas").concat(
        [__import__("pandas").read_parquet(path) for path in sorted(results.rglob("*.parquet"))]
    )
    assert sorted(frame["benchmark"]) == shipped
    assert set(frame["n"]) == {2}
    shutil.rmtree(clone)
