"""Device and dtype settings: one table of accepted values for every stage, one-line errors naming the setting."""

from __future__ import annotations

import re

import pytest
import torch

from acm_exp.devices import DTYPE_ALIASES, dtype_name, resolve_device, resolve_dtype
from acm_exp.errors import ConfigError


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.mark.parametrize("alias, name", [("fp32", "float32"), ("bf16", "bfloat16"), ("torch.float16", "float16")])
def test_every_alias_has_one_canonical_name_and_torch_dtype(alias, name):
    assert dtype_name(alias, "merge.dtype") == name
    assert resolve_dtype(alias, "merge.dtype") is getattr(torch, name)
    assert set(DTYPE_ALIASES.values()) == {"float32", "bfloat16", "float16"}


def test_auto_dtype_only_where_the_setting_allows_it():
    assert dtype_name("auto", "eval.dtype", allow_auto=True) == resolve_dtype("auto", "eval.dtype", allow_auto=True)
    with pytest.raises(ConfigError, match="acm.dtype='auto'; expected one of float32, fp32") as error:
        resolve_dtype("auto", "acm.dtype")
    assert "auto" not in str(error.value).split("expected")[1]


@pytest.mark.parametrize("value", ["int8", "float64", None, 16, ["bf16"]])
def test_bad_dtypes_name_the_setting(value):
    with pytest.raises(ConfigError, match=re.escape(f"sens.dtype={value!r}; expected one of")) as error:
        dtype_name(value, "sens.dtype")
    assert "\n" not in str(error.value)


def test_devices_on_a_machine_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", "merge.device") == torch.device("cpu")
    assert resolve_device("cpu", "merge.device") == torch.device("cpu")
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=f"merge.device='{device}' but CUDA is not available"):
            resolve_device(device, "merge.device")


def test_devices_with_gpus(two_gpus):
    assert resolve_device("auto", "eval.device") == torch.device("cuda")
    assert resolve_device("cuda:1", "eval.device") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match="eval.device='cuda:2' but only 2 CUDA device"):
        resolve_device("cuda:2", "eval.device")
    # An explicit answer overrides torch's (the eval backend's own CUDA probe).
    assert resolve_device("auto", "eval.device", cuda=False) == torch.device("cpu")


@pytest.mark.parametrize("value", ["tpu", "mps", "cuda:", "cuda:x", " cpu", 0, None])
def test_unknown_devices_name_the_setting_and_the_accepted_forms(value):
    with pytest.raises(ConfigError, match=f"acm.device={value!r}; expected auto, cpu, cuda or cuda:<index>"):
        resolve_device(value, "acm.device")


@pytest.mark.parametrize("setting", ["acm", "sens"])
def test_statistics_default_to_every_gpu_when_there_are_any(setting, two_gpus):
    from acm_exp.config import AcmConfig, SensConfig
    from acm_exp.devices import placement_of

    section = {"acm": AcmConfig, "sens": SensConfig}[setting]()
    assert section.device == "auto"
    placement = placement_of(section, setting)
    assert placement.devices == (torch.device("cuda:0"), torch.device("cuda:1")) and placement.dispatched


@pytest.mark.parametrize("setting", ["acm", "sens"])
def test_statistics_default_to_the_cpu_without_a_gpu(setting, monkeypatch):
    from acm_exp.config import AcmConfig, SensConfig
    from acm_exp.devices import placement_of

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    placement = placement_of({"acm": AcmConfig, "sens": SensConfig}[setting](), setting)
    assert placement.devices == (torch.device("cpu"),) and not placement.dispatched
