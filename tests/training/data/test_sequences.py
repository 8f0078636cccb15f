"""Training windows over long histories: where they end, and that they are point-in-time
correct histories from Feast that never reach the validation or test targets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.ingest import read_manifest
from features.store import open_store
from training.data.sequences import build, window_ends
from training.train import training_events


def test_windows_end_every_stride_events_back_from_the_validation_target():
    events = pd.DataFrame({"user_id": [1] * 10 + [2] * 3,
                           "event_timestamp": pd.to_datetime(np.arange(13), unit="D"),
                           "item_id": np.arange(1, 14)})
    ends = window_ends(events, 3)
    # user 1: validation target at position 8; windows end before positions 5 and 2
    # user 2: three events, the validation target at position 1: nothing earlier to train
    assert ends.item_id.tolist() == [3, 6]
    assert window_ends(events, 0).empty


@pytest.fixture(scope="module")
def built(ml100k_workspace):
    store, manifest = open_store(ml100k_workspace), read_manifest(ml100k_workspace.data_dir)
    events = training_events(ml100k_workspace, log=lambda _: None)
    quiet = {"log": lambda _: None}
    return (events, build(store, events, manifest, 50, stride=0, **quiet),
            build(store, events, manifest, 50, stride=25, **quiet))


def test_earlier_windows_are_point_in_time_and_stop_before_validation(built):
    events, last_only, windowed = built
    assert len(last_only.train.users) == len(last_only.valid.users)
    extra = len(windowed.train.users) - len(windowed.valid.users)
    assert extra > len(windowed.valid.users)  # ML-100K users average 106 ratings
    train = windowed.train
    row = pd.Series(np.arange(len(windowed.valid.users)), index=windowed.valid.users)
    valid_ts = windowed.valid.target_ts[row.loc[train.users].to_numpy()]
    real = train.items > 0
    latest = np.where(real, train.stamps, np.iinfo(np.int64).min).max(1)
    assert (latest < valid_ts).all()  # nothing at or after the validation target
    assert (latest[len(row):] < train.target_ts[len(row):]).all()  # strictly before each end
    # each window is the user's last 50 events before its end, as Feast stored them
    by_user = {u: g for u, g in events.groupby("user_id")}
    for k in np.random.default_rng(0).choice(np.arange(len(row), len(train.users)), 30):
        seen = by_user[train.users[k]]
        before = seen[seen.event_timestamp.astype("int64") // 10**6 < train.target_ts[k]]
        assert train.items[k][real[k]].tolist() == before.item_id.tolist()[-50:]


def test_with_a_stride_below_the_length_every_event_is_trained(built):
    """Every event but each user's first and the two held-out targets is a target of some
    window: the one-window split trains on about half of ML-100K's events."""
    events, last_only, windowed = built

    def targets(split) -> set:
        pairs = set()
        for user, items, stamps in zip(split.users, split.items, split.stamps, strict=True):
            real = np.flatnonzero(items)
            pairs.update((user, stamps[j], items[j]) for j in real[1:])
        return pairs

    def triples(frame: pd.DataFrame) -> set:
        return set(zip(frame.user_id, frame.event_timestamp.astype("int64") // 10**6,
                       frame.item_id, strict=True))

    valid_ts = pd.Series(windowed.valid.target_ts, index=windowed.valid.users)
    events = events[events.user_id.isin(valid_ts.index)]  # users with 3+ events (the splits)
    known = events[events.event_timestamp.astype("int64") // 10**6
                   < valid_ts.loc[events.user_id].to_numpy()]  # what validation may see
    expected = triples(known) - triples(known.groupby("user_id").head(1))
    assert targets(windowed.train) == expected
    assert len(targets(last_only.train)) < 0.6 * len(expected)
