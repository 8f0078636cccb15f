"""Online store behaviour on real SQLite and a real redis-server."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from feast import FeatureService, FeatureStore, FeatureView, Field
from feast.types import Array, Int32

from data.config import IngestConfig
from data.ingest import ingest
from feature_repo.definitions import user, user_decay, user_history_fv
from features.build import build
from features.config import FEATURE_REPO_DIR, FeatureConfig
from features.store import (
    apply,
    materialize,
    online_features,
    open_store,
    schema_hash,
)

QUIET = {"log": lambda _: None}
USER_REFS = ["user_history:hist_item_ids", "user_history:hist_ratings",
             "user_history:hist_timestamps", "user_stats:user_event_count",
             "user_stats:user_mean_rating", "user_stats:user_last_event_ts",
             "user_profile:age", "user_profile:occupation"]
ITEM_REFS = ["item_profile:title", "item_profile:genres", "item_profile:year",
             "item_stats:item_event_count", "item_stats:item_popularity_window",
             "item_text_embedding:text_embedding"]


def _read(store, key: str, ids, refs) -> dict:
    rows = [{key: int(i)} for i in ids]
    return store.get_online_features(features=refs, entity_rows=rows).to_dict()


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        for x, y in zip(a[name], b[name], strict=True):
            if isinstance(x, float) and math.isnan(x):
                assert isinstance(y, float) and math.isnan(y), name
            elif isinstance(x, list) and x and isinstance(x[0], float):
                np.testing.assert_array_equal(np.asarray(x, float), np.asarray(y, float), name)
            else:
                assert x == y, (name, x, y)


@pytest.fixture(scope="module")
def ml100k_redis(ml100k_workspace, redis_server) -> FeatureConfig:
    cfg = ml100k_workspace.model_copy(update={"online_store": "redis"})
    store = open_store(cfg)
    apply(store, **QUIET)
    materialize(store, **QUIET)
    return cfg


def test_online_history_is_the_last_n_events_in_time_order(ml100k_workspace):
    store = open_store(ml100k_workspace)
    events = pd.read_parquet(ml100k_workspace.data_dir / "events.parquet")
    users = sorted(events.user_id.unique())
    got = _read(store, "user_id", users, USER_REFS)
    n = ml100k_workspace.history_length
    for i, user_id in enumerate(users):
        mine = events[events.user_id == user_id].sort_values("event_timestamp", kind="stable")
        assert got["hist_item_ids"][i] == mine.item_id.tolist()[-n:]
        assert got["hist_timestamps"][i] == (
            mine.event_timestamp.astype("int64") // 10**6).tolist()[-n:]
        assert got["user_event_count"][i] == len(mine)
        assert got["user_mean_rating"][i] == pytest.approx(mine.rating.mean())


def test_decay_features_follow_the_request_time(ml100k_workspace):
    store = open_store(ml100k_workspace)
    now = 893_286_638 + 7 * 86_400
    got = online_features(store, [{"user_id": 1}, {"user_id": 99_999}], "retrieval_v1", now)
    stamps = np.asarray(got["hist_timestamps"][0])
    assert got["seconds_since_last_event"][0] == now - stamps.max()
    np.testing.assert_allclose(got["history_decay_weights"][0],
                               0.5 ** ((now - stamps) / (30 * 86_400)))
    # an unknown user gets nulls and no weights, not an error
    assert got["hist_item_ids"][1] is None and got["history_decay_weights"][1] == []


def test_sqlite_and_redis_return_identical_values(ml100k_workspace, ml100k_redis):
    sqlite, redis = open_store(ml100k_workspace), open_store(ml100k_redis)
    users, items = range(1, 944), range(1, 1683)
    _same(_read(sqlite, "user_id", users, USER_REFS), _read(redis, "user_id", users, USER_REFS))
    _same(_read(sqlite, "item_id", items, ITEM_REFS), _read(redis, "item_id", items, ITEM_REFS))


@pytest.mark.parametrize("profile", ["sqlite", "redis"])
def test_materializing_the_same_window_twice_changes_nothing(
    ml100k_workspace, ml100k_redis, profile
):
    cfg = ml100k_workspace if profile == "sqlite" else ml100k_redis
    store = open_store(cfg)
    users = range(1, 944)
    before = _read(store, "user_id", users, USER_REFS)
    end = datetime.now(UTC)
    materialize(store, end=end, **QUIET)
    once = _read(store, "user_id", users, USER_REFS)
    materialize(store, end=end, **QUIET)
    _same(before, once)
    _same(once, _read(store, "user_id", users, USER_REFS))


T1 = datetime(2024, 1, 1, tzinfo=UTC)
T2 = datetime(2024, 2, 1, tzinfo=UTC)


def _tiny_workspace(root) -> FeatureConfig:
    cfg = FeatureConfig(repo_path=root)
    csv = root / "events.csv"
    csv.write_text("user_id,item_id,rating,timestamp\n"
                   f"1,1,2,{T1.isoformat()}\n1,2,5,{T2.isoformat()}\n")
    ingest(IngestConfig(format="generic", path=csv), cfg.data_dir, **QUIET)
    build(cfg, **QUIET)
    return cfg


def _user1(store) -> tuple:
    got = _read(store, "user_id", [1], ["user_stats:user_event_count",
                                        "user_history:hist_item_ids"])
    return got["user_event_count"][0], got["hist_item_ids"][0]


def _newer_then_older(store) -> tuple:
    apply(store, **QUIET)
    materialize(store, end=T2 + timedelta(seconds=1), **QUIET)
    newer = _user1(store)
    materialize(store, end=T1 + timedelta(seconds=1), **QUIET)  # an older window, replayed
    return newer, _user1(store)


@pytest.mark.parametrize("profile", ["sqlite", "redis"])
def test_an_older_materialization_never_overwrites_newer_values(
    tmp_path, redis_server, monkeypatch, profile
):
    if profile == "redis":  # own database: keys must not collide with the ML-100K workspace
        monkeypatch.setenv("REDIS_CONNECTION_STRING",
                           f"127.0.0.1:{redis_server.connection_pool.connection_kwargs['port']},db=1")
    cfg = _tiny_workspace(tmp_path).model_copy(update={"online_store": profile})
    newer, after = _newer_then_older(open_store(cfg))
    assert newer == (2, [1, 2])
    assert after == newer


def test_stock_feast_sqlite_store_would_regress_without_the_guard(tmp_path):
    """Control: the same sequence on Feast's own SQLite store goes back in time."""
    _tiny_workspace(tmp_path)
    stock = tmp_path / "feature_store.yaml"
    stock.write_text((FEATURE_REPO_DIR / "feature_store.yaml").read_text().replace(
        "type: feature_repo.online_store.GuardedSqliteOnlineStore", "type: sqlite"))
    newer, after = _newer_then_older(FeatureStore(repo_path=str(tmp_path), fs_yaml_file=stock))
    assert newer == (2, [1, 2])
    assert after == (1, [1])


def test_incremental_materialization_picks_up_only_new_rows(tmp_path):
    store = open_store(_tiny_workspace(tmp_path))
    apply(store, **QUIET)
    materialize(store, end=T1 + timedelta(days=1), **QUIET)
    assert _user1(store) == (1, [1])
    windows = materialize(store, end=T2 + timedelta(days=1), incremental=True, **QUIET)
    assert _user1(store) == (2, [1, 2])
    assert windows["user_stats"] == (T1 + timedelta(days=1), T2 + timedelta(days=1))
    assert materialize(store, end=T2 + timedelta(days=1), incremental=True, **QUIET) == {}


def test_schema_hash_is_stable_and_tracks_the_contract(tmp_path):
    store = open_store(_tiny_workspace(tmp_path))
    apply(store, **QUIET)
    first = schema_hash(store, "retrieval_v1")
    assert first == schema_hash(open_store(FeatureConfig(repo_path=tmp_path)), "retrieval_v1")
    assert first != schema_hash(store, "ranking_v1")
    changed = FeatureView(
        name=user_history_fv.name, entities=[user], ttl=user_history_fv.ttl,
        source=store.get_feature_view("user_history").batch_source,
        schema=[Field(name="hist_item_ids", dtype=Array(Int32))],
    )
    store.apply([changed, FeatureService(name="retrieval_v1", features=[changed, user_decay])])
    assert schema_hash(store, "retrieval_v1") != first
