"""Hyperparameter search: Ray Tune over the Ray Train trainer, ASHA on validation NDCG@10.

Each trial is one Ray Train run (``train.fit``, the same trainer, checkpoints and early
stopping as ``irec train``) of the preset's ``training`` section with the trial's settings
applied (``TrainingConfig.with_settings``); its per-epoch reports reach Tune through Ray
Train's ``TuneReportCallback``, and ASHA (``training.tune``: grace epochs, reduction factor)
stops the weaker trials early. The data is prepared once, in the driver, and shared through
the object store. A search lives in its own folder and can be resumed from it
(``Tuner.restore``): finished trials are kept, unfinished ones run again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler

from features.config import FeatureConfig
from training.config import Dimension, TrainingConfig
from training.data.sequences import SequenceData
from training.train import SCORE, fit, model_config

Log = Callable[[str], None]
LOG = logging.getLogger("irec.tune")


def sampler(dimension: Dimension):
    """The Tune search-space domain of ``dimension``."""
    if dimension.choice is not None:
        return tune.choice(dimension.choice)
    if dimension.uniform is not None:
        return tune.uniform(*dimension.uniform)
    if dimension.loguniform is not None:
        return tune.loguniform(*dimension.loguniform)
    return tune.randint(*dimension.randint)


def _trial(config: dict, *, training: TrainingConfig, features: FeatureConfig,
           rating_max: float, data: dict) -> None:
    """One trial: the Ray Train run of ``training`` with the trial's settings, its model
    resolved against the data as ``irec train`` resolves it."""
    trial = training.with_settings(config).model_copy(update={
        "storage_path": tune.get_context().get_trial_dir(), "run_name": "train"})
    sequences = SequenceData.from_dict(data)
    fit(trial, model_config(trial, features, sequences, rating_max, _silent), sequences,
        log=_silent, callbacks=[TuneReportCallback()])


def _silent(_: str) -> None:
    """Inside a trial the epochs are reported to Tune; the driver prints them."""


class _Progress(tune.Callback):
    """A line per trial report, with the trials done and the time left in the budget.

    Tune pickles its callbacks with the search (to resume it), so the lines go through the
    ``irec.tune`` logger, which ``search`` points at its ``log`` while it runs."""

    def __init__(self, trials: int, budget_s: float) -> None:
        self.trials, self.budget_s = trials, budget_s
        self.began, self.done = time.time(), 0

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        LOG.info(f"tune: trial {trial.trial_id} epoch {result['epoch'] + 1} {SCORE} "
                 f"{result[SCORE]:.4f} ({self.done}/{self.trials} trials done, "
                 f"{time.time() - self.began:.0f}s of the {self.budget_s:.0f}s budget)")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        LOG.info(f"tune: trial {trial.trial_id} failed (its error is in {trial.local_path})")


class _Lines(logging.Handler):
    """``irec.tune`` records to a ``log`` function."""

    def __init__(self, log: Log) -> None:
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log(record.getMessage())


@dataclass
class Search:
    """The outcome: every trial's settings and best validation score, and the winner."""

    folder: Path
    # one row per trial: settings, best val NDCG@10, epochs, status (full: every epoch ran;
    # stopped: by ASHA or by early stopping; error)
    trials: pd.DataFrame
    best: dict[str, Any]  # the winning trial's settings
    best_score: float
    curves: dict[str, list[float]]  # trial id -> validation NDCG@10 per epoch


def search(training: TrainingConfig, features: FeatureConfig, rating_max: float,
           data: SequenceData, folder: Path, log: Log = print, resume: bool = False) -> Search:
    """Run (or, with ``resume``, continue) the search of ``training.tune`` in ``folder``."""
    t = training.tune
    trainable = tune.with_resources(
        tune.with_parameters(_trial, training=training, features=features,
                             rating_max=rating_max, data=data.to_dict()),
        # The trial's driver only waits on its Ray Train workers, which hold the CPUs; Tune
        # refuses an empty request, so it holds a token of memory.
        {"CPU": 0, "memory": 2**20})
    progress = _Progress(t.trials, t.time_budget_s)
    if resume:
        if not tune.Tuner.can_restore(str(folder)):
            raise FileNotFoundError(f"no search to resume in {folder}")
        log(f"tune: resuming the search in {folder}")
        tuner = tune.Tuner.restore(str(folder), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={key: sampler(d) for key, d in t.space.items()},
            tune_config=tune.TuneConfig(
                metric=SCORE, mode="max", num_samples=t.trials,
                max_concurrent_trials=t.max_concurrent, time_budget_s=t.time_budget_s,
                scheduler=ASHAScheduler(time_attr="training_iteration",
                                        max_t=training.epochs,
                                        grace_period=min(t.grace_epochs, training.epochs),
                                        reduction_factor=t.reduction_factor)),
            run_config=tune.RunConfig(name=folder.name, storage_path=str(folder.parent),
                                      callbacks=[progress], verbose=0),
        )
    lines = _Lines(log)
    LOG.addHandler(lines)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False  # the command's log file gets them through ``log``
    try:
        grid = tuner.fit()
    finally:
        LOG.removeHandler(lines)
    rows, curves = [], {}
    for result in grid:
        frame = result.metrics_dataframe
        scores = [] if frame is None or SCORE not in frame else frame[SCORE].tolist()
        trial_id = result.metrics.get("trial_id") or Path(result.path).name
        curves[trial_id] = scores
        rows.append({"trial": trial_id, **result.config,
                     "best_val_ndcg@10": max(scores) if scores else float("nan"),
                     "epochs": len(scores),
                     "status": "error" if result.error else
                     ("full" if len(scores) >= training.epochs else "stopped")})
    table = pd.DataFrame(rows).sort_values("best_val_ndcg@10", ascending=False,
                                           na_position="last")
    scored = table.dropna(subset=["best_val_ndcg@10"])
    if scored.empty:
        raise RuntimeError(f"no trial of the search in {folder} reported a score")
    winner = scored.iloc[0]
    best = {key: _plain(winner[key]) for key in t.space}
    return Search(folder=folder, trials=table.reset_index(drop=True), best=best,
                  best_score=float(winner["best_val_ndcg@10"]), curves=curves)


def _plain(value: Any) -> Any:
    """numpy scalars as Python values (for YAML)."""
    return value.item() if hasattr(value, "item") else value
