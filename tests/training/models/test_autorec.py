"""I-AutoRec on the official u1 fold beats the user + item bias baseline with a small budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.baselines.bias import fit_bias
from training.eval.folds import Ratings, official_folds
from training.eval.metrics import rating_metrics
from training.models.autorec import AutoRecConfig, fit_autorec

USERS, ITEMS = 944, 1683


def test_autorec_beats_the_bias_baseline_on_u1(datasets):
    torch.set_num_threads(1)
    fold = official_folds(datasets / "ml-100k" / "u.data")[0]
    order = np.random.default_rng(0).permutation(len(fold.base))
    train, valid = fold.base.subset(order[4000:]), fold.base.subset(order[:4000])
    bias = fit_bias(train.users, train.items, train.ratings, USERS, ITEMS)
    config = AutoRecConfig(max_epochs=40, patience=5)
    epochs = []
    model, info = fit_autorec(train, valid, USERS, ITEMS, config,
                              progress=lambda epoch, *_: epochs.append(epoch))
    assert epochs == list(range(1, len(epochs) + 1)) and info["best_epoch"] <= len(epochs)
    test = fold.test
    pred = model.predict(test.users, test.items)
    unseen = np.isnan(pred)  # items with no rating in u1.base
    assert unseen.sum() < 100
    pred[unseen] = bias.predict(test.users[unseen], test.items[unseen])
    ours = rating_metrics(pred, test.ratings)
    baseline = rating_metrics(bias.predict(test.users, test.items), test.ratings)
    assert ours["rmse"] < baseline["rmse"] - 0.015, (ours, baseline)
    assert ours["mae"] < baseline["mae"], (ours, baseline)


def test_config_and_ids_are_checked():
    with pytest.raises(ValueError, match="input_dropout=1.0"):
        AutoRecConfig(input_dropout=1.0)
    tiny = Ratings(np.array([1, 5]), np.array([1, 2]), np.array([4.0, 3.0], np.float32))
    with pytest.raises(ValueError, match="user 5"):
        fit_autorec(tiny, None, 3, 3, AutoRecConfig(max_epochs=1))
