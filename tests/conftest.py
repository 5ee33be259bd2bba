import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(autouse=True)
def _deterministic_seed():
    import torch

    torch.manual_seed(0)
    yield


def pytest_configure(config):
    # This checkout's package wins over any other install of vit_adapter (e.g. an
    # editable install of another worktree), in this process and in subprocesses.
    package_dir = os.path.join(REPO_ROOT, "projects", "ViTAdapter")
    sys.path[:0] = [package_dir, REPO_ROOT]  # REPO_ROOT: train_net.py
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [package_dir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
