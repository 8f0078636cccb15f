"""Leave-one-out sequence data for the interest models, read from the Feast offline store.

Per user, by time (stable input order within a second): the last event is the test target,
the one before it the validation target. Feast returns, point-in-time correct, the
``user_history`` lists as of just before each target (``event_ts - 1 µs``): the validation
history is the last training sequence (trained causally, every position predicting the
next), the test history is its input at test time. A history is at most ``max_len`` events,
so a longer one also trains through earlier windows (``stride``): the histories as of just
before every ``stride``-th event going back from the validation target, each from Feast in
the same way. With ``stride < max_len`` every event but each user's first is a target of
some window, with at least ``max_len - stride`` events of context where the user has them.
Item genres and pretrained-LM text embeddings come from the item views; the item texts
themselves (for the LM modes that train the LM) from the items table, through the same
``item_text`` the embeddings were built from.
Events sharing the target's second are never in its history: at time t only what happened
strictly before t is known.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from features.store import FeatureStore, training_set
from features.tables import item_text

HISTORY = ["user_history:hist_item_ids", "user_history:hist_ratings",
           "user_history:hist_timestamps"]
ITEM_REFS = ["item_profile:genres", "item_text_embedding:text_embedding"]
EPSILON = timedelta(microseconds=1)


@dataclass
class Split:
    """Left-padded (U, L) histories with one target per user."""

    users: np.ndarray  # (U,)
    items: np.ndarray  # (U, L) int64, 0 = padding
    ratings: np.ndarray  # (U, L) float32, NaN = unknown/padding
    stamps: np.ndarray  # (U, L) int64 epoch seconds
    target_item: np.ndarray  # (U,)
    target_rating: np.ndarray  # (U,) float32
    target_ts: np.ndarray  # (U,) int64


@dataclass
class SequenceData:
    num_items: int
    max_len: int
    train: Split  # the validation histories, then the earlier windows; trained causally
    valid: Split
    test: Split
    seen_users: np.ndarray  # (S,) row index into the splits' users
    seen_items: np.ndarray  # (S,) items each user interacted with (excluded when ranking)
    seen_ratings: np.ndarray  # (S,) float32 ratings of those events (NaN when implicit)
    genre_names: list[str]
    item_genres: np.ndarray  # (I+1, G) multi-hot, row 0 = padding
    text_embeddings: np.ndarray | None  # (I+1, D) or None when no item has text
    has_ratings: bool
    has_timestamps: bool
    item_texts: list[str] | None = None  # (I+1) LM input text per item, "" = none

    def to_dict(self) -> dict:
        """Plain arrays, so Ray can ship the data to training workers."""
        return {k: (v.__dict__ if isinstance(v, Split) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> SequenceData:
        d = dict(d)
        for name in ("train", "valid", "test"):
            d[name] = Split(**d[name])
        return cls(**d)


def pad(lists, length: int, dtype, fill) -> np.ndarray:
    out = np.full((len(lists), length), fill, dtype=dtype)
    for row, values in enumerate(lists):
        if values is not None and len(values):
            tail = np.asarray(values, dtype=dtype)[-length:]
            out[row, length - len(tail):] = tail
    return out


def split_of(users: np.ndarray, hist: pd.DataFrame, targets: pd.DataFrame,
             max_len: int) -> Split:
    """A split from Feast ``HISTORY`` rows and their target events (``item_id``, ``rating``,
    ``event_timestamp``), row for row."""
    return Split(
        users=users,
        items=pad(hist.hist_item_ids, max_len, np.int64, 0),
        ratings=pad(hist.hist_ratings, max_len, np.float32, np.nan),
        stamps=pad(hist.hist_timestamps, max_len, np.int64, 0),
        target_item=targets.item_id.to_numpy(np.int64),
        target_rating=targets.rating.to_numpy(np.float32),
        target_ts=(targets.event_timestamp.astype("int64") // 10**6).to_numpy(),
    )


def concat(*splits: Split) -> Split:
    """The rows of ``splits`` in order."""
    return Split(**{name: np.concatenate([getattr(s, name) for s in splits])
                    for name in Split.__dataclass_fields__})


def window_ends(events: pd.DataFrame, stride: int) -> pd.DataFrame:
    """The events (by user and time) before which the earlier training windows end: every
    ``stride``-th event back from each user's validation target, excluding it, while at
    least two events precede it (a window needs one target). Empty when ``stride`` is 0."""
    if stride == 0:
        return events.iloc[:0]
    position = events.groupby("user_id").cumcount()
    back = events.groupby("user_id").user_id.transform("size") - 2 - position
    ends = events[(back > 0) & (back % stride == 0) & (position >= 2)]
    return ends.drop_duplicates(["user_id", "event_timestamp"])


def build(store: FeatureStore, events: pd.DataFrame, manifest: dict, max_len: int,
          log: Callable[[str], None] = print, items: pd.DataFrame | None = None, *,
          stride: int) -> SequenceData:
    """``items`` (the ingested items table) adds ``item_texts``; None leaves them out.
    ``stride`` > 0 adds the earlier training windows (module docstring)."""
    ev = events.sort_values(["user_id", "event_timestamp"], kind="stable")
    counts = ev.groupby("user_id").size()
    keep = counts.index[counts >= 3]
    if len(keep) < len(counts):
        log(f"data: {len(counts) - len(keep)} user(s) with fewer than 3 events left out")
    ev = ev[ev.user_id.isin(keep)]
    last_two = ev.groupby("user_id").tail(2)
    valid_ev = last_two.groupby("user_id").head(1).set_index("user_id").loc[keep]
    test_ev = last_two.groupby("user_id").tail(1).set_index("user_id").loc[keep]

    entity = pd.concat([
        pd.DataFrame({"user_id": keep, "event_timestamp": valid_ev.event_timestamp - EPSILON}),
        pd.DataFrame({"user_id": keep, "event_timestamp": test_ev.event_timestamp - EPSILON}),
    ], ignore_index=True)
    hist = training_set(store, entity, HISTORY)
    n = len(keep)

    users = np.asarray(keep, dtype=np.int64)
    valid = split_of(users, hist.iloc[:n], valid_ev, max_len)
    test = split_of(users, hist.iloc[n:].reset_index(drop=True), test_ev, max_len)

    # everything the user did except the test target is excluded when ranking for test
    # (validation ranks exclude the same minus the validation target, see eval)
    row_of = pd.Series(np.arange(n), index=keep)
    seen = ev[~ev.index.isin(last_two.groupby("user_id").tail(1).index)]
    genres, texts, names = _item_features(store, manifest)
    num_items = manifest["counts"]["items"]
    train = valid
    ends = window_ends(ev, stride)
    if len(ends):
        hist = training_set(store, pd.DataFrame({
            "user_id": ends.user_id.to_numpy(),
            "event_timestamp": (ends.event_timestamp - EPSILON).to_numpy()}), HISTORY)
        earlier = split_of(ends.user_id.to_numpy(np.int64), hist, ends, max_len)
        trainable = (earlier.items > 0).sum(1) >= 2  # events in the same second are not before
        train = concat(valid, Split(**{name: value[trainable]
                                       for name, value in earlier.__dict__.items()}))
    targets = int(((train.items[:, 1:] > 0) & (train.items[:, :-1] > 0)).sum())
    log(f"data: {n:,} users, {num_items:,} items, max_len {max_len}, "
        f"{len(train.users):,} training windows (stride {stride or 'none'}), "
        f"{targets:,} training targets")
    return SequenceData(
        num_items=num_items, max_len=max_len, train=train, valid=valid, test=test,
        seen_users=row_of.loc[seen.user_id].to_numpy(np.int64),
        seen_items=seen.item_id.to_numpy(np.int64),
        seen_ratings=seen.rating.to_numpy(np.float32),
        genre_names=names, item_genres=genres, text_embeddings=texts,
        has_ratings=bool(manifest["has_ratings"]), has_timestamps=bool(manifest["has_timestamps"]),
        item_texts=None if items is None else _item_texts(items, num_items),
    )


def _item_texts(items: pd.DataFrame, num_items: int) -> list[str]:
    """(I+1) texts indexed by item id, "" for padding and text-less items."""
    texts = [""] * (num_items + 1)
    for item, text in zip(items.item_id, item_text(items), strict=True):
        if not 1 <= item <= num_items:
            raise ValueError(f"items table has item_id {item} outside 1..{num_items}")
        texts[item] = text
    return texts


def _item_features(store: FeatureStore, manifest: dict):
    num_items = manifest["counts"]["items"]
    at = pd.Timestamp(manifest["time_range"][1])
    entity = pd.DataFrame({"item_id": np.arange(1, num_items + 1),
                           "event_timestamp": at})
    frame = training_set(store, entity, ITEM_REFS)
    names = sorted({g for gs in frame.genres.dropna() for g in gs})
    index = {g: k for k, g in enumerate(names)}
    genres = np.zeros((num_items + 1, len(names)), dtype=np.float32)
    for item, gs in zip(frame.item_id, frame.genres, strict=True):
        for g in gs if gs is not None else []:
            genres[item, index[g]] = 1.0
    texts = None
    present = frame.text_embedding.dropna()
    if len(present):
        dim = len(present.iloc[0])
        texts = np.zeros((num_items + 1, dim), dtype=np.float32)
        for item, vec in zip(frame.item_id, frame.text_embedding, strict=True):
            if vec is not None:
                texts[item] = vec
    return genres, texts, names
