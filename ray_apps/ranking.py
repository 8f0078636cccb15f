"""Ranking: score the K candidates with the ranking heads and features, keep the top N.

Fused score = sum of weighted, z-scored terms (weights in ``user_config``):
  retrieval  next-item score from the evolution head (the candidate's retrieval score);
  rating     the intensity head's predicted rating;
  like       the decay head's P(like), with history pooled by the learned decay at request time;
  intent     the intent distribution . the item's genres;
  query      the query's LM similarity to the item text (when a query is given);
  popularity the trailing-window popularity from Feast ``item_stats`` (the whole catalogue's,
             re-read in the background every ``item_features_ttl_s``).
The intent is the model's intent head (from Retrieval) blended with the query's (from Intent,
weight ``query_weight``; the query's alone on cold start).
Cold start has no user state: popularity within intent (popularity x intent match).
Each pick is explained: how well it matches the intent, through which genres, and the history
items whose item vectors are closest to it.
"""

from __future__ import annotations

import asyncio
import time

import torch
from ray import serve

from features.config import FeatureConfig
from features.store import STORE_ERRORS, open_store
from ray_apps.config import RankingUserConfig
from ray_apps.messages import Candidates, QueryIntent, Ranked
from ray_apps.models import ModelCache, ServingModel, item_text, item_trends


def zscore(x: torch.Tensor) -> torch.Tensor:
    if x.numel() < 2:
        return torch.zeros_like(x)
    return (x - x.mean()) / x.std().clamp(min=1e-6)


@serve.deployment
class Ranking:
    def __init__(self, features: FeatureConfig) -> None:
        self.store = open_store(features)
        self.models = ModelCache(self.store)
        self.knobs: RankingUserConfig | None = None
        self.popularity = torch.zeros(1)  # (I+1,) log1p trailing-window popularity
        self.read_at = float("-inf")
        self.refreshing: asyncio.Task | None = None

    async def reconfigure(self, config: dict) -> None:
        """Apply new knobs; a new model loads in a thread while requests keep flowing."""
        knobs = RankingUserConfig.model_validate(config)
        torch.set_num_threads(knobs.threads)
        self.models.newer_data = knobs.newer_data
        model = await asyncio.to_thread(self.models.load, knobs.model_tag)
        self.popularity = await asyncio.to_thread(self._item_stats, model.num_items)
        self.read_at = time.monotonic()
        await self._text(model)
        self.models.current = model.tag
        self.knobs = knobs

    async def _text(self, model: ServingModel) -> torch.Tensor | None:
        """(I+1, E) item text embeddings (Feast ``item_text_embedding``) queries are matched to."""
        found = await model.derive("item_text", lambda m: item_text(self.store, m))
        return None if found is None else found[0]

    def _item_stats(self, num_items: int) -> torch.Tensor:
        window, _ = item_trends(self.store, num_items)
        return torch.log1p(torch.from_numpy(window).float())

    def _refresh_item_stats(self, num_items: int) -> None:
        """Re-read item features in the background once they are older than the TTL."""
        stale = time.monotonic() - self.read_at > self.knobs.item_features_ttl_s
        if not stale or (self.refreshing is not None and not self.refreshing.done()):
            return

        async def refresh() -> None:
            try:
                self.popularity = await asyncio.to_thread(self._item_stats, num_items)
            except STORE_ERRORS:  # the store is down: rank with the last values, retry later
                pass
            self.read_at = time.monotonic()

        self.refreshing = asyncio.get_running_loop().create_task(refresh())

    async def __call__(self, retrieved: Candidates, query: QueryIntent | None, n: int) -> Ranked:
        """Top ``n`` of the candidates; ``query`` is Intent's answer when the request has text."""
        began = time.perf_counter()
        if not retrieved.candidates:
            return Ranked()
        model = await self.models.aget(retrieved.model)
        cands = torch.tensor(retrieved.candidates)  # (K,)
        self._refresh_item_stats(model.num_items)
        table = self.popularity
        pop = table[cands] if len(table) > int(cands.max()) else torch.zeros(len(cands))  # (K,)
        dist = self._intent(retrieved, query)  # (G,) or None
        match = (model.genre_matrix[cands] @ dist if dist is not None
                 else torch.zeros(len(cands)))  # (K,)
        query_match = None
        if query is not None:
            text = await self._text(model)
            vector = torch.tensor(query.vector)  # (E,)
            if text is not None and text.shape[1] == len(vector):
                query_match = text[cands] @ vector  # (K,)
        if retrieved.state is None:
            score = (pop + 1.0) * (0.1 + match)
        else:
            score = self._fuse(model, retrieved, cands, match, pop, query_match)
        top = torch.topk(score, min(n, len(cands)))
        picks = cands[top.indices]
        because = self._because(model, retrieved, picks)
        items = []
        for rank, (item, s) in enumerate(zip(picks.tolist(), top.values.tolist(), strict=True)):
            genres = model.genres[item]
            favoured = sorted(genres, key=lambda g: -float(dist[model.genre_names.index(g)])
                              if dist is not None and g in model.genre_names else 0.0)
            items.append({
                "item_id": item, "raw_item_id": model.raw_ids[item], "title": model.titles[item],
                "genres": genres, "score": float(s),
                "explanation": {
                    "intent_match": float(match[top.indices[rank]]), "intent_genres": favoured,
                    "because_of": because[rank],
                    "because_of_titles": [model.titles[h] for h in because[rank]]}})
        ms = (time.perf_counter() - began) * 1000
        return Ranked(items=items, genres=model.genre_names,
                      intent=[] if dist is None else dist.tolist(),
                      latency_ms={"ranking": round(ms, 3)})

    @staticmethod
    def _intent(retrieved: Candidates, query: QueryIntent | None) -> torch.Tensor | None:
        """(G,) the intent head's distribution, blended with the query's when there is one."""
        dist = torch.tensor(retrieved.intent) if retrieved.intent else None
        if query is None or not query.intent:
            return dist
        from_query = torch.tensor(query.intent)
        if dist is None:
            return from_query
        weight = query.weight if retrieved.state is not None else 1.0
        return (1 - weight) * dist + weight * from_query

    def _fuse(self, model: ServingModel, retrieved: Candidates, cands: torch.Tensor,
              match: torch.Tensor, pop: torch.Tensor, query_match: torch.Tensor | None):
        w = self.knobs.weights
        net = model.model
        state = torch.tensor(retrieved.state).expand(len(cands), -1)  # (K, D)
        vectors = model.item_vectors[cands]  # (K, D)
        score = w.retrieval * zscore(torch.tensor(retrieved.scores))
        score = score + w.intent * zscore(match) + w.popularity * zscore(pop)
        if query_match is not None:
            score = score + w.query * zscore(query_match)
        if net.cfg.use_ratings:
            with torch.no_grad():
                score = score + w.rating * zscore(net.rating(state, vectors))
                pooled = torch.zeros_like(state)
                if net.cfg.use_time and retrieved.items:
                    items = torch.tensor([retrieved.items])  # (1, T)
                    stamps = torch.tensor([retrieved.stamps])
                    at = torch.tensor([[retrieved.as_of]])  # (1, 1)
                    pooled = net.decayed_history(items, stamps, at)[0].expand_as(state)
                score = score + w.like * zscore(torch.sigmoid(net.like_logit(state, vectors,
                                                                            pooled)))
        return score  # (K,)

    def _because(self, model: ServingModel, retrieved: Candidates,
                 picks: torch.Tensor) -> list[list[int]]:
        """Per pick, the history items whose vectors are most similar to it."""
        top = self.knobs.explain_top
        history = sorted(set(retrieved.items))
        if not history or not top:
            return [[] for _ in picks]
        unit = model.unit_vectors
        sims = unit[picks] @ unit[history].T  # (N, H)
        best = sims.topk(min(top, len(history)), dim=-1).indices
        return [[history[j] for j in row] for row in best.tolist()]
