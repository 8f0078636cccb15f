"""Rating baselines without factors: the global mean, and global mean + user and item biases.

The bias model is the regularised baseline predictor of Koren (2010, "Factor in the
neighbors", eq. 2), fitted by alternating closed-form updates::

    b_i = sum_{u rated i} (r_ui - mu - b_u) / (reg_item + n_i)
    b_u = sum_{i rated by u} (r_ui - mu - b_i) / (reg_user + n_u)

Users or items absent from training get a bias of 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BiasModel:
    mean: float
    user_bias: np.ndarray  # (num_users,)
    item_bias: np.ndarray  # (num_items,)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(N,) predictions clipped to [1, 5]."""
        pred = self.mean + self.user_bias[users] + self.item_bias[items]
        return np.clip(pred, 1.0, 5.0)


def fit_bias(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, num_users: int,
             num_items: int, reg_user: float = 10.0, reg_item: float = 25.0,
             sweeps: int = 10) -> BiasModel:
    """Fit global mean + biases (ids index the bias arrays directly)."""
    if not len(ratings):
        raise ValueError("the bias baseline needs ratings; got none")
    if reg_user < 0 or reg_item < 0:
        raise ValueError(f"reg_user={reg_user} and reg_item={reg_item} must be >= 0")
    r = np.asarray(ratings, np.float64)
    mean = float(r.mean())
    n_user = np.bincount(users, minlength=num_users)
    n_item = np.bincount(items, minlength=num_items)
    b_user, b_item = np.zeros(num_users), np.zeros(num_items)
    for _ in range(sweeps):
        b_item = np.bincount(items, r - mean - b_user[users], num_items) / (reg_item + n_item)
        b_user = np.bincount(users, r - mean - b_item[items], num_users) / (reg_user + n_user)
    return BiasModel(mean, b_user, b_item)


def fit_global_mean(ratings: np.ndarray, num_users: int, num_items: int) -> BiasModel:
    if not len(ratings):
        raise ValueError("the global mean needs ratings; got none")
    return BiasModel(float(np.mean(ratings)), np.zeros(num_users), np.zeros(num_items))
