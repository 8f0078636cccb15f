"""Item ids allocated in the real online store (SQLite, a real redis-server): atomic across
processes, stable for a retried raw id, and the added items' features readable through Feast."""

from __future__ import annotations

import multiprocessing
import shutil
import time

import numpy as np
import pytest

from data.catalogue_log import CatalogueLog, NewItem
from features.catalogue import Catalogue, write_online
from features.store import apply, online_features, open_store
from tests.helpers import RedisProcess, redis_env


@pytest.fixture(params=["sqlite", "redis"])
def workspace(request, ml100k_workspace, tmp_path):
    """(features config, redis connection or None): the ML-100K tables in a new workspace
    whose online store is empty (registry applied)."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    for path in ml100k_workspace.data_dir.glob("*.parquet"):
        shutil.copy(path, repo / "data" / path.name)
    for name in ("manifest.json", "features.json"):
        shutil.copy(ml100k_workspace.data_dir / name, repo / "data" / name)
    cfg = ml100k_workspace.model_copy(update={"repo_path": repo, "online_store": request.param})
    server = RedisProcess(tmp_path / "redis") if request.param == "redis" else None
    if server is not None:
        server.directory.mkdir()
        server.start()
    connection = server.connection if server else None
    with redis_env(connection):
        apply(open_store(cfg), log=lambda _: None)
        yield cfg, connection
    if server is not None:
        server.close()


def _allocate(cfg_json: str, connection: str | None, raw_ids: list[str], out) -> None:
    """One replica: allocates ``raw_ids`` one call at a time; puts {raw id: id} on ``out``."""
    from features.config import FeatureConfig

    cfg = FeatureConfig.model_validate_json(cfg_json)
    with redis_env(connection):
        catalogue = Catalogue(open_store(cfg), cfg.data_dir)
        out.put({raw: catalogue.allocate([raw])[0].item_id for raw in raw_ids})


def test_racing_replicas_get_distinct_contiguous_ids_and_one_id_per_raw_id(workspace):
    cfg, connection = workspace
    raw = [f"new-{k}" for k in range(40)]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    # 4 processes, each asking for 25 of the 40 raw ids (overlapping) in its own order
    shares = [raw[p * 5:p * 5 + 25][::(-1) ** p] for p in range(4)]
    procs = [ctx.Process(target=_allocate, args=(cfg.model_dump_json(), connection, s, out))
             for s in shares]
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    merged: dict[str, int] = {}
    for answer in got:
        for r, item_id in answer.items():
            assert merged.setdefault(r, item_id) == item_id, f"{r} got two ids"
    assert sorted(merged.values()) == list(range(1683, 1683 + len(merged)))  # after ML-100K
    with redis_env(connection):
        catalogue = Catalogue(open_store(cfg), cfg.data_dir)
        assert catalogue.size() == 1682 + len(merged)
        again = catalogue.allocate(["new-3", "1", "another", "another"])
    assert [a.item_id for a in again] == [merged["new-3"], 1, 1683 + len(merged)] * 1 + [
        1683 + len(merged)]
    assert [(a.new, a.dataset) for a in again] == [(False, False), (False, True),
                                                   (True, False), (False, False)]


def test_ids_continue_after_the_catalogue_log_and_features_are_online(workspace):
    cfg, connection = workspace
    CatalogueLog.of(cfg.data_dir).append([NewItem(item_id=1683, raw_item_id="logged",
                                                  title="Logged", timestamp=time.time())])
    with redis_env(connection):
        store = open_store(cfg)
        catalogue = Catalogue(store, cfg.data_dir)
        first, logged = catalogue.allocate(["opera", "logged"])
        assert (first.item_id, first.new) == (1684, True)
        assert (logged.item_id, logged.new, logged.dataset) == (1683, False, False)
        assert catalogue.raw_ids([1683, 1684]) == {1683: "logged", 1684: "opera"}
        item = NewItem(item_id=1684, raw_item_id="opera", title="Starfall", genres=("Sci-Fi",),
                       year=2026, text="A space opera", timestamp=time.time())
        write_online(store, [item], np.full((1, 384), 0.05, dtype=np.float32))
        got = online_features(store, [{"item_id": 1684}],
                              ["item_profile:title", "item_profile:genres", "item_profile:year",
                               "item_text_embedding:text_embedding"])
    assert (got["title"], got["genres"], got["year"]) == (["Starfall"], [["Sci-Fi"]], [2026])
    assert got["text_embedding"][0] == pytest.approx([0.05] * 384)
