"""Retrieval's FAISS index against exact scoring, on the packaged model and real Feast features."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from features.store import open_store
from ray_apps.ann import ItemIndex, top_k
from ray_apps.messages import Query
from ray_apps.models import load
from ray_apps.retrieval import Retrieval

USERS = [1, 2, 3, 42, 100, 405, 655, 942]


@pytest.fixture(scope="module")
def served_model(ml100k_workspace, model_tag):
    return load(model_tag, open_store(ml100k_workspace))


@pytest.fixture(scope="module")
def index(served_model) -> ItemIndex:
    return ItemIndex(served_model.item_vectors)


def states(served_model, count: int = 16) -> torch.Tensor:
    dim = served_model.item_vectors.shape[1]
    return torch.randn(count, dim, generator=torch.Generator().manual_seed(0))  # (B, D)


def test_scanning_every_cell_is_exact(served_model, index):
    x = states(served_model)
    drops = [set() for _ in range(len(x))]
    exact = top_k(x.clone(), served_model.item_vectors, drops, 100)
    approx = top_k(x.clone(), served_model.item_vectors, drops, 100, index, nprobe=index.cells)
    for (e_ids, e_scores), (a_ids, a_scores) in zip(exact, approx, strict=True):
        assert a_ids == e_ids
        np.testing.assert_allclose(a_scores, e_scores, rtol=1e-4, atol=1e-4)


def test_dropped_items_never_come_back_and_rows_stay_full(served_model, index):
    x = states(served_model, 4)
    rng = np.random.default_rng(1)
    drops = [set(rng.choice(np.arange(1, served_model.num_items + 1), 600, replace=False)
                 .tolist()) for _ in range(len(x))]
    for nprobe in (1, index.cells):
        for drop, (ids, scores) in zip(drops, top_k(x, served_model.item_vectors, drops, 50,
                                                    index, nprobe), strict=True):
            assert not drop & set(ids)
            assert 0 not in ids and len(set(ids)) == len(ids)
            assert scores == sorted(scores, reverse=True)
            if nprobe == index.cells:
                assert len(ids) == 50


def test_recall_grows_with_the_cells_scanned(served_model, index):
    """Fewer cells scanned, fewer of the exact top 100 found; all cells, all of them."""
    x = states(served_model, 32)
    drops = [set() for _ in range(len(x))]
    exact = top_k(x.clone(), served_model.item_vectors, drops, 100)
    recalls = []
    for nprobe in (1, 4, 16, index.cells):
        approx = top_k(x.clone(), served_model.item_vectors, drops, 100, index, nprobe)
        recalls.append(np.mean([len(set(a) & set(e)) / len(e)
                                for (a, _), (e, _) in zip(approx, exact, strict=True)]))
    assert index.cells > 16
    assert recalls == sorted(recalls) and len(set(recalls)) == 4 and recalls[-1] == 1.0


def test_retrieval_uses_the_index_above_the_threshold(ml100k_workspace, app_args):
    """The stage's own code with Feast: the index path returns exactly what exact scoring does
    when it scans every cell, and seen items stay out."""

    async def retrieve(min_items: int) -> tuple[list, object]:
        stage = Retrieval.func_or_class(app_args.features)
        retrieval = app_args.serving.retrieval.model_copy(
            update={"ann_min_items": min_items, "ann_nprobe": 65_536})
        serving = app_args.serving.model_copy(update={"retrieval": retrieval})
        await stage.reconfigure(serving.user_config("Retrieval"))
        unbatched = Retrieval.func_or_class.retrieve.__wrapped__
        got = await unbatched(stage, [Query(user_id=u) for u in USERS])
        return got, stage.models.cached()

    exact, exact_model = asyncio.run(retrieve(10**9))
    indexed, indexed_model = asyncio.run(retrieve(1))
    assert "ann_index" not in exact_model.derived
    assert isinstance(indexed_model.derived["ann_index"], ItemIndex)
    for e, a in zip(exact, indexed, strict=True):
        assert e.error is None and not e.cold_start
        assert a.candidates == e.candidates
        assert not set(a.candidates) & set(a.items)
