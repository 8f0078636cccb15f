"""Serving fixtures: a real-sized (untrained) interest model over the ML-100K workspace."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from features.store import open_store, schema_hash
from irec.config import PlatformConfig
from training.train import build_model, model_config, prepare_data


@pytest.fixture(scope="session")
def untrained(ml100k_workspace):
    """A real-sized model over real data; training is not what these tests are about."""
    cfg = PlatformConfig.load("configs/tiny.yaml",
                              {"features.repo_path": str(ml100k_workspace.repo_path)})
    data = prepare_data(cfg, log=lambda _: None)
    torch.manual_seed(0)
    model = build_model(model_config(cfg, data, log=lambda _: None), data).eval()
    items = pd.read_parquet(ml100k_workspace.data_dir / "items.parquet")
    store = open_store(ml100k_workspace)
    services = {s: schema_hash(store, s) for s in ("retrieval_v1", "ranking_v1")}
    return model, data, items, services


