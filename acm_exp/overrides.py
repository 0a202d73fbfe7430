"""Plain Python values as Hydra command-line overrides, and the job config they compose.

The Python API (``acm_exp.api``) turns its arguments into the overrides ``python -m acm_exp`` would
be given (``override_value``, ``pair_overrides``, ...) and composes them with the package's ``conf/``
(``compose_config``); every result keeps its overrides, so the command line that reproduces it is
always known. Nothing here runs a stage.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acm_exp.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
CUSTOM_PAIR = "custom"
EVAL_OFF = "eval=none"
# Words Hydra's override grammar reads as something other than a string.
HYDRA_KEYWORDS = ("null", "true", "false", "inf", "nan")


def _quoted(text: str) -> str:
    """A Hydra override string literal: taken verbatim (no type guessing, commas and colons kept)."""
    # Backslashes right before a quote (or the closing quote) are doubled, then quotes are escaped.
    text = re.sub(r"(\\+)(?='|$)", lambda match: match.group(1) * 2, text)
    return "'" + text.replace("'", "\\'") + "'"


def _is_plain_word(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) is not None and text.lower() not in HYDRA_KEYWORDS


def override_value(key: str, value: Any) -> str:
    """``value`` in Hydra's override grammar, as it would be typed after ``key=`` on the command line.

    Example:
        >>> override_value("merge.t", 0.5), override_value("model_pair.base", "/models/my base")
        ('0.5', "'/models/my base'")
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return "nan"
        if math.isinf(number):
            return "inf" if number > 0 else "-inf"
        return repr(number)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        # A plain word is written bare, as typed on the command line (Hydra echoes it in its errors).
        return value if _is_plain_word(value) else _quoted(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(key, item) for item in value) + "]"
    raise ConfigError(
        f"{key}={value!r} is a {type(value).__name__}; expected a number, string, bool, path, None or a list of them"
    )


def assignments(section: str, values: Mapping[str, Any]) -> list[str]:
    """``section.key=value`` overrides; a mapping value sets its keys one by one (merged, not replaced)."""
    overrides = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            overrides += assignments(f"{section}.{key}", value)
        else:
            overrides.append(f"{section}.{key}={override_value(f'{section}.{key}', value)}")
    return overrides


def conf_dir() -> Path:
    """The package's Hydra config directory (``conf/`` beside ``acm_exp/`` in the checkout)."""
    if not (CONF_DIR / "config.yaml").is_file():
        raise ConfigError(
            f"the config directory {CONF_DIR} is missing; expected the package's checkout "
            "(pip install -e .), which holds conf/ beside acm_exp/"
        )
    return CONF_DIR


def options(group: str) -> list[str]:
    """The options of a config group (``conf/<group>/*.yaml``), by name."""
    return sorted(path.stem for path in (conf_dir() / group).glob("*.yaml"))


def compose_config(overrides: Sequence[str]) -> tuple[DictConfig, str]:
    """The job config ``python -m acm_exp <overrides>`` runs, and its default run directory.

    Hydra's own message for an unknown key or a wrongly typed value becomes a one-line ConfigError.

    Example:
        >>> cfg, run_dir = compose_config(["model_pair=toy", "merge=ties", "merge.k=0.5"])
        >>> cfg.merge.k
        0.5
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    from acm_exp.config import register_configs
    from acm_exp.failures import config_error_line

    register_configs()
    directory = conf_dir()
    # Called from inside another Hydra app: compose ours, then hand the app its own state back.
    outer = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(directory), version_base=None, job_name="acm_exp"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
            run_dir = str(cfg.hydra.run.dir)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(config_error_line(error)) from None
    finally:
        restore_gh_from_backup(outer)
    # As the CLI's task function sees it: the hydra node lives apart (HydraConfig).
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, run_dir


# ---------------------------------------------------------------------------------------------
# Models and model pairs


def model_name(value: Any, role: str) -> str:
    """A model argument (hub id, local directory, ``toy:<role>``, or a path object) as its name."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"model_pair.{role}={value!r}; expected a hub id, a local directory or toy:<role>")
    return value


def finetuned_names(finetuned: Any) -> list[str]:
    """One fine-tuned model or a sequence of them, as names."""
    models = [finetuned] if isinstance(finetuned, (str, os.PathLike)) else list(finetuned or [])
    if not models:
        raise ConfigError(
            "model_pair.finetuned is empty; expected one or more hub ids, local directories or toy:<role>"
        )
    return [model_name(model, f"finetuned[{index}]") for index, model in enumerate(models)]


def named_pairs() -> dict[str, tuple[str, list[str]]]:
    """conf/model_pair/<name>.yaml -> (base, finetuned) for every pair that names its models."""
    from omegaconf import OmegaConf

    pairs = {}
    for name in options("model_pair"):
        loaded = OmegaConf.load(conf_dir() / "model_pair" / f"{name}.yaml")
        node = loaded.get("model_pair", loaded)
        base, finetuned = node.get("base"), node.get("finetuned")
        if isinstance(base, str) and finetuned is not None:
            pairs[name] = (base, [str(model) for model in finetuned])
    return pairs


def pair_overrides(base: Any, finetuned: Any) -> list[str]:
    """``model_pair=<name>`` when a configured pair holds exactly these models (so its prompts, size and
    paper defaults apply, as on the command line), else ``model_pair=custom`` with the models.

    Example:
        >>> pair_overrides("toy:base", "toy:finetuned")
        ['model_pair=toy']
    """
    base_name, finetuned = model_name(base, "base"), finetuned_names(finetuned)
    for name, models in named_pairs().items():
        if models == (base_name, finetuned):
            return [f"model_pair={name}"]
    return [
        f"model_pair={CUSTOM_PAIR}",
        f"model_pair.base={override_value('model_pair.base', base_name)}",
        f"model_pair.finetuned={override_value('model_pair.finetuned', finetuned)}",
    ]


def pair_of_model(model: str) -> tuple[str, str] | None:
    """(pair, role) of the configured pair that holds ``model`` as its base or a fine-tuned model."""
    for name, (base, finetuned) in named_pairs().items():
        if model == base:
            return name, "base"
        if model in finetuned:
            return name, "finetuned"
    return None


def place_overrides(cache_dir: str | os.PathLike | None, data_dir: str | os.PathLike | None) -> list[str]:
    """``cache_dir=`` / ``data_dir=`` as absolute paths, for the ones given."""
    overrides = []
    if cache_dir is not None:
        overrides.append(f"cache_dir={override_value('cache_dir', Path(cache_dir).expanduser().absolute())}")
    if data_dir is not None:
        overrides.append(f"data_dir={override_value('data_dir', Path(data_dir).expanduser().absolute())}")
    return overrides


def method_overrides(method: str) -> list[str]:
    """``merge=<option>`` for a configured method (its YAML sets its defaults), else ``merge.method=``."""
    if not isinstance(method, str) or not method:
        raise ConfigError(f"merge.method={method!r}; expected a merge method name such as 'acm_ties'")
    if method in options("merge"):
        return [f"merge={method}"]
    return [f"merge.method={override_value('merge.method', method)}"]


# ---------------------------------------------------------------------------------------------
# Calibration and evaluation


def calibration_overrides(source: str | os.PathLike, settings: Mapping[str, Any]) -> list[str]:
    """``calibration=<option>`` for a configured corpus, else the CLI default's selection settings
    with ``calibration.source`` pointing at the file or hub dataset (named after it); then ``settings``."""
    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
        raise ConfigError(
            f"calibration.source={source!r}; expected 's1k', 'limo', 'toy', a .json/.jsonl path or a hub dataset id"
        )
    source = os.fspath(source)
    configured = source in options("calibration")
    if configured:
        overrides = [f"calibration={source}"]
    else:
        name = settings.get("name") or Path(source).stem.lower()
        overrides = [
            "calibration=s1k",
            f"calibration.source={override_value('calibration.source', source)}",
            f"calibration.name={override_value('calibration.name', name)}",
        ]
    return overrides + assignments("calibration", {k: v for k, v in settings.items() if k != "name" or configured})


def benchmark_overrides(cfg: DictConfig, benchmarks: Sequence[str] | str | None) -> list[str]:
    """Turn the suite the config chose into exactly ``benchmarks`` (conf/eval/benchmark/<name>.yaml)."""
    if benchmarks is None:
        return []
    wanted = [benchmarks] if isinstance(benchmarks, str) else list(benchmarks)
    available = options("eval/benchmark")
    for name in wanted:
        if name not in available:
            raise ConfigError(f"benchmark {name!r} is unknown; expected any of {', '.join(available)}")
    if not wanted:
        raise ConfigError("benchmarks is empty; expected one or more of " + ", ".join(available))
    chosen = list(cfg.eval.benchmarks)
    return [f"~eval.benchmarks.{name}" for name in chosen if name not in wanted] + [
        f"+eval/benchmark@eval.benchmarks.{name}={name}" for name in wanted if name not in chosen
    ]
