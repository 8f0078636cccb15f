"""The held-out window (training.data.window) and its scoring (training.eval.window), on the
real ML-100K workspace through Feast, checked against the events table itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from data.ingest import read_manifest
from features.store import open_store
from training.data.window import bounds, build_window
from training.eval.metrics import target_ranks
from training.eval.window import evaluate_window, known_history, popularity_on_window
from training.train import training_events

DAYS = 10.0


@pytest.fixture(scope="module")
def window(untrained, ml100k_workspace):
    """The dataset's last DAYS (the live tests may have logged events at today's date, and
    added items the untrained model does not know)."""
    _, data, _, _ = untrained
    events = training_events(ml100k_workspace, log=lambda _: None)
    dataset = pd.read_parquet(ml100k_workspace.data_dir / "events.parquet")
    start, end = bounds(events, DAYS, dataset.event_timestamp.max() + pd.Timedelta(seconds=1))
    events = events[events.event_timestamp < end]
    held = build_window(open_store(ml100k_workspace), events, start, end, data.max_len,
                        read_manifest(ml100k_workspace.data_dir)["counts"]["items"],
                        log=lambda _: None)
    return events, held


def test_targets_are_the_windows_events_with_point_in_time_histories(window):
    events, held = window
    assert held.end - held.start == pd.Timedelta(days=DAYS)
    assert held.end - events.event_timestamp.max() == pd.Timedelta(seconds=1)
    inside = events[(events.event_timestamp >= held.start) & (events.event_timestamp < held.end)]
    assert len(held) + held.cold == len(inside)
    assert held.cold == int((inside.event_timestamp == inside.user_id.map(
        events.groupby("user_id").event_timestamp.min())).sum())
    s = held.split
    rng = np.random.default_rng(0)
    for row in rng.choice(len(held), 40, replace=False):
        user = events[events.user_id == s.users[row]]
        at = pd.Timestamp(s.target_ts[row], unit="s", tz="UTC")
        before = user[user.event_timestamp < at]
        expected = before.item_id.to_numpy()[-s.items.shape[1]:]
        got = s.items[row][s.items[row] > 0]
        assert sorted(got) == sorted(expected), row  # same second: Feast orders ties its way
        assert (s.stamps[row][s.items[row] > 0] < s.target_ts[row]).all()
        seen = set(held.seen_items[held.seen_rows == row])
        assert seen == set(before.item_id), row


def test_known_history_drops_items_the_model_never_had_and_left_pads_again():
    items = np.array([[0, 0, 3, 9, 4], [7, 8, 9, 1, 2]])
    ratings = np.arange(10, dtype=np.float32).reshape(2, 5)
    stamps = np.arange(100, 110).reshape(2, 5)
    got_items, got_ratings, got_stamps = known_history(items, ratings, stamps, num_items=7)
    assert got_items.tolist() == [[0, 0, 0, 3, 4], [0, 0, 7, 1, 2]]
    assert got_stamps.tolist() == [[0, 0, 0, 102, 104], [0, 0, 105, 108, 109]]
    assert np.isnan(got_ratings[0, :3]).all() and got_ratings[1, 2:].tolist() == [5, 8, 9]


@torch.no_grad()
def test_model_is_ranked_over_the_whole_catalogue_with_exclusions(untrained, window):
    model, data, _, _ = untrained
    events, held = window
    got = evaluate_window(model, held)
    s = held.split
    known = known_history(s.items, s.ratings, s.stamps, model.cfg.num_items)
    scores = model.eval().score_items(model.user_state(*map(torch.from_numpy, known)))
    width = held.num_items + 1  # items added after the model (if any) score lowest
    scores = torch.cat([scores, torch.full((len(held), width - scores.shape[1]), -torch.inf)], 1)
    seen = torch.zeros(len(held), width, dtype=torch.bool)
    seen[held.seen_rows, held.seen_items] = True
    ranks = target_ranks(scores, torch.from_numpy(s.target_item), seen)
    assert got["ndcg@10"] == pytest.approx(float(
        torch.where(ranks < 10, 1 / torch.log2(ranks + 2.0), 0.0).mean()))
    assert got["mrr"] == pytest.approx(float((1 / (ranks + 1.0)).mean()))


def test_an_older_model_ranks_items_added_after_it_last(untrained, window):
    model, _, _, _ = untrained
    _, held = window
    split = type(held.split)(**{**held.split.__dict__,
                                "target_item": np.full(len(held), held.num_items + 3)})
    grown = type(held)(**{**held.__dict__, "num_items": held.num_items + 5, "split": split})
    got = evaluate_window(model, grown)  # every target is an item the model has no vector for
    assert got["hr@20"] == 0.0
    assert got["mrr"] == pytest.approx(1 / (grown.num_items + 1))  # ties count against it


def test_popularity_counts_only_the_events_trained_on(window):
    events, held = window
    before = events[events.event_timestamp < held.start]
    counts = np.bincount(before.item_id, minlength=held.num_items + 1).astype(np.float64)
    row = 0
    scores = counts.copy()
    scores[0] = -np.inf
    excluded = held.seen_items[held.seen_rows == row]
    target = held.split.target_item[row]
    scores[[i for i in excluded if i != target]] = -np.inf
    rank = int((scores >= scores[target]).sum() - 1)
    got = popularity_on_window(before, held)
    assert 0 < got["hr@20"] < 1
    keep = held.seen_rows == row
    split = type(held.split)(**{k: v[:1] for k, v in held.split.__dict__.items()})
    one = type(held)(**{**held.__dict__, "split": split, "seen_rows": held.seen_rows[keep],
                        "seen_items": held.seen_items[keep]})
    assert popularity_on_window(before, one)["mrr"] == pytest.approx(1 / (rank + 1))
