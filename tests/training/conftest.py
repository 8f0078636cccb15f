"""Fixtures of the training tests: the tiny preset over the session's ML-100K workspace."""

from __future__ import annotations

import pytest

from irec.config import PlatformConfig
from training.data.sequences import SequenceData
from training.models.config import InterestModelConfig
from training.train import fit, model_config, prepare_data


@pytest.fixture(scope="module")
def tiny(ml100k_workspace) -> tuple[PlatformConfig, SequenceData]:
    cfg = PlatformConfig.load("configs/tiny.yaml",
                              {"features.repo_path": str(ml100k_workspace.repo_path)})
    return cfg, prepare_data(cfg.features, cfg.training, log=lambda _: None)


def resolved(cfg: PlatformConfig, data: SequenceData, log=lambda _: None) -> InterestModelConfig:
    """The preset's model config resolved against ``data``, as the pipeline resolves it."""
    return model_config(cfg.training, cfg.features, data, cfg.ingest.rating_max, log)


def fit_preset(cfg: PlatformConfig, data: SequenceData, log=lambda _: None,
               run_id: str | None = None):
    """Ray Train over ``data`` with the preset's training section; the Ray Train result."""
    return fit(cfg.training, resolved(cfg, data), data, log, run_id)
