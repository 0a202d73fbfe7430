"""The app's Hydra config as tests compose it.

`compose_config("merge=ties", ...)` = `python -m acm_exp merge=ties ...`."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from acm_exp.config import register_configs

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose_config(*overrides: str, hydra_config: bool = False):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_config)
