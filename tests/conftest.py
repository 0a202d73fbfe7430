from __future__ import annotations

from pathlib import Path

import pytest

from acm_exp.paths import data_dir as find_data_dir


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The benchmark and calibration copies the package ships (or $ACM_EXP_DATA_DIR when set)."""
    return find_data_dir()


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (not available on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def toy_pair(tmp_path_factory) -> dict[str, Path]:
    """The toy L2S pair (acm_exp.toy), built once per test session (~1 min on CPU): role -> model dir."""
    from acm_exp import toy

    cache_dir = tmp_path_factory.getbasetemp() / "toy_cache"
    return {role: toy.ensure_toy_model(role, cache_dir=cache_dir) for role in toy.TOY_ROLES}


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from threads; on a shared CPU OpenMP's spinning threads slow them down."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
