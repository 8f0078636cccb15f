"""I-AutoRec (Sedhain et al., WWW 2015): an item-based autoencoder for rating prediction.

Each item is the vector of the ratings all users gave it (0 where unrated). The network
encodes that vector into a small code and decodes a full rating vector; the loss is the squared
error on the observed entries only, plus L2 on the weights. The prediction for (user u, item i)
is entry u of item i's reconstruction, so a rating is predicted from every other rating the
item received (and, through the shared weights, from how those users rate other items).

Two changes from the paper, both standard in later re-implementations: Adam with mini-batches
instead of Rprop/L-BFGS, and input dropout (a denoising autoencoder), which makes training
predict held-out ratings from the remaining ones, exactly the test-time task. Items without any
training rating get no prediction (NaN); callers fall back to a baseline for them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.eval.folds import Ratings


@dataclass(frozen=True)
class AutoRecConfig:
    """Hyper-parameters of I-AutoRec (defaults chosen on a validation slice of u1.base)."""

    hidden: int = 500  # code size
    l2: float = 100.0  # lambda: loss = sum of squared errors / 2 + l2 / 2 * ||W||^2 per epoch
    input_dropout: float = 0.3  # fraction of observed input ratings hidden in training
    lr: float = 1e-3  # Adam
    batch: int = 256  # items per step
    max_epochs: int = 200
    patience: int = 20  # epochs without a better validation RMSE before stopping
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.batch < 1 or self.max_epochs < 1:
            raise ValueError(f"hidden={self.hidden}, batch={self.batch} and "
                             f"max_epochs={self.max_epochs} must be >= 1")
        if not 0.0 <= self.input_dropout < 1.0:
            raise ValueError(f"input_dropout={self.input_dropout} must be in [0, 1)")
        if self.l2 < 0 or self.lr <= 0:
            raise ValueError(f"l2={self.l2} must be >= 0 and lr={self.lr} > 0")


class IAutoRec(nn.Module):
    def __init__(self, num_users: int, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(num_users, hidden)
        self.decoder = nn.Linear(hidden, num_users)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, U) an item's ratings by every user, 0 = unrated -> (B, U) reconstruction
        return self.decoder(torch.sigmoid(self.encoder(x)))

    def weight_norm(self) -> torch.Tensor:
        return self.encoder.weight.pow(2).sum() + self.decoder.weight.pow(2).sum()


class AutoRecPredictor:
    """A trained I-AutoRec with the training matrix it reconstructs from."""

    def __init__(self, model: IAutoRec, matrix: torch.Tensor, rated_items: np.ndarray) -> None:
        self.model = model.eval()
        self.matrix = matrix  # (I, U) training ratings, 0 = unrated
        self.rated_items = rated_items  # (I,) bool: items with at least one training rating
        with torch.no_grad():
            self.reconstruction = model(matrix).clamp(1.0, 5.0).numpy()  # (I, U)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(N,) predicted ratings in [1, 5]; NaN for items without training ratings."""
        pred = self.reconstruction[items, users].astype(np.float64)
        pred[~self.rated_items[items]] = np.nan
        return pred


def rating_matrix(data: Ratings, num_users: int, num_items: int) -> torch.Tensor:
    """(num_items, num_users) float32 matrix of ratings, 0 where unrated."""
    if data.users.max() >= num_users or data.items.max() >= num_items:
        raise ValueError(f"ids up to user {data.users.max()}, item {data.items.max()} do not "
                         f"fit num_users={num_users}, num_items={num_items}")
    matrix = torch.zeros(num_items, num_users)
    matrix[data.items, data.users] = torch.from_numpy(data.ratings.astype(np.float32))
    return matrix


def rmse(pred: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - actual) ** 2)))


def _valid_rmse(model: IAutoRec, matrix: torch.Tensor, rated: np.ndarray,
                valid: Ratings) -> float:
    model.eval()
    with torch.no_grad():
        recon = model(matrix).clamp(1.0, 5.0).numpy()  # (I, U)
    known = rated[valid.items]
    return rmse(recon[valid.items, valid.users][known], valid.ratings[known])


def fit_autorec(train: Ratings, valid: Ratings | None, num_users: int, num_items: int,
                config: AutoRecConfig,
                progress: Callable[[int, float, float], None] | None = None,
                ) -> tuple[AutoRecPredictor, dict[str, float]]:
    """Train on ``train``, early-stop on ``valid`` RMSE; return the best epoch's predictor.

    With ``valid=None`` it trains exactly ``config.max_epochs`` epochs (a refit on all the data
    with an epoch count found before on a validation split) and returns the last epoch.

    Ids index the matrix directly (rows 0..num_items-1, columns 0..num_users-1).
    ``progress(epoch, valid_rmse, seconds)`` is called after every epoch.
    Returns the predictor and {"best_epoch", "valid_rmse", "seconds"}.
    """
    torch.manual_seed(config.seed)
    matrix = rating_matrix(train, num_users, num_items)  # (I, U)
    observed = (matrix > 0).float()  # (I, U)
    rated = observed.sum(1).numpy() > 0  # (I,)
    train_rows = torch.from_numpy(np.flatnonzero(rated))
    model = IAutoRec(num_users, config.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    best = (np.inf, 0, copy.deepcopy(model.state_dict()))
    began = time.perf_counter()
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        order = train_rows[torch.randperm(len(train_rows))]
        for s in range(0, len(order), config.batch):
            rows = order[s:s + config.batch]
            x, mask = matrix[rows], observed[rows]  # (B, U)
            noisy = F.dropout(x, config.input_dropout) if config.input_dropout else x
            err = ((model(noisy) - x) * mask).pow(2).sum() / 2
            # the L2 term is spread over the epoch's steps in proportion to their items
            loss = err + config.l2 / 2 * model.weight_norm() * len(rows) / len(train_rows)
            opt.zero_grad()
            loss.backward()
            opt.step()
        score = np.nan if valid is None else _valid_rmse(model, matrix, rated, valid)
        if progress is not None:
            progress(epoch, score, time.perf_counter() - began)
        if valid is None or score < best[0]:
            best = (score, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= config.patience:
            break
    model.load_state_dict(best[2])
    info = {"best_epoch": best[1], "valid_rmse": best[0],
            "seconds": time.perf_counter() - began}
    return AutoRecPredictor(model, matrix, rated), info
