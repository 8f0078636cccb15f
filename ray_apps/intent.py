"""Intent: what the user is after now, as a distribution over genres.

From the model's intent head on the user state, blended with an optional free-text query that
the pretrained LM encodes (batched with ``@serve.batch``): the query's similarity to genre
prototypes (the mean LM embedding of each genre's items, read from the Feast
``item_text_embedding`` view) becomes a second distribution. Cold-start users have no state:
their intent is the query's, or the catalogue's genre mix.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import torch
from pydantic import BaseModel
from ray import serve

from features.store import online_features, open_store
from irec.config import FeatureConfig
from irec.lm import TextEncoder
from ray_apps.config import IntentKnobs
from ray_apps.models import ModelCache, ServingModel
from ray_apps.retrieval import Candidates


class IntentResult(BaseModel):
    error: dict | None = None
    genres: list[str] = []  # the model's genre names
    intent: list[float] = []  # (G,) probability per genre
    query_match: list[float] | None = None  # (K,) query . candidate text, when a query is given
    latency_ms: dict[str, float] = {}


@serve.deployment
class Intent:
    def __init__(self, feature_repo: str, online_store: str, lm_model: str | None,
                 threads: int) -> None:
        torch.set_num_threads(threads)
        self.store = open_store(FeatureConfig(repo_path=feature_repo, online_store=online_store))
        self.encoder = TextEncoder(lm_model)
        self.models = ModelCache(self.store)
        self.knobs: IntentKnobs | None = None
        self.text: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}

    async def reconfigure(self, config: dict) -> None:
        """Apply new knobs; a new model loads in a thread while requests keep flowing."""
        knobs = IntentKnobs.model_validate(config)
        model = await asyncio.to_thread(self.models.load, knobs.model_tag)
        await asyncio.to_thread(self._text, model)
        self.models.current = model.tag
        self.encode.set_max_batch_size(knobs.max_batch_size)
        self.encode.set_batch_wait_timeout_s(knobs.batch_wait_timeout_s)
        self.knobs = knobs

    def _text(self, model: ServingModel) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Item text (I+1, E) and genre prototypes (G, E), normalised, from the feature store.

        The feature store's embeddings are the LM's own space, the one queries are encoded in
        (the model's item tower may have tuned its copy).
        """
        if model.tag in self.text:
            return self.text[model.tag]
        found = None
        if model.genre_names:
            rows = [{"item_id": i} for i in range(1, model.num_items + 1)]
            got = online_features(self.store, rows, ["item_text_embedding:text_embedding"])
            vectors = got["text_embedding"]
            dim = next((len(v) for v in vectors if v), 0)
            if dim == self.encoder.dim:
                text = torch.zeros(model.num_items + 1, dim)
                for i, v in enumerate(vectors, start=1):
                    if v:
                        text[i] = torch.tensor(v)
                members = (model.genre_matrix > 0).float()  # (I+1, G)
                protos = torch.nn.functional.normalize(members.T @ text, dim=-1)  # (G, E)
                found = (torch.nn.functional.normalize(text, dim=-1), protos)
        self.text[model.tag] = found
        return found

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def encode(self, queries: list[str]) -> list[np.ndarray]:
        return list(self.encoder.encode(queries))

    async def __call__(self, retrieved: Candidates, query: str) -> IntentResult:
        began = time.perf_counter()
        if retrieved.error:
            return IntentResult()
        model = await self.models.aget(retrieved.model)
        knobs = self.knobs
        names = model.genre_names
        vector, text, match = None, None, None
        if query:
            text = self.text.get(model.tag) if model.tag in self.text else (
                await asyncio.to_thread(self._text, model))
            if text is None:
                return IntentResult(error={
                    "status": 422, "field": "query",
                    "message": f"model {model.tag} has no genres with LM text embeddings "
                               "in the feature store; free-text queries are not supported"})
            vector = torch.from_numpy(await self.encode(query))  # (E,)
            match = (text[0][retrieved.candidates] @ vector).tolist()  # (K,)
        if not names:
            return IntentResult(query_match=match, latency_ms={"intent": _ms(began)})
        if retrieved.state is not None:
            state = torch.tensor(retrieved.state)
            with torch.no_grad():
                dist = torch.softmax(model.model.intent(state), -1)  # (G,)
        else:
            dist = model.genre_matrix[1:].sum(0)
            dist = dist / dist.sum().clamp(min=1e-9)
        if vector is not None:
            from_query = torch.softmax(text[1] @ vector / knobs.temperature, -1)  # (G,)
            weight = knobs.query_weight if retrieved.state is not None else 1.0
            dist = (1 - weight) * dist + weight * from_query
        return IntentResult(genres=names, intent=dist.tolist(),
                            query_match=match,
                            latency_ms={"intent": _ms(began)})


def _ms(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 3)
