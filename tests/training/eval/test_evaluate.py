"""Cold-target metrics: which targets are cold, and how they are scored."""

from __future__ import annotations

import numpy as np
import torch

from training.baselines.popularity import evaluate_popularity, popularity_scores
from training.eval.evaluate import COLD_EVENTS, cold_targets, rank_split, split_metrics
from training.eval.metrics import ranking_metrics


def test_cold_targets_are_the_items_with_few_earlier_events(tiny):
    _, data = tiny
    cold = cold_targets(data, data.test)
    counts = np.bincount(data.seen_items, minlength=data.num_items + 1)
    assert 0 < cold.sum() < len(cold)
    assert (counts[data.test.target_item[cold]] < COLD_EVENTS).all()
    assert (counts[data.test.target_item[~cold]] >= COLD_EVENTS).all()


def test_cold_metrics_score_only_the_cold_targets(tiny):
    _, data = tiny
    cold = cold_targets(data, data.test)
    # a score that ranks exactly the cold targets first for their own users
    boost = torch.zeros(len(data.test.users), data.num_items + 1)
    rows = np.flatnonzero(cold)
    boost[rows, data.test.target_item[rows]] = 1e6
    metrics = split_metrics(lambda r: boost[r], data, data.test)
    assert metrics["cold_hr@10"] == metrics["cold_ndcg@10"] == 1.0
    assert metrics["hr@10"] < 1.0
    # popularity cannot reach items that few have taken: nothing cold in its top 10
    popular = evaluate_popularity(data)
    assert popular["cold_hr@10"] == 0.0
    ranks = rank_split(lambda r: popularity_scores(data).expand(len(r), -1), data, data.test)
    assert popular["ndcg@10"] == ranking_metrics(ranks)["ndcg@10"]
