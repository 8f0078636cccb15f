"""Items added after the model was trained, served from their text before any retraining.

``POST /items`` allocates an id (``features.catalogue``), logs the item and writes its
``item_profile`` and ``item_text_embedding`` rows online. A stage that serves items keeps its
models in step with the store: when the store's catalogue is larger than what a model serves,
``CatalogueView.sync`` reads the added items from Feast and appends them to the model.

The model never saw an added item, so it has no id embedding for it. Its item vector is built
from its text: the ``NEIGHBOURS`` trained items closest to it in the LM's space (Feast
``item_text_embedding``, cosine) lend it their item vectors, weighted by
``softmax(similarity / TEMPERATURE)``::

    v(new) = sum_j w_j * item_vector(j)        j: the 10 nearest trained items by LM text

so the user state scores it as it scores the items it reads like. Measured on the tiny preset
(ML-100K, a sci-fi history, a "space opera" item), this places it far better than the model's
own text projection does (``id part of the neighbours + text_proj(text)``: ranks 500-800 of
1,682, against 40-300): the projection learnt little beside the id embeddings. An item given
without genres gets them from its text: ``softmax(genre prototypes . text / GENRE_TEMPERATURE)``
(a prototype is the mean LM text of a genre's trained items), for the intent match.

Dot-product retrieval favours items with many interactions, which an added item has not:
Retrieval therefore keeps a slot for them (``fresh_candidates``: the best-scoring added
items join the candidates). Ranking fuses them like any other candidate, with two changes
until a retrained model knows them: their popularity term is neutral (unknown, not zero), and
they get the ``fresh`` fusion weight as a bonus (exploration: without being shown they never
gather the events that retraining learns from; the exposure log records each showing). An id whose
features are not online yet (its add was interrupted before the write; the client's retry
completes it) is held back as ``pending`` and never recommended.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from features.catalogue import Catalogue
from features.store import FeatureStore, online_features
from ray_apps.models import ServingModel, genre_prototypes

NEIGHBOURS = 10
TEMPERATURE = 0.02
GENRE_TEMPERATURE = 0.02
PENDING_RETRY_S = 5.0  # how often ids still without online features are looked at again


@dataclass
class Added:
    """Feast's rows of added item ids (ids ascending)."""

    ids: list[int]
    raw_ids: list[str]
    titles: list[str]
    genres: list[list[str]]
    text: torch.Tensor  # (N, E) L2-normalised; zero rows: no features online yet


def read_added(store: FeatureStore, ids: list[int], width: int) -> Added:
    """The ``item_profile`` and ``item_text_embedding`` rows of ``ids`` from Feast."""
    got = online_features(store, [{"item_id": i} for i in ids],
                          ["item_profile:title", "item_profile:genres",
                           "item_text_embedding:text_embedding"])
    text = torch.zeros(len(ids), width)
    for row, vector in enumerate(got["text_embedding"]):
        if vector and len(vector) == width:
            text[row] = torch.tensor(vector)
    return Added(ids=ids, raw_ids=[""] * len(ids), titles=[t or "" for t in got["title"]],
                 genres=[list(g or []) for g in got["genres"]],
                 text=torch.nn.functional.normalize(text, dim=-1))


def neighbours(model: ServingModel, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, k) the trained items nearest to each text in the LM's space, and their weights."""
    trained = model.lm_text[1: model.num_items + 1]  # (I, E)
    top = (text @ trained.T).topk(min(NEIGHBOURS, trained.shape[0]), dim=-1)  # (N, k)
    return top.indices + 1, torch.softmax(top.values / TEMPERATURE, -1)


def added_vectors(model: ServingModel, added: Added) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) item vectors and (N, G) genre rows of added items; see the module docstring."""
    ids, lent = neighbours(model, added.text)  # (N, k)
    weights = lent.unsqueeze(-1)  # (N, k, 1)
    vectors = (weights * model.item_vectors[ids]).sum(1)  # (N, D)
    index = {g: j for j, g in enumerate(model.genre_names)}
    genres = torch.zeros(len(added.ids), len(index))  # (N, G)
    for row, names in enumerate(added.genres):
        for g in names:
            if g in index:
                genres[row, index[g]] = 1.0
    genres = genres / genres.sum(-1, keepdim=True).clamp(min=1.0)
    protos = genre_prototypes(model, added.text.shape[1])  # (G, E) or None
    if protos is None:
        return vectors, genres
    from_text = torch.softmax(added.text @ protos.T / GENRE_TEMPERATURE, -1)  # (N, G)
    given = genres.sum(-1, keepdim=True) > 0
    return vectors, torch.where(given, genres, from_text)


def grow(model: ServingModel, added: Added) -> dict:
    """The model's item tables with ``added`` appended or (pending ids) filled in: computed
    apart from the model, applied by ``apply`` in one step of the event loop."""
    vectors, genre_rows = added_vectors(model, added)
    ready = added.text.abs().sum(-1) > 0  # (N,)
    end = max(model.num_served, max(added.ids))
    grown = end - model.num_served
    tables = {
        "item_vectors": torch.cat([model.item_vectors,
                                   model.item_vectors.new_zeros(grown, vectors.shape[1])]),
        "genre_matrix": torch.cat([model.genre_matrix,
                                   model.genre_matrix.new_zeros(grown, genre_rows.shape[1])]),
        "lm_text": torch.cat([model.lm_text, model.lm_text.new_zeros(grown,
                                                                     added.text.shape[1])]),
        "titles": model.titles + [""] * grown, "raw_ids": model.raw_ids + [""] * grown,
        "genres": model.genres + [[] for _ in range(grown)],
    }
    pending = set(model.pending) | set(range(model.num_served + 1, end + 1))
    for row, item in enumerate(added.ids):
        tables["raw_ids"][item] = added.raw_ids[row]
        if not ready[row]:
            continue
        tables["item_vectors"][item] = vectors[row]
        tables["genre_matrix"][item] = genre_rows[row]
        tables["lm_text"][item] = added.text[row]
        tables["titles"][item] = added.titles[row]
        tables["genres"][item] = added.genres[row]
        pending.discard(item)
    tables["unit_vectors"] = torch.nn.functional.normalize(tables["item_vectors"], dim=-1)
    tables["pending"] = pending
    return tables


def apply(model: ServingModel, tables: dict) -> None:
    """Swap the grown tables in (no await in between: a request sees all or none), and put
    the items placed now in the model's ANN index, if it has one."""
    placed = [i for i in range(1, len(tables["titles"])) if i > model.num_served
              or i in model.pending]
    placed = [i for i in placed if i not in tables["pending"]]
    for name, value in tables.items():
        setattr(model, name, value)
    index = model.derived.get("ann_index")
    if index is not None and placed:
        index.upsert(model.item_vectors, placed)


class CatalogueView:
    """A stage's view of the store's catalogue; ``sync`` grows a model to it."""

    def __init__(self, store: FeatureStore, data_dir: Path) -> None:
        self.store = store
        self.catalogue = Catalogue(store, data_dir)
        self.lock = asyncio.Lock()
        self.pending_retry_at = 0.0

    def size(self) -> int:
        return self.catalogue.size()

    async def sync(self, model: ServingModel, size: int) -> None:
        """Append ids up to ``size`` (and any pending) to ``model``; a no-op when it has them.

        Needs the model's LM text (``lm_text``): without it added items cannot be placed."""
        if model.lm_text is None or (size <= model.num_served and (
                not model.pending or time.monotonic() < self.pending_retry_at)):
            return
        async with self.lock:  # one growth at a time; the next sees what this one did
            ids = sorted(model.pending | set(range(model.num_served + 1, size + 1)))
            if not ids:
                return
            added = await asyncio.to_thread(read_added, self.store, ids, model.lm_text.shape[1])
            raw = await asyncio.to_thread(self.catalogue.raw_ids, ids)
            added.raw_ids = [raw.get(i, "") for i in ids]
            tables = await asyncio.to_thread(grow, model, added)
            apply(model, tables)
            self.pending_retry_at = time.monotonic() + PENDING_RETRY_S
