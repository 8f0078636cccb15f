"""Intent: what the user is after right now, from the free text they typed.

The pretrained LM encodes the query (batched with ``@serve.batch``); its similarity to genre
prototypes (the mean LM embedding of each genre's items, from the Feast
``item_text_embedding`` view) becomes a distribution over genres. Ranking blends it with the
model's own intent head (computed on the user state in Retrieval) by ``query_weight``.

Intent needs only the query, so the Ingress calls it at the same time as Retrieval: a request
crosses two stage hops (Retrieval || Intent, then Ranking), not three. A request without a
query does not call it at all.

Intent also embeds the text of items added at run time (``POST /items``, ``embed``): the same
LM, text and pooling as the features build's ``item_text_embedding``.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import torch
from ray import serve

from features.config import FeatureConfig
from features.lm import TextEncoder
from features.store import open_store
from ray_apps.config import IntentUserConfig
from ray_apps.messages import QueryIntent
from ray_apps.models import ModelCache, ServingModel, genre_prototypes


@serve.deployment
class Intent:
    def __init__(self, features: FeatureConfig) -> None:
        self.store = open_store(features)
        self.encoder = TextEncoder(features.lm)
        self.models = ModelCache(self.store)
        self.knobs: IntentUserConfig | None = None

    async def reconfigure(self, config: dict) -> None:
        """Apply new knobs; a new model loads in a thread while requests keep flowing."""
        knobs = IntentUserConfig.model_validate(config)
        torch.set_num_threads(knobs.threads)
        self.models.newer_data = knobs.newer_data
        model = await asyncio.to_thread(self.models.load, knobs.model_tag)
        await self._prototypes(model)
        self.models.current = model.tag
        self.encode.set_max_batch_size(knobs.max_batch_size)
        self.encode.set_batch_wait_timeout_s(knobs.batch_wait_timeout_s)
        self.knobs = knobs

    async def _prototypes(self, model: ServingModel) -> torch.Tensor | None:
        """(G, E) genre prototypes in the LM's space; None when queries are not supported."""
        return await model.derive("prototypes", lambda m: genre_prototypes(m, self.encoder.dim))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def encode(self, queries: list[str]) -> list[np.ndarray]:
        return list(self.encoder.encode(queries))

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """(N, E) LM embeddings of item texts (``features.tables.item_text``), unit length."""
        vectors = await asyncio.to_thread(self.encoder.encode, texts)
        return vectors.tolist()

    async def __call__(self, query: str, model_tag: str | None = None) -> QueryIntent:
        """The query's intent under ``model_tag`` (default: the current model)."""
        began = time.perf_counter()
        model = await self.models.aget(model_tag)
        protos = await self._prototypes(model)
        if protos is None:
            return QueryIntent(model=model.tag, error={
                "status": 422, "field": "query",
                "message": f"model {model.tag} has no genres with LM text embeddings in the "
                           "feature store; free-text queries are not supported"})
        vector = torch.from_numpy(await self.encode(query))  # (E,)
        knobs = self.knobs
        dist = torch.softmax(protos @ vector / knobs.temperature, -1)  # (G,)
        return QueryIntent(model=model.tag, genres=model.genre_names, intent=dist.tolist(),
                           vector=vector.tolist(), weight=knobs.query_weight,
                           latency_ms={"intent": round((time.perf_counter() - began) * 1000, 3)})
