"""Fixtures of the training tests: the tiny preset over the session's ML-100K workspace."""

from __future__ import annotations

import pytest

from irec.config import PlatformConfig
from training.train import prepare_data


@pytest.fixture(scope="module")
def tiny(ml100k_workspace):
    """(the tiny preset pointed at the workspace, its leave-one-out sequence data)."""
    cfg = PlatformConfig.load("configs/tiny.yaml",
                              {"features.repo_path": str(ml100k_workspace.repo_path)})
    return cfg, prepare_data(cfg, log=lambda _: None)
