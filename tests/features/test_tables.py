"""Feature tables against brute force on hand-built and random events."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import tables


def _events(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "t"])
    frame["event_timestamp"] = pd.to_datetime(frame.pop("t"), unit="s", utc=True)
    return frame


def test_history_is_last_n_oldest_first_with_same_second_events_in_one_row():
    ev = _events([(1, 10, 4, 100), (1, 11, 5, 100), (1, 12, 3, 200), (1, 13, 1, 300),
                  (2, 10, 2, 150)])
    hist = tables.user_history(ev, history_length=2).to_pandas()
    assert hist.user_id.tolist() == [1, 1, 1, 2]  # one row per (user, distinct time)
    assert [list(x) for x in hist.hist_item_ids] == [[10, 11], [11, 12], [12, 13], [10]]
    assert [list(x) for x in hist.hist_timestamps] == [[100, 100], [100, 200], [200, 300], [150]]
    assert [list(x) for x in hist.hist_ratings] == [[4, 5], [5, 3], [3, 1], [2]]


def test_stats_match_brute_force_on_random_events():
    rng = np.random.default_rng(7)
    n = 3_000
    ev = _events(zip(rng.integers(1, 30, n), rng.integers(1, 50, n), rng.integers(1, 6, n),
                     rng.integers(0, 200 * 86_400, n), strict=True))
    ev = ev.drop_duplicates(["user_id", "item_id", "event_timestamp"])
    window = 30
    items = tables.item_stats(ev, window)
    secs = tables.epoch_seconds(ev.event_timestamp)
    for row in items.sample(200, random_state=1).itertuples():
        t = row.event_timestamp.timestamp()
        mine = ev[(ev.item_id == row.item_id).to_numpy() & (secs <= t)]
        mine_secs = tables.epoch_seconds(mine.event_timestamp)
        assert row.item_event_count == len(mine)
        assert row.item_popularity_window == int((mine_secs >= t - window * 86_400).sum())
        assert np.isclose(row.item_mean_rating, mine.rating.mean())
    users = tables.user_stats(ev)
    for row in users.sample(200, random_state=2).itertuples():
        t = row.event_timestamp.timestamp()
        mine = ev[(ev.user_id == row.user_id).to_numpy() & (secs <= t)]
        assert row.user_event_count == len(mine)
        assert row.user_last_event_ts == int(t)
        assert np.isclose(row.user_mean_rating, mine.rating.mean())
