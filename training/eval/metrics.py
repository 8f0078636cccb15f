"""Metrics of the evaluation protocol, on plain arrays.

Ranking is full ranking over the whole catalogue with the user's already-seen items removed
(leave-one-out by time: one held-out target per user). Ties are counted against the target:
an item scoring exactly as high as the target ranks ahead of it, so a model that scores
everything equally gets the worst rank, not the best.
"""

from __future__ import annotations

import numpy as np
import torch


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor | None = None):
    """0-based rank of each target among all items, seen items excluded.

    Args:
        scores: (U, I) scores over item ids 0..I-1 (column 0 is padding and never ranks).
        targets: (U,) held-out item id per user.
        seen: (U, I) bool, True for items to exclude (the target itself is never excluded).
    Returns:
        (U,) int64 ranks.
    """
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"scores (U, I)={tuple(scores.shape)} and targets (U,)="
                         f"{tuple(targets.shape)} do not match")
    scores = scores.float().clone()
    scores[:, 0] = -torch.inf
    rows = torch.arange(scores.shape[0])
    if seen is not None:
        seen = seen.clone()
        seen[rows, targets] = False  # the target is ranked even if seen before
        scores = scores.masked_fill(seen, -torch.inf)
    target_score = scores[rows, targets].unsqueeze(1)  # (U, 1)
    return ((scores >= target_score).sum(1) - 1).long()  # (U,)


def ranking_metrics(ranks: np.ndarray | torch.Tensor, ks=(10, 20)) -> dict[str, float]:
    """HR@K, NDCG@K for each K and MRR from 0-based target ranks (one target per user)."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no ranks to score")
    out = {}
    for k in ks:
        hit = r < k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(r + 2.0), 0.0).mean())
    out["mrr"] = float((1.0 / (r + 1.0)).mean())
    return out


def rating_metrics(predicted, actual) -> dict[str, float]:
    p, a = np.asarray(predicted, np.float64), np.asarray(actual, np.float64)
    if p.shape != a.shape or p.size == 0:
        raise ValueError(f"predicted {p.shape} and actual {a.shape} must be equal and non-empty")
    err = p - a
    return {"rmse": float(np.sqrt((err ** 2).mean())), "mae": float(np.abs(err).mean())}


def auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count half)."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes; got {n_pos} positive, {n_neg} negative")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    for lo, hi in zip(starts, ends, strict=True):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2.0
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def intent_metrics(predicted_top1, target_sets: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy and macro-F1 of a top-1 category prediction against multi-label targets.

    Args:
        predicted_top1: (N,) predicted category index.
        target_sets: (N, C) bool, the categories of the true next item.
    A prediction is right when it is one of the target's categories. Per category c:
    TP = predicted c and c in target, FP = predicted c and c not in target,
    FN = c in target and predicted something else; macro-F1 averages over categories that
    occur in targets or predictions.
    """
    pred = np.asarray(predicted_top1, np.int64)
    tgt = np.asarray(target_sets, bool)
    n, c = tgt.shape
    if pred.shape != (n,):
        raise ValueError(f"predicted {pred.shape} must be ({n},)")
    onehot = np.zeros((n, c), bool)
    onehot[np.arange(n), pred] = True
    tp = (onehot & tgt).sum(0)
    fp = (onehot & ~tgt).sum(0)
    fn = (~onehot & tgt).sum(0)
    present = (tp + fp + fn) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(present, 2 * tp / (2 * tp + fp + fn), 0.0)
    return {"intent_acc": float(tgt[np.arange(n), pred].mean()),
            "intent_macro_f1": float(f1[present].mean())}
