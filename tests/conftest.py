"""Session fixtures: the shared datasets, a real redis-server, one ML-100K feature workspace.

Everything here is real: Feast with DuckDB + SQLite, and a ``redis-server`` process on a free
loopback port (installed by ``make setup``; the suite fails, not skips, without it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import redis
import torch

from data.config import IngestConfig
from features.config import FeatureConfig
from irec.config import PlatformConfig
from tests.helpers import ROOT, free_port, wait_until

DATASETS = Path(os.environ.get("IREC_DATASETS", ROOT.parent / "shared" / "datasets"))

# A private BentoML model store for the whole session (read by BentoML when first used).
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="irec-bentoml-")


@pytest.fixture(scope="session")
def datasets() -> Path:
    assert (DATASETS / "ml-100k" / "u.data").exists(), (
        f"shared datasets not found at {DATASETS} (set IREC_DATASETS)"
    )
    return DATASETS


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on 127.0.0.1:<free port>; yields its connection string."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: run `make setup`"
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    client = redis.Redis(host="127.0.0.1", port=port)

    def answers() -> bool:
        assert proc.poll() is None, f"redis-server exited with {proc.returncode}"
        return client.ping()

    try:
        wait_until(answers, 10, f"redis-server to answer PING on port {port}",
                   ignore=(redis.ConnectionError,))
    except BaseException:
        proc.kill()
        raise
    connection = f"127.0.0.1:{port}"
    previous = os.environ.get("REDIS_CONNECTION_STRING")
    os.environ["REDIS_CONNECTION_STRING"] = connection
    yield client
    proc.terminate()
    proc.wait(timeout=10)
    if previous is None:
        os.environ.pop("REDIS_CONNECTION_STRING", None)
    else:
        os.environ["REDIS_CONNECTION_STRING"] = previous


@pytest.fixture(scope="session")
def ml100k_workspace(tmp_path_factory, datasets) -> FeatureConfig:
    """ML-100K ingested, features built, applied and fully materialized into SQLite."""
    from data.ingest import ingest
    from features.build import build
    from features.store import apply, materialize, open_store

    cfg = FeatureConfig(repo_path=tmp_path_factory.mktemp("ml100k"))
    ingest(IngestConfig(path=datasets / "ml-100k"), cfg.data_dir, log=lambda _: None)
    build(cfg, log=lambda _: None)
    store = open_store(cfg)
    apply(store, log=lambda _: None)
    materialize(store, log=lambda _: None)
    return cfg


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster per test session, with explicit small resources. With the
    dashboard, as a cluster has it: Ray Train frees a trial's placement group that Ray Tune
    stopped only through the dashboard's state API (see ``irec.console.init_ray``)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def untrained(ml100k_workspace):
    """A real-sized model over real data; training is not what these tests are about."""
    from features.store import open_store, schema_hash
    from training.train import build_model, model_config, prepare_data

    cfg = PlatformConfig.load("configs/tiny.yaml",
                              {"features.repo_path": str(ml100k_workspace.repo_path)})
    data = prepare_data(cfg.features, cfg.training, log=lambda _: None)
    torch.manual_seed(0)
    mcfg = model_config(cfg.training, cfg.features, data, cfg.ingest.rating_max,
                        log=lambda _: None)
    model = build_model(mcfg, data).eval()
    items = pd.read_parquet(ml100k_workspace.data_dir / "items.parquet")
    store = open_store(ml100k_workspace)
    services = {s: schema_hash(store, s) for s in ("retrieval_v1", "ranking_v1")}
    return model, data, items, services


