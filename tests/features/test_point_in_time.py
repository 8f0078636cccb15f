"""Point-in-time correctness of training sets, through real Feast (DuckDB offline store).

The oracle works from raw events, not from our feature tables, so it checks both the table
construction and Feast's join: a user's features at time t come from events at or before t,
and are null when the newest of them is older than the view's TTL (Feast: t - ttl <= ts <= t).
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.config import IngestConfig
from data.ingest import ingest
from feature_repo.definitions import BEHAVIOUR_TTL
from features.build import build
from features.config import FeatureConfig
from features.store import apply, open_store, training_set

N = 3
DAY = 86_400
TTL = int(BEHAVIOUR_TTL.total_seconds())
REFS = ["user_stats:user_event_count", "user_stats:user_last_event_ts",
        "user_history:hist_item_ids", "user_history:hist_timestamps"]
QUIET = {"log": lambda _: None}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    cfg = FeatureConfig(repo_path=tmp_path_factory.mktemp("pit"), history_length=N)
    _load(cfg, [(1, 1, 0)])
    store = open_store(cfg)
    apply(store, **QUIET)
    return cfg, store


def _load(cfg: FeatureConfig, events: list[tuple[int, int, int]]) -> None:
    """Ingest (user, item, epoch seconds) events through the generic CSV path and build."""
    csv = cfg.repo_path / "events.csv"
    csv.write_text("user_id,item_id,timestamp\n" + "".join(
        f"{u},{i},{t}\n" for u, i, t in events))
    # each load is a dataset of its own: ids numbered afresh, not kept from the last load
    ingest(IngestConfig(format="generic", path=csv, keep_ids=False), cfg.data_dir, **QUIET)
    build(cfg, **QUIET)


def _id_maps(cfg: FeatureConfig) -> tuple[dict, dict]:
    """raw -> normalised ids, from the ingested tables (unknown users get an unused id)."""
    users = pd.read_parquet(cfg.data_dir / "users.parquet")
    items = pd.read_parquet(cfg.data_dir / "items.parquet")
    return (dict(zip(users.raw_user_id.astype(int), users.user_id, strict=True)),
            dict(zip(items.raw_item_id.astype(int), items.item_id, strict=True)))


def _oracle(events, user: int, t: int) -> dict:
    mine = sorted(((ts, k, item) for k, (u, item, ts) in enumerate(events) if u == user
                   and ts <= t))
    if not mine or mine[-1][0] < t - TTL:
        return {"user_event_count": None, "user_last_event_ts": None, "hist_item_ids": None,
                "hist_timestamps": None}
    last = mine[-N:]
    return {"user_event_count": len(mine), "user_last_event_ts": mine[-1][0],
            "hist_item_ids": [i for _, _, i in last], "hist_timestamps": [s for s, _, _ in last]}


def _observed(frame: pd.DataFrame) -> list[dict]:
    out = []
    for row in frame.itertuples():
        def val(v):
            if v is None or (not hasattr(v, "__len__") and pd.isna(v)):
                return None
            return [int(x) for x in v] if hasattr(v, "__len__") else int(v)
        out.append({k: val(getattr(row, k)) for k in
                    ("user_event_count", "user_last_event_ts", "hist_item_ids",
                     "hist_timestamps")})
    return out


def _check(cfg, store, events, entity_rows):
    user_ids, item_ids = _id_maps(cfg)
    events = [(user_ids[u], item_ids[i], t) for u, i, t in events]
    entity_rows = [(user_ids.get(u, 10_000), t) for u, t in entity_rows]
    entity_df = pd.DataFrame(entity_rows, columns=["user_id", "t"])
    entity_df["event_timestamp"] = pd.to_datetime(entity_df.pop("t"), unit="s", utc=True)
    got = _observed(training_set(store, entity_df, REFS))
    expected = [_oracle(events, u, t) for u, t in entity_rows]
    for row, g, e in zip(entity_rows, got, expected, strict=True):
        assert g == e, f"entity {row}: feast {g} != oracle {e}"


def test_hand_built_case(workspace):
    cfg, store = workspace
    t0 = 1_600_000_000
    events = [(1, 10, t0), (1, 11, t0), (1, 12, t0 + 10 * DAY), (1, 13, t0 + 400 * DAY),
              (2, 20, t0 + 5 * DAY)]
    _load(cfg, events)
    rows = [(1, t0 - 1), (1, t0), (1, t0 + 5 * DAY), (1, t0 + 10 * DAY + TTL),
            (1, t0 + 10 * DAY + TTL + 1), (1, t0 + 400 * DAY), (2, t0 + 5 * DAY - 1),
            (2, t0 + 5 * DAY), (3, t0)]
    entity_df = pd.DataFrame(rows, columns=["user_id", "t"])
    entity_df["event_timestamp"] = pd.to_datetime(entity_df.pop("t"), unit="s", utc=True)
    user_ids = _id_maps(cfg)[0]
    entity_df["user_id"] = entity_df.user_id.map(lambda u: user_ids.get(u, 10_000))
    got = _observed(training_set(store, entity_df, REFS))
    counts = [g["user_event_count"] for g in got]
    # before any event; both same-second events; unchanged 5 days on; TTL edge inclusive;
    # one second past the TTL; the fourth event; user 2 just before/at its event; unknown user
    assert counts == [None, 2, 2, 3, None, 4, None, 1, None]
    assert got[1]["hist_item_ids"] == [1, 2]  # raw items 10, 11 (ids normalised to 1..n)
    assert got[5]["hist_item_ids"] == [2, 3, 4]  # last N=3, oldest first
    _check(cfg, store, events, rows)


events_strategy = st.lists(
    st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(0, 900).map(lambda d: d * DAY)),
    min_size=1, max_size=25, unique_by=lambda e: (e[0], e[1], e[2]),
)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(events=events_strategy, data=st.data())
def test_random_streams_match_the_oracle(workspace, events, data):
    cfg, store = workspace
    t0 = 1_500_000_000
    events = [(u, i, t0 + t) for u, i, t in events]
    _load(cfg, events)
    # probe at, just before and after events, and exactly at / just past each TTL edge
    probes = set()
    for u, _, t in events:
        probes |= {(u, t), (u, t - 1), (u, t + 1), (u, t + TTL), (u, t + TTL + 1)}
    extra = data.draw(st.lists(st.tuples(st.integers(1, 4), st.integers(-DAY, 1300 * DAY)),
                               max_size=10))
    probes |= {(u, t0 + t) for u, t in extra}
    _check(cfg, store, events, sorted(probes))


def test_training_set_keeps_every_row_and_its_order(ml100k_workspace):
    """Many events share (user, second) in MovieLens; none may be dropped or reordered."""
    store = open_store(ml100k_workspace)
    events = pd.read_parquet(ml100k_workspace.data_dir / "events.parquet")
    entity = events.sample(5_000, random_state=3)[["user_id", "item_id", "event_timestamp"]]
    entity["event_timestamp"] -= timedelta(seconds=1)
    result = training_set(store, entity, "ranking_v1")
    assert len(result) == len(entity)
    assert result.user_id.tolist() == entity.user_id.tolist()
    assert result.item_id.tolist() == entity.item_id.tolist()
    titles = pd.read_parquet(ml100k_workspace.data_dir / "items.parquet").set_index("item_id")
    assert result.title.tolist() == titles.loc[entity.item_id, "title"].tolist()
    assert result.text_embedding.dropna().map(len).eq(384).all()
