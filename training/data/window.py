"""A recent time window held out of training, to judge models on what happened next.

Retraining (``irec retrain run``) trains on the events before ``start`` and scores every model
on the events in ``[start, end)``: each one is a next-event target, ranked over the whole
catalogue. Its input is the user's Feast ``user_history`` as of just before it (point in time,
so the window's earlier events are in its later targets' histories, as they are online), and
every item the user took before it is excluded from the ranking. The new model and the
champion are scored on the same window in the same run (``training.eval.window``).

A target whose user has no history before it (a user new in the window) is left out and
counted: a next-event model has nothing to go on there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.store import FeatureStore, training_set
from training.data.sequences import EPSILON, HISTORY, Split, split_of


@dataclass
class Window:
    """One row per target event in ``[start, end)``."""

    start: pd.Timestamp
    end: pd.Timestamp
    split: Split  # (N, L) histories and (N,) targets
    seen_rows: np.ndarray  # (S,) row of the target each exclusion belongs to
    seen_items: np.ndarray  # (S,) an item that row's user took before the target
    num_items: int
    cold: int  # targets left out: no history before them

    def __len__(self) -> int:
        return len(self.split.users)


def bounds(events: pd.DataFrame, days: float,
           cutoff: pd.Timestamp | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``(start, end)``: the ``days`` before ``cutoff`` (default: just after the last event)."""
    if events.empty:
        raise ValueError("no events: nothing to hold out")
    last = events.event_timestamp.max()
    end = last + EPSILON if cutoff is None else pd.Timestamp(cutoff)
    if end.tzinfo is None:
        raise ValueError(f"cutoff {cutoff} has no time zone; give it in UTC (…Z)")
    start = end - pd.Timedelta(days=days)
    first = events.event_timestamp.min()
    if start <= first:
        raise ValueError(f"the {days:g}-day window before {end} starts at or before the first "
                         f"event ({first}): nothing would be left to train on")
    return start, end


def build_window(store: FeatureStore, events: pd.DataFrame, start: pd.Timestamp,
                 end: pd.Timestamp, max_len: int, num_items: int,
                 log: Callable[[str], None] = print) -> Window:
    """The window's targets with their point-in-time histories and exclusions."""
    ev = events.sort_values(["user_id", "event_timestamp"], kind="stable").reset_index(drop=True)
    targets = ev[(ev.event_timestamp >= start) & (ev.event_timestamp < end)]
    earlier = ev[ev.event_timestamp < end]
    firsts = earlier.groupby("user_id").event_timestamp.min()
    has_past = targets.event_timestamp.to_numpy() > firsts.loc[targets.user_id].to_numpy()
    cold = int((~has_past).sum())
    targets = targets[has_past].reset_index(drop=True)
    if targets.empty:
        raise ValueError(f"no event in [{start}, {end}) by a user with an earlier one: "
                         "nothing to judge models on (a longer window, or a later cutoff)")
    entity = pd.DataFrame({"user_id": targets.user_id.to_numpy(),
                           "event_timestamp": targets.event_timestamp - EPSILON})
    split = split_of(targets.user_id.to_numpy(np.int64), training_set(store, entity, HISTORY),
                     targets, max_len)
    # every item the user took strictly before each target is excluded when ranking it
    pairs = pd.DataFrame({"row": np.arange(len(targets)), "user_id": split.users,
                          "at": targets.event_timestamp}).merge(
        earlier[["user_id", "item_id", "event_timestamp"]], on="user_id")
    pairs = pairs[pairs.event_timestamp < pairs["at"]]
    log(f"window: {len(targets):,} next-event targets in [{start:%Y-%m-%d %H:%M}, "
        f"{end:%Y-%m-%d %H:%M}) from {targets.user_id.nunique():,} users"
        + (f"; {cold:,} by users with no earlier event left out" if cold else ""))
    return Window(start=start, end=end, split=split,
                  seen_rows=pairs.row.to_numpy(np.int64),
                  seen_items=pairs.item_id.to_numpy(np.int64), num_items=num_items, cold=cold)
