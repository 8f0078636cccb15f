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


def _seen_mask(data: SequenceData, rows: np.ndarray) -> torch.Tensor:
    """(len(rows), I+1) bool: items each user interacted with before the test target."""
    mask = torch.zeros((len(rows), data.num_items + 1), dtype=torch.bool)
    position = np.full(len(data.test.users), -1)
    position[rows] = np.arange(len(rows))
    hit = position[data.seen_users] >= 0
    mask[position[data.seen_users[hit]], data.seen_items[hit]] = True
    return mask


def rank_split(score: Callable[[np.ndarray], torch.Tensor], data: SequenceData, split: Split,
               batch: int = 512) -> np.ndarray:
    """Target ranks for a split; ``score(rows)`` returns (len(rows), I+1) scores."""
    ranks = []
    for start in range(0, len(split.users), batch):
        rows = np.arange(start, min(start + batch, len(split.users)))
        scores = score(rows)
        ranks.append(target_ranks(scores, torch.from_numpy(split.target_item[rows]),
                                  _seen_mask(data, rows)))
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
    out = ranking_metrics(rank_split(lambda rows: model.score_items(states[rows]).cpu(),
                                     data, split))
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
