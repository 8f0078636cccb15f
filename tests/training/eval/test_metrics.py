"""Metric code against values computed by hand on toy cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.eval.metrics import auc, intent_metrics, ranking_metrics, rating_metrics, target_ranks


def test_ranks_exclude_seen_items_and_padding_and_count_ties_against_the_target():
    # items 0..5; column 0 is padding
    scores = torch.tensor([[9.0, 0.1, 0.5, 0.9, 0.3, 0.7],
                           [9.0, 0.2, 0.2, 0.2, 0.2, 0.2]])
    seen = torch.zeros(2, 6, dtype=torch.bool)
    seen[0, 3] = True  # user 0 saw item 3 (score 0.9): removed
    targets = torch.tensor([2, 4])
    ranks = target_ranks(scores, targets, seen)
    # user 0: items ahead of 0.5 = {5 (0.7)} -> rank 1; user 1: 4 equal others -> rank 4
    assert ranks.tolist() == [1, 4]
    # a seen target is still ranked
    seen[0, 2] = True
    assert target_ranks(scores, targets, seen).tolist() == [1, 4]


def test_ranking_metrics_by_hand():
    m = ranking_metrics(np.array([0, 1, 9, 10, 25]), ks=(10, 20))
    assert m["hr@10"] == pytest.approx(3 / 5)
    assert m["hr@20"] == pytest.approx(4 / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5)
    assert m["ndcg@20"] == pytest.approx(
        (1 + 1 / math.log2(3) + 1 / math.log2(11) + 1 / math.log2(12)) / 5)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 10 + 1 / 11 + 1 / 26) / 5)


def test_rating_auc_and_intent_by_hand():
    assert rating_metrics([3, 4, 5], [4, 4, 3]) == pytest.approx(
        {"rmse": math.sqrt(5 / 3), "mae": 1.0})
    # positives 0.8, 0.4; negatives 0.4, 0.1 -> pairs: (0.8>0.4, 0.8>0.1, 0.4=0.4, 0.4>0.1)
    assert auc([0.8, 0.4, 0.4, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)
    with pytest.raises(ValueError, match="both classes"):
        auc([0.1, 0.2], [1, 1])
    targets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]], bool)
    m = intent_metrics([0, 1, 0, 2], targets)
    assert m["intent_acc"] == pytest.approx(2 / 4)
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp1 fp0 fn1 -> 2/3; class 2: tp0 fp1 fn1 -> 0
    assert m["intent_macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
