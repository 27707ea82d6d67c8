import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path, monkeypatch):
    """Every test gets its own empty artifact cache."""
    monkeypatch.setenv("SAELIB_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"
