"""Most-popular baseline: every user gets the items with the most training interactions."""

from __future__ import annotations

import numpy as np
import torch

from training.data.sequences import SequenceData
from training.eval.evaluate import split_metrics


def popularity_scores(data: SequenceData) -> torch.Tensor:
    """(I+1,) interaction counts over everything before the test targets."""
    counts = np.bincount(data.seen_items, minlength=data.num_items + 1).astype(np.float32)
    return torch.from_numpy(counts)


def evaluate_popularity(data: SequenceData, split_name: str = "test") -> dict[str, float]:
    scores = popularity_scores(data)
    split = getattr(data, split_name)
    return split_metrics(lambda rows: scores.expand(len(rows), -1), data, split)
