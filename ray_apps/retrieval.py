"""Retrieval: the user's recent events -> user state -> top-K candidates, seen items removed.

History comes from the Feast online store (``retrieval_v1``: the last N events and their
decay at request time) for a known user, or from the request for an anonymous one. Scores are
the state against the item matrix: exact below ``ann_min_items`` items (100,000 by default:
under a millisecond on one core), a FAISS inverted-file index from there on (``ray_apps.ann``).
Cold start (a known user with no history, or features older than the ``user_history`` TTL):
the most popular items (Feast ``item_stats``, which live events move; re-read in the
background every ``item_features_ttl_s``), flagged for the later stages. The online store
is read in a thread, within ``feature_timeout_s``: when it is down or hung, known users get
that same fallback, flagged "feature store unavailable" and counted
(``irec_feature_fallback_total``), and health reports "degraded" until a read works; for
``feature_retry_s`` after a failure, requests take the fallback without trying the store.
Items added after the model was trained (``POST /items``) are served from their text
(``ray_apps.catalogue``): every batch asks the store how large the catalogue is and grows the
model when it grew, so an added item is retrievable by the next request. In a history, such an
item is excluded from the candidates but not fed to the sequence model, which has no id for it;
history ids beyond the catalogue are dropped and counted
(``irec_unknown_history_items_total``).
The model's intent head reads the same state: its genre distribution (the catalogue's genre
mix on cold start) travels with the candidates, for Ranking to blend with the query's intent.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pandas as pd
import torch
from ray import serve
from ray.serve.metrics import Counter

from data.ingest import read_manifest
from features.config import FeatureConfig
from features.store import STORE_ERRORS, online_features, open_store
from ray_apps.ann import ItemIndex, set_threads, top_k
from ray_apps.catalogue import CatalogueView
from ray_apps.config import Clock, RetrievalUserConfig
from ray_apps.messages import Candidates, Query, bad
from ray_apps.models import ModelCache, Refreshed, ServingModel, item_trends


@serve.deployment
class Retrieval:
    def __init__(self, features: FeatureConfig) -> None:
        self.features = features
        self.store = open_store(features)
        self.ttl_s = self.store.get_feature_view("user_history").ttl.total_seconds()
        # One FeatureService object for the replica's life: Feast re-compiles the on-demand
        # view for every new object, which costs ~15 ms a read (0.9 ms with a reused one).
        self.service = self.store.get_feature_service("retrieval_v1")
        self.models = ModelCache(self.store)
        self.catalogue = CatalogueView(self.store, features.data_dir)
        self.knobs: RetrievalUserConfig | None = None
        self.as_of: int | None = None  # the pinned serving clock; None = wall clock
        # (I+1,) the cold-start ranking of the trained items, re-read every item_features_ttl_s
        self.popularity = Refreshed(lambda: self._popularity(self.models.get().num_items),
                                    np.zeros(1), STORE_ERRORS)
        self.store_error = ""  # why the last online read failed; "" once one works again
        self.store_retry_at = 0.0  # monotonic time before which reads are not tried again
        self.fallbacks = Counter("irec_feature_fallback_total", tag_keys=("error",),
                                 description="Known users answered by the popularity fallback "
                                             "because the online store failed or timed out")
        self.unknown_items = Counter("irec_unknown_history_items_total",
                                     description="History items the model does not know, dropped")

    async def reconfigure(self, config: dict) -> None:
        """Apply new knobs; a new model loads in a thread while requests keep flowing."""
        knobs = RetrievalUserConfig.model_validate(config)
        torch.set_num_threads(knobs.threads)
        set_threads(knobs.threads)
        self.as_of = self._pinned(knobs.clock)
        self.models.newer_data = knobs.newer_data
        model = await asyncio.to_thread(self.models.load, knobs.model_tag)
        if model.num_items >= knobs.ann_min_items:
            await model.derive("ann_index", lambda m: ItemIndex(m.item_vectors))
        self.models.current = model.tag
        await self.popularity.load()
        self.retrieve.set_max_batch_size(knobs.max_batch_size)
        self.retrieve.set_batch_wait_timeout_s(knobs.batch_wait_timeout_s)
        self.knobs = knobs

    def _pinned(self, clock: Clock) -> int | None:
        """The epoch second ``clock`` stands for, or None for the wall clock."""
        if clock == "wall":
            return None
        if clock == "dataset_end":
            end = read_manifest(self.features.data_dir)["time_range"][1]
            return int(pd.Timestamp(end).timestamp()) + 1
        return clock

    def _popularity(self, num_items: int) -> np.ndarray:
        """(I+1,) trailing-window popularity, the all-time count breaking ties."""
        window, total = item_trends(self.store, num_items)
        scores = window + total / (total.max() + 1.0)
        scores[0] = -np.inf
        return scores

    def model_tag(self) -> str:
        return self.models.current or ""

    def store_health(self) -> str:
        """"" when the last online read worked, else why it failed."""
        return self.store_error

    def _store_skipped(self, count: int) -> bool:
        """True (counted) while a store that just failed is given a rest."""
        if self.store_error and time.monotonic() < self.store_retry_at:
            self.fallbacks.inc(count, tags={"error": "skipped"})
            return True
        return False

    def _store_failed(self, exc: BaseException, count: int) -> None:
        kind = type(exc).__name__
        self.store_error = f"{kind}: {exc}"[:300] if str(exc) else (
            f"{kind} after feature_timeout_s={self.knobs.feature_timeout_s}s")
        self.fallbacks.inc(count, tags={"error": kind})
        self.store_retry_at = time.monotonic() + self.knobs.feature_retry_s

    async def _grow(self, model: ServingModel, count: int) -> None:
        """Serve the items added since the model was trained (a store read per batch)."""
        if self._store_skipped(count):
            return
        try:
            size = await asyncio.wait_for(asyncio.to_thread(self.catalogue.size),
                                          self.knobs.feature_timeout_s)
            await asyncio.wait_for(self.catalogue.sync(model, size),
                                   self.knobs.feature_timeout_s)
        except STORE_ERRORS as exc:  # serve the catalogue known so far
            self._store_failed(exc, count)

    async def _read(self, users: list[dict], now: int) -> dict | None:
        """The users' features, or None (the error recorded and counted) within the timeout."""
        if self._store_skipped(len(users)):
            return None
        try:
            got = await asyncio.wait_for(asyncio.to_thread(
                online_features, self.store, users, self.service, now),
                self.knobs.feature_timeout_s)
        except STORE_ERRORS as exc:
            self._store_failed(exc, len(users))
            return None
        self.store_error = ""
        return got

    async def __call__(self, query: Query) -> Candidates:
        return await self.retrieve(query)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def retrieve(self, queries: list[Query]) -> list[Candidates]:
        began = time.perf_counter()
        knobs = self.knobs
        model = await self.models.aget()
        await self._grow(model, len(queries))
        now = self.as_of if self.as_of is not None else int(time.time())
        out: list[Candidates | None] = [self._check(q, model) for q in queries]
        users = [i for i, q in enumerate(queries) if out[i] is None and q.user_id is not None]
        feast_ms = 0.0
        histories: dict[int, tuple[list, list, list]] = {}
        seen: dict[int, list[int]] = {}  # every history item, added ones too (excluded)
        if users:
            tick = time.perf_counter()
            got = await self._read([{"user_id": queries[i].user_id} for i in users], now)
            feast_ms = (time.perf_counter() - tick) * 1000
            for row, i in enumerate(users):
                if got is None:
                    out[i] = self._cold(queries[i], model, now,
                                        f"feature store unavailable ({self.store_error})")
                    continue
                seen[i] = got["hist_item_ids"][row] or []
                history = self._known(model, seen[i], got["hist_timestamps"][row] or [],
                                      got["hist_ratings"][row] or [])
                out[i] = self._from_features(queries[i], got, row, model, now, history)
                if out[i] is None:
                    histories[i] = history
        for i, q in enumerate(queries):
            if out[i] is None and q.user_id is None:
                seen[i] = q.items
                histories[i] = self._known(model, q.items, q.stamps, q.ratings)
                if not histories[i][0]:
                    out[i] = self._cold(q, model, now, "no history the model knows")
                    del histories[i]
        if histories:
            self._score(queries, histories, seen, out, model, knobs, now)
        ms = (time.perf_counter() - began) * 1000
        for c in out:
            c.catalogue_size = model.num_served
            c.latency_ms.update(feast=round(feast_ms, 3), retrieval=round(ms, 3))
        return out

    def _check(self, q: Query, model: ServingModel) -> Candidates | None:
        for i, item in enumerate(q.items):
            if item > model.num_served:
                return bad(model.tag, f"history.{i}.item_id",
                           f"unknown item {item} (ids run 1..{model.num_served})")
        top = model.model.cfg.rating_max
        for i, rating in enumerate(q.ratings):
            if rating is not None and rating > top:
                return bad(model.tag, f"history.{i}.rating",
                           f"rating {rating:g} above the model's scale (0..{top:g})")
        for i, item in enumerate(q.exclude):
            if item > model.num_served:
                return bad(model.tag, f"exclude.{i}",
                           f"unknown item {item} (ids run 1..{model.num_served})")
        return None

    def _known(self, model: ServingModel, ids: list, stamps: list,
               ratings: list) -> tuple[list, list, list]:
        """The events whose item the model knows, the others counted."""
        *history, dropped = known_history(model.num_items, ids, stamps, ratings)
        if dropped:
            self.unknown_items.inc(dropped)
        return tuple(history)

    def _from_features(self, q: Query, got: dict, row: int, model: ServingModel, now: int,
                       history: tuple[list, list, list]) -> Candidates | None:
        """A finished answer for unknown or cold users; None when the history is usable."""
        since = got["seconds_since_last_event"][row]
        if since is None:
            return bad(model.tag, "user_id", f"unknown user {q.user_id}: the feature store has "
                       "no events for it", status=404)
        if not history[0]:
            return self._cold(q, model, now, "no history the model knows"
                              if got["hist_item_ids"][row] else "no history")
        if since > self.ttl_s:
            return self._cold(q, model, now, f"last event {since / 86_400:.0f} days ago, past "
                              f"the {self.ttl_s / 86_400:.0f}-day feature TTL")
        return None

    def _cold(self, q: Query, model: ServingModel, now: int, reason: str) -> Candidates:
        scores = np.zeros(model.num_served + 1)  # added items: no events yet
        popularity = self.popularity.get(self.knobs.item_features_ttl_s)
        known = min(len(popularity), len(scores))
        scores[:known] = popularity[:known]
        scores[[*q.exclude, *model.pending]] = -np.inf
        top = np.argsort(-scores, kind="stable")[: self.knobs.k]
        newest = [i for i in range(model.num_served, model.num_items, -1)
                  if np.isfinite(scores[i])][: self.knobs.fresh_candidates]
        top = np.concatenate([top, np.setdiff1d(newest, top)]).astype(int)  # a fresh slot
        top = top[np.isfinite(scores[top])]
        return Candidates(model=model.tag, cold_start=True, cold_start_reason=reason, as_of=now,
                          candidates=top.tolist(), scores=scores[top].tolist(),
                          intent=model.genre_mix.tolist(), exclude=q.exclude)

    def _score(self, queries: list[Query], histories: dict, seen: dict, out: list,
               model: ServingModel, knobs: RetrievalUserConfig, now: int) -> None:
        order = sorted(histories)
        length = model.model.cfg.max_len
        batch = len(order)
        items = torch.zeros(batch, length, dtype=torch.long)  # (B, T) left-padded
        ratings = torch.full((batch, length), float("nan"))
        stamps = torch.zeros(batch, length, dtype=torch.long)
        for b, i in enumerate(order):
            ids, ts, rs = (list(x)[-length:] for x in histories[i])
            if ids:
                items[b, -len(ids):] = torch.tensor(ids)
                stamps[b, -len(ts):] = torch.tensor(ts)
                ratings[b, -len(rs):] = torch.tensor(
                    [float("nan") if r is None else float(r) for r in rs])
        with torch.no_grad():
            state = model.model.user_state(items, ratings, stamps)  # (B, D)
            intent = (torch.softmax(model.model.intent(state), -1) if model.genre_names
                      else torch.zeros(batch, 0))  # (B, G)
            # the index exists once the model is big enough; a model still loading scores exactly
            index = (model.derived.get("ann_index") if model.num_items >= knobs.ann_min_items
                     else None)
            drops = [set(seen[i]) | set(queries[i].exclude) | model.pending for i in order]
            found = top_k(state, model.item_vectors, drops, knobs.k, index, knobs.ann_nprobe)
            fresh = self._fresh(model, state, drops, knobs.fresh_candidates)
        for b, i in enumerate(order):
            ids, ts, rs = histories[i]
            candidates, scores = found[b]
            for item, score in fresh[b]:
                if item not in candidates:
                    candidates, scores = [*candidates, item], [*scores, score]
            out[i] = Candidates(
                model=model.tag, state=state[b].tolist(), items=list(ids), stamps=list(ts),
                ratings=list(rs), as_of=now, candidates=candidates, scores=scores,
                intent=intent[b].tolist(),
                exclude=[*queries[i].exclude, *(x for x in seen[i] if x > model.num_items)])


    @staticmethod
    def _fresh(model: ServingModel, state: torch.Tensor, drops: list[set[int]],
               count: int) -> list[list[tuple[int, float]]]:
        """Per state, the ``count`` best-scoring items added since training (none dropped):
        with no interactions yet, they rarely win a place among the model's top K."""
        added = torch.arange(model.num_items + 1, model.num_served + 1)  # (A,)
        if not len(added) or not count:
            return [[] for _ in drops]
        scores = state @ model.item_vectors[added].T  # (B, A)
        out = []
        for b, drop in enumerate(drops):
            row = scores[b].clone()
            row[[j for j, item in enumerate(added.tolist()) if item in drop]] = -torch.inf
            top = torch.topk(row, min(count, len(added)))
            out.append([(int(added[j]), float(v)) for v, j in zip(top.values, top.indices,
                                                                   strict=True)
                        if torch.isfinite(v)])
        return out


def known_history(num_items: int, ids: list, stamps: list,
                  ratings: list) -> tuple[list, list, list, int]:
    """(ids, stamps, ratings, dropped): the events of items 1..num_items, in order.

    A store's history can name items the model has never seen (added after it was trained);
    one such id in a batch would index past the model's item table and fail every request of
    the batch.
    """
    keep = [j for j, item in enumerate(ids) if 0 < item <= num_items]
    return ([ids[j] for j in keep], [stamps[j] for j in keep], [ratings[j] for j in keep],
            len(ids) - len(keep))
