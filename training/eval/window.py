"""Score models on a held-out time window (``training.data.window``): next event, full ranking.

Every model is scored over the window's whole catalogue, so a model trained before items were
added (the champion, when the catalogue grew) is judged as it stands: items it has no vector
for score lowest, and they are left out of its input histories (compacted, still left-padded).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from training.data.window import Window
from training.eval.evaluate import rank_targets
from training.eval.metrics import ranking_metrics
from training.models.interest import InterestTransformer


def known_history(items: np.ndarray, ratings: np.ndarray, stamps: np.ndarray,
                  num_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, L) histories without the items above ``num_items``, left-padded again."""
    known = (items > 0) & (items <= num_items)  # (N, L)
    order = np.argsort(known, axis=1, kind="stable")  # padding and unknowns first, then known
    take = np.take_along_axis
    keep = take(known, order, 1)
    return (np.where(keep, take(items, order, 1), 0),
            np.where(keep, take(ratings, order, 1), np.nan).astype(np.float32),
            np.where(keep, take(stamps, order, 1), 0))


@torch.no_grad()
def evaluate_window(model: InterestTransformer, window: Window,
                    batch: int = 512) -> dict[str, float]:
    """HR@K, NDCG@K and MRR of ``model`` on the window's targets."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    own = model.cfg.num_items
    s = window.split
    items, ratings, stamps = known_history(s.items, s.ratings, s.stamps, own)
    width = window.num_items + 1

    def score(rows: np.ndarray) -> torch.Tensor:
        state = model.user_state(*(torch.from_numpy(a[rows]).to(device)
                                   for a in (items, ratings, stamps)))  # (B, D)
        scores = model.score_items(state).cpu()[:, :width]  # (B, min(own, I)+1)
        if scores.shape[1] < width:
            scores = torch.cat([scores, torch.full((len(rows), width - scores.shape[1]),
                                                   -torch.inf)], 1)  # (B, I+1)
        return scores

    out = ranking_metrics(rank_targets(score, s.target_item, window.num_items,
                                       window.seen_rows, window.seen_items, batch))
    model.train(was_training)
    return out


def popularity_on_window(trained_on: pd.DataFrame, window: Window) -> dict[str, float]:
    """The same metrics for item popularity counted over the events trained on."""
    counts = np.bincount(trained_on.item_id.to_numpy(np.int64), minlength=window.num_items + 1)
    scores = torch.from_numpy(counts[:window.num_items + 1].astype(np.float32)).unsqueeze(0)
    return ranking_metrics(rank_targets(lambda rows: scores.expand(len(rows), -1),
                                        window.split.target_item, window.num_items,
                                        window.seen_rows, window.seen_items))
