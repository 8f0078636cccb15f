"""Matrix-factorisation baselines, trained on every event before the test targets.

- BPR-MF (Rendle et al. 2009) for ranking: user and item factors, one uniform negative per
  positive, pairwise log-sigmoid loss.
- Biased MF (Koren et al. 2009) for ratings: global mean + user and item biases + factors,
  squared error with L2.
Both are small enough to train on the driver in seconds; seeded for reproducibility.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.data.sequences import SequenceData
from training.eval.evaluate import split_metrics
from training.eval.metrics import rating_metrics


class BPRMF(nn.Module):
    def __init__(self, users: int, items: int, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(users, dim)
        self.item = nn.Embedding(items + 1, dim)
        nn.init.normal_(self.user.weight, std=0.05)
        nn.init.normal_(self.item.weight, std=0.05)

    def scores(self, rows: torch.Tensor) -> torch.Tensor:
        return self.user(rows) @ self.item.weight.T  # (B, I+1)


class BiasedMF(nn.Module):
    def __init__(self, users: int, items: int, dim: int, mean: float) -> None:
        super().__init__()
        self.user, self.item = nn.Embedding(users, dim), nn.Embedding(items + 1, dim)
        self.user_bias, self.item_bias = nn.Embedding(users, 1), nn.Embedding(items + 1, 1)
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=0.05)
        for emb in (self.user_bias, self.item_bias):
            nn.init.zeros_(emb.weight)
        self.mean = mean

    def forward(self, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.user(rows) * self.item(items)).sum(-1)
        return self.mean + self.user_bias(rows)[:, 0] + self.item_bias(items)[:, 0] + dot


def evaluate_bpr(data: SequenceData, dim: int = 64, epochs: int = 30, lr: float = 5e-3,
                 reg: float = 1e-5, batch: int = 2048, seed: int = 0) -> dict[str, float]:
    model = fit_bpr(data.seen_users, data.seen_items, len(data.test.users), data.num_items,
                    dim=dim, epochs=epochs, lr=lr, reg=reg, batch=batch, seed=seed)
    with torch.no_grad():
        return split_metrics(lambda rows: model.scores(torch.from_numpy(rows)), data, data.test)


def fit_bpr(user_rows: np.ndarray, item_ids: np.ndarray, num_users: int, num_items: int,
            dim: int = 64, epochs: int = 30, lr: float = 5e-3, reg: float = 1e-5,
            batch: int = 2048, seed: int = 0) -> BPRMF:
    """BPR-MF over (user row, item) interactions, one uniform negative each."""
    torch.manual_seed(seed)
    model = BPRMF(num_users, num_items, dim)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    users = torch.from_numpy(np.asarray(user_rows, dtype=np.int64))
    items = torch.from_numpy(np.asarray(item_ids, dtype=np.int64))
    for _ in range(epochs):
        order = torch.randperm(len(users))
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            u, pos = users[idx], items[idx]
            neg = torch.randint(1, num_items + 1, (len(idx),))
            pu = model.user(u)
            diff = (pu * model.item(pos)).sum(-1) - (pu * model.item(neg)).sum(-1)
            loss = -F.logsigmoid(diff).mean() + reg * (pu.pow(2).sum() + model.item(pos)
                                                       .pow(2).sum()) / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def fit_biased_mf(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, num_users: int,
                  num_items: int, dim: int = 32, epochs: int = 40, lr: float = 1e-2,
                  reg: float = 0.05, batch: int = 4096, seed: int = 0,
                  on_epoch: Callable[[int, BiasedMF], bool] | None = None) -> BiasedMF:
    """Train biased MF on rating triples (user rows 0..num_users-1, item ids 1..num_items).

    ``on_epoch(epoch, model)`` runs after every epoch (1-based); returning True stops early.
    """
    if not len(ratings):
        raise ValueError("biased MF needs ratings; got none")
    torch.manual_seed(seed)
    users, items = torch.from_numpy(users), torch.from_numpy(items)
    ratings = torch.from_numpy(ratings)
    model = BiasedMF(num_users, num_items, dim, float(ratings.mean()))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(users))
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            u, i = users[idx], items[idx]
            err = F.mse_loss(model(u, i), ratings[idx])
            penalty = reg * (model.user(u).pow(2).sum(-1) + model.item(i).pow(2).sum(-1)
                             + model.user_bias(u)[:, 0] ** 2 + model.item_bias(i)[:, 0] ** 2)
            loss = err + penalty.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if on_epoch is not None and on_epoch(epoch, model):
            break
    return model


def evaluate_biased_mf(data: SequenceData, dim: int = 32, epochs: int = 40, lr: float = 1e-2,
                       reg: float = 0.05, batch: int = 4096, seed: int = 0) -> dict[str, float]:
    rated = ~np.isnan(data.seen_ratings)
    target_rated = ~np.isnan(data.test.target_rating)
    if not rated.any() or not target_rated.any():
        raise ValueError("biased MF needs ratings; this dataset has none")
    model = fit_biased_mf(data.seen_users[rated], data.seen_items[rated],
                          data.seen_ratings[rated], len(data.test.users), data.num_items,
                          dim=dim, epochs=epochs, lr=lr, reg=reg, batch=batch, seed=seed)
    with torch.no_grad():
        rows = torch.from_numpy(np.flatnonzero(target_rated))
        pred = model(rows, torch.from_numpy(data.test.target_item[target_rated]))
    return rating_metrics(pred.clamp(1.0, 5.0).numpy(), data.test.target_rating[target_rated])
