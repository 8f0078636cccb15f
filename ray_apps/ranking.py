"""Ranking: score the K candidates with the ranking heads and features, keep the top N.

Fused score = sum of weighted, z-scored terms (weights in ``user_config``):
  retrieval  next-item score from the evolution head (the candidate's retrieval score);
  rating     the intensity head's predicted rating;
  like       the decay head's P(like), with history pooled by the learned decay at request time;
  intent     the intent distribution . the item's genres;
  query      the query's LM similarity to the item text (when a query is given);
  popularity the trailing-window popularity from Feast ``item_stats`` (the whole catalogue's,
             re-read in the background every ``item_features_ttl_s``);
  fresh      a bonus (in the z-scores' units) for items added since the model was trained,
             whose popularity term is neutral (``ray_apps.catalogue``).
The intent is the model's intent head (from Retrieval) blended with the query's (from Intent,
weight ``query_weight``; the query's alone on cold start).
Cold start has no user state: popularity within intent (popularity x intent match); with a
query, the z-scored popularity, intent and query terms (the query finds what nobody has
interacted with yet).
A query also brings its own candidates: the ``query_candidates`` items whose text is closest
to it join Retrieval's (seen and excluded items left out), so text search reaches items the
user state would not retrieve, such as items added since training.
Each pick is explained: how well it matches the intent, through which genres, the history
items whose item vectors are closest to it, and whether it is ``new`` (added after the model
was trained, served from its text: ``ray_apps.catalogue``).
"""

from __future__ import annotations

import asyncio
import time

import torch
from ray import serve

from features.config import FeatureConfig
from features.store import STORE_ERRORS, open_store
from ray_apps.catalogue import CatalogueView
from ray_apps.config import RankingUserConfig
from ray_apps.messages import Candidates, QueryIntent, Ranked
from ray_apps.models import ModelCache, Refreshed, ServingModel, item_trends


def zscore(x: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """(K,) ``x`` standardised over the candidates; with ``known`` (K,) bool, over the known
    values only, the unknown ones neutral (0)."""
    if known is not None:
        out = torch.zeros_like(x)
        out[known] = zscore(x[known])
        return out
    if x.numel() < 2:
        return torch.zeros_like(x)
    return (x - x.mean()) / x.std().clamp(min=1e-6)


@serve.deployment
class Ranking:
    def __init__(self, features: FeatureConfig) -> None:
        self.store = open_store(features)
        self.models = ModelCache(self.store)
        self.catalogue = CatalogueView(self.store, features.data_dir)
        self.knobs: RankingUserConfig | None = None
        # (I+1,) log1p trailing-window popularity of the trained items
        self.popularity = Refreshed(lambda: self._item_stats(self.models.get().num_items),
                                    torch.zeros(1), STORE_ERRORS)

    async def reconfigure(self, config: dict) -> None:
        """Apply new knobs; a new model loads in a thread while requests keep flowing."""
        knobs = RankingUserConfig.model_validate(config)
        torch.set_num_threads(knobs.threads)
        self.models.newer_data = knobs.newer_data
        model = await asyncio.to_thread(self.models.load, knobs.model_tag)
        self.models.current = model.tag
        await self.popularity.load()
        self.knobs = knobs

    def _item_stats(self, num_items: int) -> torch.Tensor:
        window, _ = item_trends(self.store, num_items)
        return torch.log1p(torch.from_numpy(window).float())

    async def __call__(self, retrieved: Candidates, query: QueryIntent | None, n: int) -> Ranked:
        """Top ``n`` of the candidates; ``query`` is Intent's answer when the request has text."""
        began = time.perf_counter()
        if not retrieved.candidates:
            return Ranked()
        model = await self.models.aget(retrieved.model)
        await self._grow(model, retrieved)
        popularity = self.popularity.get(self.knobs.item_features_ttl_s)
        cands, scores = self._candidates(model, retrieved, query)  # (K,), (K,)
        trained = cands <= model.num_items  # (K,) the others were added since training
        pop = torch.zeros(len(cands))  # (K,)
        known = trained & (cands < len(popularity))
        pop[known] = popularity[cands[known]]
        dist = self._intent(retrieved, query)  # (G,) or None
        match = (model.genre_matrix[cands] @ dist if dist is not None
                 else torch.zeros(len(cands)))  # (K,)
        query_match = self._query_match(model, query, cands)  # (K,) or None
        w = self.knobs.weights
        if retrieved.state is None and query_match is None:
            score = (pop + 1.0) * (0.1 + match)
        elif retrieved.state is None:
            score = (w.popularity * zscore(pop, trained) + w.intent * zscore(match)
                     + w.query * zscore(query_match))
        else:
            score = self._fuse(model, retrieved, cands, scores, match, pop, query_match)
        score = score + w.fresh * (~trained).float()
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
                    "new": item > model.num_items,
                    "intent_match": float(match[top.indices[rank]]), "intent_genres": favoured,
                    "because_of": because[rank],
                    "because_of_titles": [model.titles[h] for h in because[rank]]}})
        ms = (time.perf_counter() - began) * 1000
        return Ranked(items=items, genres=model.genre_names,
                      intent=[] if dist is None else dist.tolist(),
                      latency_ms={"ranking": round(ms, 3)})

    async def _grow(self, model: ServingModel, retrieved: Candidates) -> None:
        """Serve the items Retrieval serves (added since training); without the store, what
        this replica knows (candidates it cannot place are dropped)."""
        if retrieved.catalogue_size > model.num_served or model.pending:
            try:
                await self.catalogue.sync(model, retrieved.catalogue_size)
            except STORE_ERRORS:
                pass
        if max(retrieved.candidates) > model.num_served:
            keep = [j for j, c in enumerate(retrieved.candidates) if c <= model.num_served]
            retrieved.candidates = [retrieved.candidates[j] for j in keep]
            retrieved.scores = [retrieved.scores[j] for j in keep]

    @staticmethod
    def _query_match(model: ServingModel, query: QueryIntent | None,
                     cands: torch.Tensor) -> torch.Tensor | None:
        """(K,) the query's LM similarity to each candidate's text; None without a query."""
        text = model.lm_text  # (I+1, E)
        if query is None or text is None or text.shape[1] != len(query.vector):
            return None
        return text[cands] @ torch.tensor(query.vector)

    def _candidates(self, model: ServingModel, retrieved: Candidates,
                    query: QueryIntent | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(K,) Retrieval's candidates plus the query's closest texts, and their retrieval
        scores (the user state . item vector for the query's; 0 on cold start)."""
        cands = torch.tensor(retrieved.candidates)
        scores = torch.tensor(retrieved.scores, dtype=torch.float)
        text, top = model.lm_text, self.knobs.query_candidates
        if query is None or not top or text is None or text.shape[1] != len(query.vector):
            return cands, scores
        sims = text @ torch.tensor(query.vector)  # (I+1,)
        sims[0] = -torch.inf
        sims[[*retrieved.candidates, *retrieved.items, *retrieved.exclude,
              *model.pending]] = -torch.inf
        found = sims.topk(min(top, len(sims) - 1))
        extra = found.indices[torch.isfinite(found.values)]
        if not len(extra):
            return cands, scores
        extra_scores = (model.item_vectors[extra] @ torch.tensor(retrieved.state)
                        if retrieved.state is not None else torch.zeros(len(extra)))
        return torch.cat([cands, extra]), torch.cat([scores, extra_scores])

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
              scores: torch.Tensor, match: torch.Tensor, pop: torch.Tensor,
              query_match: torch.Tensor | None):
        w = self.knobs.weights
        net = model.model
        state = torch.tensor(retrieved.state).expand(len(cands), -1)  # (K, D)
        vectors = model.item_vectors[cands]  # (K, D)
        score = w.retrieval * zscore(scores)
        trained = cands <= model.num_items
        score = score + w.intent * zscore(match) + w.popularity * zscore(pop, trained)
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
