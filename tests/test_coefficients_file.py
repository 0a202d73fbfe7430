"""coefficients.json: one module writes and reads it, for ACM's λ and Sens-Merging's weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from acm_exp.coefficients_file import (
    AcmCoefficientsFile,
    SensCoefficientsFile,
    read_coefficients,
    write_coefficients,
)
from acm_exp.errors import DataError

REPO = Path(__file__).resolve().parent.parent
POINTS = ("embed_tokens", "layers.0", "layers.1", "norm", "lm_head")


def acm_file() -> AcmCoefficientsFile:
    return AcmCoefficientsFile(
        t=0.7,
        shift="per_point_max",
        reduce="mean_of_sigmoids",
        point_names=POINTS,
        model_names=("b", "a"),
        lambdas=np.arange(10, dtype=float).reshape(2, 5) / 10,
        mi_per_sample=np.arange(30, dtype=float).reshape(2, 5, 3),
        metadata={"against": "finetuned"},
        statistics_metadata={"cache_key": "k"},
    )


def sens_file() -> SensCoefficientsFile:
    return SensCoefficientsFile(
        alpha=0.7,
        temperature=2.0,
        c_base=np.array([0.9, 1.2]),
        c_ft=np.array([1.1, 0.8]),
        s_base=np.array([0.6, 0.8]),
        s_ft=np.array([0.8, 0.6]),
        metadata={"base": {}},
    )


def test_importing_the_reader_and_the_figures_loads_no_torch():
    code = (
        "import sys, acm_exp.coefficients_file, acm_exp.figures; print(sorted(m for m in sys.modules if m == 'torch'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_acm_file_round_trip(tmp_path):
    written = acm_file()
    path = write_coefficients(tmp_path / "run" / "coefficients.json", written)
    data = json.loads(path.read_text())
    assert list(data) == ["t", "shift", "reduce", "point_names", "metadata", "statistics_metadata", "models"]
    assert data["models"][0]["points"]["layers.1"] == {
        "lambda": 0.2,
        "mi": {"mean": 7.0, "std": pytest.approx((2 / 3) ** 0.5), "min": 6.0, "max": 8.0},
        "mi_per_sample": [6.0, 7.0, 8.0],
    }
    read = read_coefficients(path, AcmCoefficientsFile)
    np.testing.assert_array_equal(read.lambdas, written.lambdas)
    np.testing.assert_array_equal(read.mi_per_sample, written.mi_per_sample)
    assert (read.point_names, read.model_names, read.t) == (POINTS, ("b", "a"), 0.7)
    assert (read.metadata, read.statistics_metadata) == ({"against": "finetuned"}, {"cache_key": "k"})
    assert not list(path.parent.glob(".*.tmp"))


def test_lambda_rows_are_in_plot_order_per_model():
    rows = acm_file().lambda_rows()
    assert rows[:5] == [
        ["a", "embed_tokens", 0, 0.5],
        ["a", "layers.0", 1, 0.6],
        ["a", "layers.1", 2, 0.7],
        ["a", "norm", 3, 0.8],
        ["a", "lm_head", 4, 0.9],
    ]
    assert [row[0] for row in rows[5:]] == ["b"] * 5


def test_sens_file_round_trip_and_kind(tmp_path):
    path = write_coefficients(tmp_path / "coefficients.json", sens_file())
    data = json.loads(path.read_text())
    assert (data["method"], data["num_layers"], data["layers"][1]) == (
        "sens",
        2,
        {"layer": 1, "c_base": 1.2, "c_ft": 0.8, "s_base": 0.8, "s_ft": 0.6},
    )
    read = read_coefficients(path)
    assert isinstance(read, SensCoefficientsFile)
    np.testing.assert_array_equal(read.c_ft, [1.1, 0.8])
    assert (read.alpha, read.temperature, read.metadata) == (0.7, 2.0, {"base": {}})
    with pytest.raises(DataError, match=r"has Sens-Merging weights; expected ACM λ"):
        read_coefficients(path, AcmCoefficientsFile)


def test_the_providers_write_through_this_module(tmp_path):
    from acm_exp.acm.coefficients import compute_coefficients
    from acm_exp.acm.sensitivity import SensCoefficients
    from acm_exp.acm.stats import MIStatistics

    statistics = MIStatistics(mi=acm_file().mi_per_sample, point_names=POINTS, model_names=("b", "a"))
    acm = compute_coefficients(statistics, 0.7)
    acm_path = acm.to_json(tmp_path / "acm.json")
    assert acm_path.read_text() == json.dumps(acm.to_file().to_dict(), indent=2) + "\n"
    np.testing.assert_array_equal(read_coefficients(acm_path, AcmCoefficientsFile).lambdas, acm.lambdas)
    stored = sens_file()
    sens = SensCoefficients(
        c_base=stored.c_base,
        c_ft=stored.c_ft,
        alpha=stored.alpha,
        temperature=stored.temperature,
        s_base=stored.s_base,
        s_ft=stored.s_ft,
    )
    sens_path = sens.to_json(tmp_path / "sens.json")
    np.testing.assert_array_equal(read_coefficients(sens_path, SensCoefficientsFile).c_base, sens.c_base)


def broken(data: dict) -> dict:
    """A valid ACM file's dict with ``data``'s keys replaced."""
    return {**acm_file().to_dict(), **data}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is unreadable (JSONDecodeError"),
        (json.dumps([1, 2]), "has a JSON list; expected an object"),
        (json.dumps({"models": {"ft": {"model.layers.0": 0.4}}}), "has keys ['models']; expected ACM λ"),
        (json.dumps(broken({"point_names": ["layers.0", "mlp"]})), "point_names=['layers.0', 'mlp']; expected"),
        (json.dumps(broken({"t": "0.7"})), "has t='0.7'; expected a number"),
        (json.dumps(broken({"models": []})), "has an empty 'models' list"),
        (json.dumps(broken({"models": [{"name": "ft", "points": {"layers.0": {"lambda": 1}}}]})), "models[0] points"),
        (json.dumps({"method": "sens", "layers": []}), "has no 'num_layers'; expected an integer"),
    ],
)
def test_a_bad_file_is_one_data_error_naming_it(tmp_path, content, message):
    path = tmp_path / "coefficients.json"
    path.write_text(content)
    with pytest.raises(DataError) as error:
        read_coefficients(path)
    assert str(error.value).startswith(f"coefficients file {path} ")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="absent.json is unreadable .FileNotFoundError"):
        read_coefficients(tmp_path / "absent.json")
