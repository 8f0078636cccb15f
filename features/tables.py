"""Batch feature engineering: the parquet sources behind the Feast feature views.

Every time-varying table has exactly one row per (entity, distinct event time), holding the
state *after* all events at that time. Several events of one user in the same second (common
in MovieLens) therefore land in one row, and a point-in-time join at time t is never ambiguous.

- ``user_history``: last-N item ids, ratings and epoch-second timestamps, oldest first.
- ``user_stats``:   cumulative event count, mean rating, last event time.
- ``item_stats``:   cumulative event count, mean rating, events in the trailing window.
- ``item_profile``: title, genres, year (static, from items.parquet).
- ``user_profile``: age, gender, occupation, zip code (static, from users.parquet).
- ``item_text_embedding``: the pretrained LM's embedding of "title. Genres: ... text".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def epoch_seconds(stamps: pd.Series) -> np.ndarray:
    return (stamps.astype("datetime64[us, UTC]").astype("int64") // 1_000_000).to_numpy()


def _last_of_each_time(keys: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Positions of the last row of each (key, time) run in rows sorted by key then time."""
    n = len(keys)
    last = np.ones(n, dtype=bool)
    last[:-1] = (keys[1:] != keys[:-1]) | (seconds[1:] != seconds[:-1])
    return np.flatnonzero(last)


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """For each row of key-sorted rows, the position of its key's first row."""
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))


def _windows(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, dtype) -> pa.ListArray:
    """List array whose row r is ``values[starts[r]:ends[r]+1]``."""
    lengths = ends - starts + 1
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    flat = values[np.repeat(starts, lengths) + within]
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat, type=dtype))


def user_history(events: pd.DataFrame, history_length: int) -> pa.Table:
    """(user_id, event_timestamp) -> the user's last ``history_length`` events so far."""
    ev = events.sort_values(["user_id", "event_timestamp"], kind="stable")
    users = ev["user_id"].to_numpy()
    seconds = epoch_seconds(ev["event_timestamp"])
    ends = _last_of_each_time(users, seconds)
    starts = np.maximum(_group_starts(users)[ends], ends - history_length + 1)
    return pa.table(
        {
            "user_id": pa.array(users[ends]),
            "event_timestamp": pa.array(ev["event_timestamp"].to_numpy()[ends]),
            "hist_item_ids": _windows(ev["item_id"].to_numpy(), starts, ends, pa.int64()),
            "hist_ratings": _windows(ev["rating"].to_numpy(), starts, ends, pa.float64()),
            "hist_timestamps": _windows(seconds, starts, ends, pa.int64()),
        }
    )


def _cumulative(ev: pd.DataFrame, key: str) -> pd.DataFrame:
    """Cumulative count and mean rating per key, at the last row of each (key, time).

    ``ev`` must be sorted by key, then time (``_sorted``).
    """
    grouped = ev.groupby(key, sort=False)
    count = grouped.cumcount().to_numpy() + 1
    rated = ev["rating"].notna().astype("int64")
    rating_sum = ev["rating"].fillna(0.0).groupby(ev[key], sort=False).cumsum().to_numpy()
    rated_count = rated.groupby(ev[key], sort=False).cumsum().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(rated_count > 0, rating_sum / np.maximum(rated_count, 1), np.nan)
    seconds = epoch_seconds(ev["event_timestamp"])
    ends = _last_of_each_time(ev[key].to_numpy(), seconds)
    return pd.DataFrame(
        {
            key: ev[key].to_numpy()[ends],
            "event_timestamp": ev["event_timestamp"].to_numpy()[ends],
            "count": count[ends],
            "mean_rating": mean[ends],
            "seconds": seconds[ends],
            "sorted_pos": ends,
        }
    )


def _sorted(events: pd.DataFrame, key: str) -> pd.DataFrame:
    return events.sort_values([key, "event_timestamp"], kind="stable")


def user_stats(events: pd.DataFrame) -> pd.DataFrame:
    cum = _cumulative(_sorted(events, "user_id"), "user_id")
    return pd.DataFrame(
        {
            "user_id": cum["user_id"], "event_timestamp": cum["event_timestamp"],
            "user_event_count": cum["count"].astype("int64"),
            "user_mean_rating": cum["mean_rating"],
            "user_last_event_ts": cum["seconds"].astype("int64"),
        }
    )


def item_stats(events: pd.DataFrame, window_days: int) -> pd.DataFrame:
    ev = _sorted(events, "item_id")
    cum = _cumulative(ev, "item_id")
    seconds = epoch_seconds(ev["event_timestamp"])
    # Sortable composite key item * span + time: a window search never crosses items.
    span = int(seconds.max()) + 1
    keys = ev["item_id"].to_numpy().astype(np.int64) * span + seconds
    window = window_days * 86_400
    pos = cum["sorted_pos"].to_numpy()
    item = ev["item_id"].to_numpy()[pos].astype(np.int64)
    lo = item * span + np.maximum(seconds[pos] - window, 0)
    in_window = pos + 1 - np.searchsorted(keys, lo, side="left")
    return pd.DataFrame(
        {
            "item_id": cum["item_id"], "event_timestamp": cum["event_timestamp"],
            "item_event_count": cum["count"].astype("int64"),
            "item_mean_rating": cum["mean_rating"],
            "item_popularity_window": in_window.astype("int64"),
        }
    )


def item_text(items: pd.DataFrame) -> pd.Series:
    """The text the LM embeds: title, genres, free text; empty when an item has none."""
    def one(row) -> str:
        parts = []
        if row.title:
            parts.append(str(row.title))
        if len(row.genres):
            parts.append("Genres: " + ", ".join(row.genres))
        if row.text:
            parts.append(str(row.text))
        return ". ".join(parts)

    return pd.Series([one(r) for r in items.itertuples(index=False)], index=items.index)
