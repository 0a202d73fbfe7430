"""Where models run and in which dtype: every ``*.device`` and ``*.dtype`` setting is read here.

Devices (``merge.device``, ``acm.device``, ``sens.device``, ``eval.device``), one of DEVICE_CHOICES:

    auto      cuda when CUDA is available, else cpu (acm/sens: every visible GPU, see resolve_placement)
    cpu       the CPU
    cuda      the current CUDA device
    cuda:N    CUDA device N; N must be visible

``acm.device`` and ``sens.device`` may also list several (``cuda:0,cuda:1``), with ``max_memory``
and ``offload_dir``: a ``Placement`` (accelerate's dispatch). Other accelerators (mps, xpu) are
not supported: the merge and the statistics were only checked on CUDA and CPU.

Dtypes, DTYPE_ALIASES (a ``torch.`` prefix is also accepted): ``float32``/``fp32``,
``bfloat16``/``bf16``, ``float16``/``fp16``, and ``auto`` where the setting allows it
(``eval.dtype``: the checkpoint's own dtype). ``dtype_name`` gives the canonical name (vLLM's
view, and what cache keys record), ``resolve_dtype`` the torch dtype (transformers' view).

Every bad value is a one-line ConfigError naming the setting and the accepted values. torch is
imported on first use, so reading this module stays light.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acm_exp.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:<index>"
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")

AUTO_DTYPE = "auto"
# Accepted name -> canonical name (torch's attribute and vLLM's dtype string).
DTYPE_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


# ---------------------------------------------------------------------------------------------
# Devices


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(device: Any, setting: str, *, cuda: bool | None = None) -> torch.device:
    """The one device that ``<setting>=device`` names (see the module docstring).

    ``cuda``: whether CUDA is usable here; None asks torch.
    """
    import torch

    if not isinstance(device, str) or not _DEVICE_PATTERN.fullmatch(device):
        raise ConfigError(f"{setting}={device!r}; expected {DEVICE_CHOICES}")
    usable = cuda_available() if cuda is None else cuda
    if device == "auto":
        return torch.device("cuda" if usable else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not usable:
        raise ConfigError(f"{setting}={device!r} but CUDA is not available on this machine; expected cpu or auto")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ConfigError(f"{setting}={device!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return resolved


def check_device(device: Any, setting: str) -> None:
    """``resolve_device``'s checks without its result: torch is imported only for a CUDA device (is it
    visible?), so validating ``cpu`` or ``auto`` stays light."""
    if not isinstance(device, str) or not _DEVICE_PATTERN.fullmatch(device):
        raise ConfigError(f"{setting}={device!r}; expected {DEVICE_CHOICES}")
    if device.startswith("cuda"):
        resolve_device(device, setting)


def free_accelerator_memory() -> None:
    """Return the memory of dropped models: collect the garbage, then empty CUDA's cache."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# Dtypes


def dtype_name(dtype: Any, setting: str, *, allow_auto: bool = False) -> str:
    """The canonical name of ``<setting>=dtype`` (``float32``, ``bfloat16``, ``float16``, or ``auto``)."""
    name = dtype.removeprefix("torch.") if isinstance(dtype, str) else None
    if allow_auto and name == AUTO_DTYPE:
        return AUTO_DTYPE
    if name not in DTYPE_ALIASES:
        accepted = (AUTO_DTYPE, *DTYPE_ALIASES) if allow_auto else tuple(DTYPE_ALIASES)
        raise ConfigError(f"{setting}={dtype!r}; expected one of {', '.join(accepted)}")
    return DTYPE_ALIASES[name]


def resolve_dtype(dtype: Any, setting: str, *, allow_auto: bool = False) -> torch.dtype | str:
    """The torch dtype of ``<setting>=dtype``, or ``"auto"`` when allowed and given."""
    import torch

    name = dtype_name(dtype, setting, allow_auto=allow_auto)
    return name if name == AUTO_DTYPE else getattr(torch, name)


# ---------------------------------------------------------------------------------------------
# Placement over several devices

# Of each device's free memory, the share a placement without max_memory leaves to activations
# (one sample's lm_head outputs, the MI's working memory) rather than to weights.
ACTIVATION_HEADROOM = 0.1


@dataclass(frozen=True)
class Placement:
    """Where a stage's models go: compute ``devices`` and the weight budget of each memory tier.

    One device without ``max_memory`` loads every model whole onto it. Otherwise transformers'
    ``device_map="auto"`` lets accelerate place each model's modules over the tiers of
    ``max_memory`` (GPU indices, ``"cpu"``; beyond them ``"disk"`` under ``offload_dir``), each
    model of a stage getting ``1/side_by_side`` of every tier, since they run side by side on every
    sample (capture: base and compared model).
    """

    devices: tuple[torch.device, ...]
    # accelerate's form: {gpu index or "cpu": bytes}; empty = the devices' free memory.
    max_memory: tuple[tuple[int | str, int], ...] = ()
    offload_dir: str | None = None

    @property
    def primary(self) -> torch.device:
        return self.devices[0]

    @property
    def dispatched(self) -> bool:
        return len(self.devices) > 1 or bool(self.max_memory)

    def describe(self) -> str:
        devices = ",".join(str(device) for device in self.devices)
        if not self.max_memory:
            return devices
        budget = ", ".join(f"{tier}: {size / 2**30:.3g} GiB" for tier, size in self.max_memory)
        return f"{devices} (max_memory {budget}" + (f"; offload to {self.offload_dir})" if self.offload_dir else ")")

    def memory_per_model(self, side_by_side: int) -> dict[int | str, int]:
        """Each model's budget per tier: ``max_memory`` (else accelerate's reading of the free
        memory, less ACTIVATION_HEADROOM) divided among the models held together."""
        if self.max_memory:
            budget = dict(self.max_memory)
        else:
            from accelerate.utils import get_max_memory

            free = get_max_memory()
            budget = {tier: int(free[tier] * (1 - ACTIVATION_HEADROOM)) for tier in _memory_tiers(self.devices)}
        return {tier: size // side_by_side for tier, size in budget.items()}

    def load_arguments(self, side_by_side: int = 1) -> dict[str, Any]:
        """``from_pretrained`` keyword arguments for one of ``side_by_side`` models of a stage."""
        if not self.dispatched:
            return {"device_map": str(self.primary)}
        arguments: dict[str, Any] = {"device_map": "auto", "max_memory": self.memory_per_model(side_by_side)}
        if self.offload_dir is not None:
            arguments["offload_folder"] = self.offload_dir
        return arguments


def _memory_tier(device: torch.device) -> int | str:
    return "cpu" if device.type == "cpu" else (device.index or 0)


def _memory_tiers(devices: Sequence[torch.device]) -> list[int | str]:
    return list(dict.fromkeys(_memory_tier(device) for device in devices))


def _device_list(device: Any, setting: str) -> list[str]:
    if isinstance(device, str):
        names = [part.strip() for part in device.strip().strip("[]").split(",")]
    elif isinstance(device, Sequence) and not isinstance(device, (bytes, bytearray)):
        names = [str(part).strip() for part in device]
    else:
        names = []
    if not names or not all(names):
        raise ConfigError(
            f"{setting}={device!r}; expected auto, cpu, cuda:<index> or a list of devices such as [cuda:0,cuda:1]"
        )
    return names


def _memory_budget(max_memory: Any, setting: str) -> dict[int | str, int]:
    """``<setting>.max_memory`` in accelerate's form: {GPU index or "cpu": bytes}."""
    from accelerate.utils import convert_file_size_to_int

    if not hasattr(max_memory, "items"):
        raise ConfigError(
            f"{setting}.max_memory={max_memory!r}; expected a mapping device -> size, e.g. "
            "{0: 70GiB, cpu: 100GiB} (GPUs by index)"
        )
    budget: dict[int | str, int] = {}
    for key, size in max_memory.items():
        name = f"cuda:{key}" if isinstance(key, int) or str(key).isdigit() else str(key)
        tier = _memory_tier(resolve_device(name, f"{setting}.max_memory"))
        try:
            budget[tier] = convert_file_size_to_int(size)
        except (ValueError, TypeError, AttributeError):
            budget[tier] = -1
        if isinstance(size, bool) or budget[tier] <= 0:
            raise ConfigError(
                f"{setting}.max_memory.{key}={size!r}; expected a positive size such as 40GiB or "
                "500MB, GPUs keyed by index ({0: 70GiB, cpu: 100GiB})"
            )
    return budget


def resolve_placement(
    device: Any = "auto", max_memory: Any = None, offload_dir: Any = None, *, setting: str = "acm"
) -> Placement:
    """The placement of ``<setting>.device`` / ``.max_memory`` / ``.offload_dir``.

    ``device``: ``auto`` (every visible GPU, else the CPU), one device, or several as a list or a
    comma-separated string (``cuda:0,cuda:1``). ``max_memory``: {device: size} with sizes as
    accelerate reads them (``"40GiB"``, ``"500MB"``, bytes); devices are ``cpu``, ``cuda:<i>`` or a
    GPU index; a ``cpu`` entry beside GPUs is accelerate's CPU offload. ``offload_dir``: where
    accelerate offloads what fits no tier (disk offload, the last resort).
    """
    import torch

    if device == "auto":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        devices = [torch.device(f"cuda:{index}") for index in range(count)] or [torch.device("cpu")]
    else:
        devices = [resolve_device(name, f"{setting}.device") for name in _device_list(device, f"{setting}.device")]
        devices = [torch.device("cuda:0") if d.type == "cuda" and d.index is None else d for d in devices]
    if len(set(devices)) != len(devices):
        raise ConfigError(f"{setting}.device={device!r} names a device twice; expected distinct devices")
    if len(devices) > 1 and any(d.type == "cpu" for d in devices):
        raise ConfigError(
            f"{setting}.device={device!r} mixes cpu with GPUs; list the GPUs and give the CPU's share "
            f"as {setting}.max_memory.cpu (accelerate's CPU offload)"
        )
    budget = _memory_budget(max_memory, setting) if max_memory else {}
    if budget:
        missing = [str(d) for d in devices if _memory_tier(d) not in budget]
        if missing:
            raise ConfigError(
                f"{setting}.max_memory names no size for {', '.join(missing)}; expected one per device "
                f"of {setting}.device"
            )
        extra = [tier for tier in budget if tier != "cpu" and tier not in _memory_tiers(devices)]
        if extra:
            raise ConfigError(f"{setting}.max_memory has GPU {extra[0]}, which is not in {setting}.device={device!r}")
    _check_offload_dir(offload_dir, setting)
    return Placement(tuple(devices), tuple(budget.items()), str(offload_dir) if offload_dir is not None else None)


def _check_offload_dir(offload_dir: Any, setting: str) -> None:
    if offload_dir is not None and (not isinstance(offload_dir, (str, Path)) or not str(offload_dir)):
        raise ConfigError(f"{setting}.offload_dir={offload_dir!r}; expected a directory path or null")


def check_placement(cfg, setting: str) -> None:
    """``placement_of``'s checks without its result: torch is imported only where they depend on the
    GPUs (a CUDA device, or a memory budget to match against the devices)."""
    if cfg.device in ("auto", "cpu") and not getattr(cfg, "max_memory", None):
        _check_offload_dir(getattr(cfg, "offload_dir", None), setting)
        return
    placement_of(cfg, setting)


def placement_of(cfg, setting: str) -> Placement:
    """The placement of a config group with ``device`` (and optionally ``max_memory``, ``offload_dir``)."""
    return resolve_placement(
        cfg.device, getattr(cfg, "max_memory", None), getattr(cfg, "offload_dir", None), setting=setting
    )
