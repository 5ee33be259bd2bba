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
    # tools/ holds scripts run by path; tests import them through this helper only.
    sys.path.insert(0, REPO_ROOT)
