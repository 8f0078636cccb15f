"""Score a model (or a baseline's score matrix) on a leave-one-out split."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from training.data.sequences import SequenceData, Split
from training.eval.metrics import (
    auc,
    intent_metrics,
    ranking_metrics,
    rating_metrics,
    target_ranks,
)
from training.models.interest import InterestTransformer

COLD_EVENTS = 5


def seen_mask(num_items: int, seen_rows: np.ndarray, seen_items: np.ndarray, total: int,
              rows: np.ndarray) -> torch.Tensor:
    """(len(rows), I+1) bool: the items excluded for each of ``rows`` (of ``total``), from
    (row, item) exclusion pairs."""
    mask = torch.zeros((len(rows), num_items + 1), dtype=torch.bool)
    position = np.full(total, -1)
    position[rows] = np.arange(len(rows))
    hit = position[seen_rows] >= 0
    mask[position[seen_rows[hit]], seen_items[hit]] = True
    return mask


def rank_split(score: Callable[[np.ndarray], torch.Tensor], data: SequenceData, split: Split,
               batch: int = 512) -> np.ndarray:
    """Target ranks for a split; ``score(rows)`` returns (len(rows), I+1) scores. Everything
    the user did before the test target is excluded (validation ranks exclude the same)."""
    return rank_targets(score, split.target_item, data.num_items, data.seen_users,
                        data.seen_items, batch)


def cold_targets(data: SequenceData, split: Split) -> np.ndarray:
    """(U,) bool: the targets whose item has fewer than ``COLD_EVENTS`` events before the test
    targets (where item text should matter most)."""
    counts = np.bincount(data.seen_items, minlength=data.num_items + 1)
    return counts[split.target_item] < COLD_EVENTS


def split_metrics(score: Callable[[np.ndarray], torch.Tensor], data: SequenceData,
                  split: Split) -> dict[str, float]:
    """``ranking_metrics`` of ``score`` on ``split`` (``rank_split``), plus HR@10 and NDCG@10
    over its cold targets (``cold_targets``) as ``cold_hr@10`` and ``cold_ndcg@10``."""
    ranks = rank_split(score, data, split)
    out = ranking_metrics(ranks)
    cold = cold_targets(data, split)
    if cold.any():
        cold_metrics = ranking_metrics(ranks[cold], ks=(10,))
        out.update({f"cold_{k}": cold_metrics[k] for k in ("hr@10", "ndcg@10")})
    return out


def rank_targets(score: Callable[[np.ndarray], torch.Tensor], targets: np.ndarray,
                 num_items: int, seen_rows: np.ndarray, seen_items: np.ndarray,
                 batch: int = 512) -> np.ndarray:
    """(N,) 0-based ranks of ``targets`` under ``score(rows)`` ((len(rows), I+1) scores), the
    (row, item) exclusion pairs removed."""
    ranks = []
    for start in range(0, len(targets), batch):
        rows = np.arange(start, min(start + batch, len(targets)))
        ranks.append(target_ranks(score(rows), torch.from_numpy(targets[rows]),
                                  seen_mask(num_items, seen_rows, seen_items, len(targets),
                                            rows)))
    return torch.cat(ranks).numpy()


def _tensors(split: Split, rows: np.ndarray, device: torch.device):
    return tuple(torch.from_numpy(a[rows]).to(device)
                 for a in (split.items, split.ratings, split.stamps))


@torch.no_grad()
def evaluate_model(model: InterestTransformer, data: SequenceData, split_name: str,
                   batch: int = 512) -> dict[str, float]:
    """Ranking metrics plus, where the model has the heads, RMSE/MAE, like-AUC, intent."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    split: Split = getattr(data, split_name)
    every = np.arange(len(split.users))
    states = torch.cat([model.user_state(*_tensors(split, every[s:s + batch], device))
                        for s in range(0, len(every), batch)])  # (U, D)
    out = split_metrics(lambda rows: model.score_items(states[rows]).cpu(), data, split)
    cfg = model.cfg
    v = model.item_vectors(torch.from_numpy(split.target_item).to(device))  # (U, D)
    rated = ~np.isnan(split.target_rating)
    if cfg.use_ratings and rated.any():
        out.update(rating_metrics(model.rating(states, v).cpu().numpy()[rated],
                                  split.target_rating[rated]))
        if cfg.use_time:
            items, _, stamps = _tensors(split, every, device)
            at = torch.from_numpy(split.target_ts).unsqueeze(1).to(device)  # (U, 1)
            pooled = model.decayed_history(items, stamps, at)[:, 0]
        else:
            pooled = torch.zeros_like(states)
        liked = split.target_rating[rated] >= cfg.like_threshold
        if 0 < liked.sum() < len(liked):
            logits = model.like_logit(states, v, pooled).cpu().numpy()
            out["like_auc"] = auc(logits[rated], liked)
    if cfg.num_genres:
        has = data.item_genres[split.target_item].sum(1) > 0
        top1 = model.intent(states).argmax(-1).cpu().numpy()
        out.update(intent_metrics(top1[has], data.item_genres[split.target_item][has] > 0))
    model.train(was_training)
    return out
