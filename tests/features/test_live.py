"""Live online updates on real SQLite and a real redis-server: exact under concurrency.

The oracle: after events for a few users arrive from 8 concurrent clients in 4 processes
(shuffled, so older events often arrive after newer ones, with retried batches), every user's
online history read back through Feast equals the last N of that user's distinct events by
time, and the counts equal the distinct events.
"""

from __future__ import annotations

import multiprocessing
import random
import shutil
import threading
from datetime import UTC, datetime

import pandas as pd
import pytest

from data.event_log import Event, EventLog, logged_events
from features.build import build
from features.live import LiveUpdates
from features.store import apply, online_features, open_store, training_set
from tests.helpers import RedisProcess, redis_env

N = 20  # history length the writers keep: small, so the oracle's users overflow it
USER_REFS = ["user_history:hist_item_ids", "user_history:hist_ratings",
             "user_history:hist_timestamps", "user_stats:user_event_count",
             "user_stats:user_mean_rating", "user_stats:user_last_event_ts"]
ITEM_REFS = ["item_stats:item_event_count", "item_stats:item_popularity_window"]
VIEWS = ["user_history", "user_stats", "item_stats"]


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def live(request, ml100k_workspace, tmp_path_factory):
    """(features config, redis connection or None): a private copy of the ML-100K workspace
    with users' and items' rows materialized into its own SQLite file or redis-server."""
    repo = tmp_path_factory.mktemp(f"live-{request.param}")
    (repo / "data").mkdir()
    for path in ml100k_workspace.data_dir.glob("*.parquet"):
        shutil.copy(path, repo / "data" / path.name)
    for name in ("manifest.json", "features.json"):
        shutil.copy(ml100k_workspace.data_dir / name, repo / "data" / name)
    cfg = ml100k_workspace.model_copy(update={"repo_path": repo,
                                              "online_store": request.param})
    server = None
    if request.param == "redis":
        server = RedisProcess(tmp_path_factory.mktemp("live-redis"))
        server.start()
    connection = server.connection if server else None
    with redis_env(connection):
        store = open_store(cfg)
        apply(store, log=lambda _: None)
        store.materialize(datetime(1970, 1, 1, tzinfo=UTC), datetime.now(UTC),
                          feature_views=VIEWS)
    yield cfg, connection
    if server is not None:
        server.close()


def _writer(cfg, connection):
    with redis_env(connection):
        return LiveUpdates(open_store(cfg), history_length=N)


def _read_users(cfg, connection, users) -> dict:
    with redis_env(connection):
        return online_features(open_store(cfg), [{"user_id": u} for u in users], USER_REFS)


def _client_process(cfg_json: str, connection: str | None, batches: list, threads: int) -> None:
    """One replica: ``threads`` clients, each with its own writer, sending its batches."""
    from features.config import FeatureConfig

    cfg = FeatureConfig.model_validate_json(cfg_json)
    writers = [_writer(cfg, connection) for _ in range(threads)]

    def send(t: int) -> None:
        for batch in batches[t::threads]:
            writers[t].apply([Event(**e) for e in batch])

    workers = [threading.Thread(target=send, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def test_concurrent_clients_lose_nothing_and_keep_time_order(live):
    cfg, connection = live
    rng = random.Random(7)
    users = list(range(900_001, 900_011))  # new users: their whole history is the oracle's
    stamps = rng.sample(range(1_700_000_000, 1_700_900_000), 1000)  # distinct times
    events = [{"event_id": f"ev-{k}", "user_id": users[k % 10], "item_id": rng.randint(1, 1682),
               "timestamp": stamps[k], "rating": float(rng.randint(1, 5))}
              for k in range(1000)]
    rng.shuffle(events)  # older events often arrive after newer ones
    batches, at = [], 0
    while at < len(events):
        size = rng.randint(1, 25)
        batches.append(events[at:at + size])
        at += size
    batches += rng.sample(batches, 10)  # retries of batches already sent
    rng.shuffle(batches)
    before = online_features_items(cfg, connection, sorted({e["item_id"] for e in events}))

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_client_process,
                         args=(cfg.model_dump_json(), connection, batches[p::4], 2))
             for p in range(4)]  # 4 replicas x 2 clients
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0, f"client process exited with {p.exitcode}"

    got = _read_users(cfg, connection, users)
    frame = pd.DataFrame(events)
    for row, user in enumerate(users):
        mine = frame[frame.user_id == user].sort_values("timestamp")
        last = mine.tail(N)
        assert got["hist_timestamps"][row] == last.timestamp.tolist(), f"user {user}"
        assert got["hist_item_ids"][row] == last.item_id.tolist(), f"user {user}"
        assert got["hist_ratings"][row] == last.rating.tolist(), f"user {user}"
        assert got["user_event_count"][row] == len(mine) == 100
        assert got["user_mean_rating"][row] == pytest.approx(mine.rating.mean())
        assert got["user_last_event_ts"][row] == mine.timestamp.max()
    after = online_features_items(cfg, connection, sorted(before))
    added = frame.item_id.value_counts()
    for item, count in after.items():
        assert count == before[item] + added[item], f"item {item}"


def online_features_items(cfg, connection, items) -> dict[int, int]:
    with redis_env(connection):
        got = online_features(open_store(cfg), [{"item_id": i} for i in items], ITEM_REFS)
    return {i: got["item_event_count"][k] or 0 for k, i in enumerate(items)}


def test_a_late_event_lands_in_order_and_never_evicts_newer_ones(live):
    cfg, connection = live
    user = 42  # materialized from ML-100K: a full history of N events
    start = _read_users(cfg, connection, [user])
    stamps, items = start["hist_timestamps"][0], start["hist_item_ids"][0]
    writer = _writer(cfg, connection)
    assert len(stamps) > N  # the batch build keeps features.history_length events

    ancient = Event("late-1", user, 1, stamps[0] - 86_400, 3.0)
    assert writer.apply([ancient]).accepted == ["late-1"]
    after = _read_users(cfg, connection, [user])
    # older than every event the writer keeps: it takes no newer event's place
    assert after["hist_timestamps"][0] == stamps[-N:]
    assert after["hist_item_ids"][0] == items[-N:]
    assert after["user_event_count"][0] == start["user_event_count"][0] + 1

    middle = stamps[-2] + 1 if stamps[-1] - stamps[-2] > 1 else stamps[-2]
    writer.apply([Event("late-2", user, 2, middle, 4.0)])
    after = _read_users(cfg, connection, [user])
    expected = sorted([*zip(stamps, items, strict=True), (middle, 2)], key=lambda r: r[0])[-N:]
    assert after["hist_timestamps"][0] == [s for s, _ in expected]
    assert after["hist_item_ids"][0] == [i for _, i in expected]
    assert after["user_last_event_ts"][0] == stamps[-1]


def test_a_retried_event_is_not_counted_twice(live):
    cfg, connection = live
    writer = _writer(cfg, connection)
    batch = [Event("retry-1", 950_001, 10, 1_700_000_000, 5.0),
             Event("retry-2", 950_001, 11, 1_700_000_100, 1.0)]
    first = writer.apply(batch)
    again = _writer(cfg, connection).apply([*batch, Event("retry-3", 950_001, 12,
                                                          1_700_000_200)])
    assert first.accepted == ["retry-1", "retry-2"] and not first.duplicates
    assert again.accepted == ["retry-3"] and again.duplicates == ["retry-1", "retry-2"]
    got = _read_users(cfg, connection, [950_001])
    assert got["hist_item_ids"][0] == [10, 11, 12]
    assert got["user_event_count"][0] == 3
    assert got["user_mean_rating"][0] == pytest.approx(3.0)  # the unrated event leaves it


def test_materialize_of_older_batch_rows_keeps_live_rows(live):
    cfg, connection = live
    user = 7
    writer = _writer(cfg, connection)
    now = int(datetime.now(UTC).timestamp())
    writer.apply([Event("fresh-1", user, 99, now - 5, 4.0)])
    with redis_env(connection):
        store = open_store(cfg)
        store.materialize(datetime(1970, 1, 1, tzinfo=UTC), datetime.now(UTC),
                          feature_views=VIEWS)
    got = _read_users(cfg, connection, [user])
    assert got["hist_item_ids"][0][-1] == 99
    assert got["user_last_event_ts"][0] == now - 5


def test_refuses_an_online_store_it_cannot_update_atomically(ml100k_workspace):
    store = open_store(ml100k_workspace)
    store.config.online_store.type = "dynamodb"
    with pytest.raises(ValueError, match="dynamodb"):
        LiveUpdates(store, history_length=N)


def test_the_next_build_and_training_set_include_logged_events(live):
    """Events logged live join the next features build; Feast's point-in-time training set
    and the build's snapshot (what training reads) hold them."""
    cfg, connection = live
    user, t0 = 960_001, 1_700_000_000
    events = [Event(f"logged-{k}", user, 100 + k, t0 + 60 * k, 4.0) for k in range(3)]
    EventLog.of(cfg.data_dir).append(events)
    summary = build(cfg, log=lambda _: None)
    assert summary["logged_events"] >= 3
    assert {e.event_id for e in events} <= set(logged_events(cfg.data_dir).event_id)
    with redis_env(connection):
        store = open_store(cfg)
        rows = training_set(store, pd.DataFrame({
            "user_id": [user, user],
            "event_timestamp": pd.to_datetime([t0 + 61, t0 + 3600], unit="s", utc=True)}),
            ["user_history:hist_item_ids", "user_history:hist_timestamps"])
        latest = training_set(store, pd.DataFrame({
            "user_id": [user], "event_timestamp": pd.to_datetime([t0 + 61], unit="s", utc=True)}),
            ["logged_event:event_id", "logged_event:event_item_id"])
    assert (latest.event_id[0], latest.event_item_id[0]) == ("logged-1", 101)  # from the log
    assert [list(h) for h in rows.hist_item_ids] == [[100, 101], [100, 101, 102]]
    assert list(rows.hist_timestamps.iloc[1]) == [t0, t0 + 60, t0 + 120]
