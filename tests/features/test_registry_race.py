"""The Feast registry under concurrent writers and readers, with real processes.

Two processes (a subprocess and the test's own) materialize over and over, each rewriting
``registry.db`` twice per view, while a third refreshes the registry and reads a feature view in
a loop: the reader never errs (the
registry is replaced whole, never rewritten in place) and no writer's update is lost (the
registry lock serializes them, and each re-reads the registry under it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.config import IngestConfig
from data.ingest import ingest
from features.build import build
from features.config import FeatureConfig
from features.store import apply, materialize, open_store
from tests.helpers import ROOT

QUIET = {"log": lambda _: None}
ROUNDS = 3
WRITER = """
import sys
from features.config import FeatureConfig
from features.store import materialize, open_store
store = open_store(FeatureConfig(repo_path=sys.argv[1]))
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    materialize(store, log=lambda _: None)
"""
READER = """
import json, sys, time
from pathlib import Path
from features.config import FeatureConfig
from features.store import open_store
store = open_store(FeatureConfig(repo_path=sys.argv[1]))
stop = Path(sys.argv[2])
reads, errors = 0, []
print("ready", flush=True)
while not stop.exists():
    try:
        store.refresh_registry()
        assert store.get_feature_view("user_stats").name == "user_stats"
        reads += 1
    except Exception as exc:  # counted and reported: any error fails the test
        errors.append(repr(exc)[:300])
    time.sleep(0.001)
print(json.dumps({"reads": reads, "errors": len(errors), "first": errors[:3]}))
"""


@pytest.fixture(scope="module")
def small_workspace(tmp_path_factory) -> FeatureConfig:
    """A few hundred synthetic events, ingested, built, applied and materialized."""
    folder = tmp_path_factory.mktemp("registry-race")
    rng = np.random.default_rng(0)
    events = pd.DataFrame({"user_id": rng.integers(1, 30, 400), "item_id": rng.integers(1, 40, 400),
                           "rating": rng.integers(1, 6, 400),
                           "timestamp": 1_600_000_000 + np.arange(400) * 3_600})
    events.to_csv(folder / "events.csv", index=False)
    cfg = FeatureConfig(repo_path=folder / "ws")
    ingest(IngestConfig(format="generic", path=folder / "events.csv"), cfg.data_dir, **QUIET)
    build(cfg, **QUIET)
    store = open_store(cfg)
    apply(store, **QUIET)
    materialize(store, **QUIET)
    return cfg


def _intervals(cfg: FeatureConfig) -> dict[str, int]:
    store = open_store(cfg)
    return {v.name: len(v.materialization_intervals) for v in store.list_feature_views()
            if v.online}  # offline-only views (the event log) are never materialized


def _start(script: str, *args: str | Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", f"exited with {proc.wait()}"
    return proc


def test_registry_readers_never_fail_while_two_writers_materialize(small_workspace, tmp_path):
    before = _intervals(small_workspace)
    repo, stop = small_workspace.repo_path, tmp_path / "stop"
    reader = _start(READER, repo, stop)
    try:
        writer = _start(WRITER, repo, ROUNDS)
        store = open_store(small_workspace)
        for _ in range(ROUNDS):
            materialize(store, **QUIET)
        assert writer.wait(timeout=120) == 0
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["errors"] == 0, result
    assert result["reads"] > 20, result
    assert _intervals(small_workspace) == {name: n + 2 * ROUNDS for name, n in before.items()}

