"""Events: what users just did, made durable for retraining and live in the online features.

A batch (``POST /events``, gRPC ``LogEvents``; the Ingress checks the write scope) is
validated whole: an item outside the store's catalogue, a timestamp later than now plus
``max_future_skew_s``, a rating outside the dataset's scale or on a dataset without ratings
refuse the batch with a 422 (gRPC INVALID_ARGUMENT) naming the field (``events.3.item_id``).
Events of a user id the store has never seen start that user. Then, in this order:

1. the batch is appended to the offline event log (``data.event_log``: fsynced parquet under
   ``<repo>/data/event_log/``), which the next features build and training set read;
2. it is merged into the online store (``features.live``: users' last-N histories and stats,
   items' stats, one store transaction, event ids deduplicated);
3. the answer names the event ids applied and those seen before.

Batches that arrive at a replica together are committed together (``@serve.batch``): one log
file and one store transaction for all of them, so concurrent clients do not queue on the
store's write lock one batch at a time.

Exposures (what each ``/recommend`` answer showed, sent by the Ingress without waiting) are
buffered for ``exposure_flush_s`` and written to the exposure log as one file; a replica that
shuts down writes what it holds.

Items added at run time (``POST /items``, ``add_items``) get their id from the online store
(``features.catalogue``: atomic, a retried raw id keeps its id), their text embedded by the
Intent stage's LM, a row in the catalogue log (``data.catalogue_log``) and their
``item_profile`` and ``item_text_embedding`` rows online, in that order; events may name them
at once, and the serving stages serve them from their text (``ray_apps.catalogue``).

Only then is the batch acknowledged. A replica killed before the answer leaves the batch
logged or not, applied online or not; the client's retry of the same event ids logs it again
(the log is read back once per event id) and applies online only what was not applied. A store
or disk failure is a 503 (gRPC UNAVAILABLE): nothing was acknowledged, retry the batch.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pandas as pd
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter

from data.catalogue_log import CatalogueLog, NewItem
from data.event_log import Event, EventLog, Exposure, ExposureLog
from data.ingest import read_manifest
from features.catalogue import Catalogue, write_online
from features.config import FeatureConfig
from features.live import LiveConflict, LiveUpdates
from features.store import STORE_ERRORS, open_store
from features.tables import item_text
from ray_apps.config import EventsUserConfig
from ray_apps.messages import Catalogued, Logged, Shown
from ray_apps.schemas import EventsRequest, ItemsRequest


@serve.deployment
class Events:
    def __init__(self, features: FeatureConfig, intent: DeploymentHandle) -> None:
        self.features = features
        self.intent = intent
        self.store = open_store(features)
        self.log = EventLog.of(features.data_dir)
        self.catalogue_log = CatalogueLog.of(features.data_dir)
        self.catalogue: Catalogue | None = None
        self.exposure_log = ExposureLog.of(features.data_dir)
        self.shown: list[Exposure] = []
        self.flushing: asyncio.Task | None = None
        self.live: LiveUpdates | None = None
        self.knobs: EventsUserConfig | None = None
        self.num_items = 0
        self.rating_range: tuple[float, float] | None = None
        self.accepted = Counter("irec_events_accepted_total",
                                description="Events applied (duplicates not counted)")
        self.duplicates = Counter("irec_events_duplicate_total",
                                  description="Events whose id was applied before")

    async def reconfigure(self, config: dict) -> None:
        knobs = EventsUserConfig.model_validate(config)
        self.live = await asyncio.to_thread(
            LiveUpdates, self.store, self.features.history_length, knobs.dedup_ttl_s,
            knobs.max_attempts, knobs.busy_timeout_s)
        await asyncio.to_thread(self._catalogue, knobs.busy_timeout_s)
        self.knobs = knobs

    def _catalogue(self, busy_timeout_s: float) -> None:
        """The item ids and the rating scale events are checked against: the store's data."""
        data = self.features.data_dir
        manifest = read_manifest(data)
        self.catalogue = Catalogue(self.store, data, busy_timeout_s)
        self.num_items = self.catalogue.size()
        self.rating_range = tuple(manifest["rating_range"]) if manifest["has_ratings"] else None

    async def __call__(self, batch: EventsRequest) -> Logged:
        began = time.perf_counter()
        if max(e.item_id for e in batch.events) > self.num_items:  # added since we looked?
            try:
                self.num_items = await asyncio.to_thread(self.catalogue.size)
            except STORE_ERRORS as exc:
                return _bad("events", 503, f"not acknowledged, retry the batch: "
                            f"{type(exc).__name__}: {exc}"[:400])
        events, error = self._validate(batch, time.time())
        if error is not None:
            return error
        result = await self.write(events)
        if isinstance(result, BaseException):
            return Logged(error={"status": 503, "field": "events",
                                 "message": f"not acknowledged, retry the batch: "
                                            f"{type(result).__name__}: {result}"[:400]})
        accepted, duplicates, logged_s = result
        if accepted:  # Ray counters refuse an increment of 0
            self.accepted.inc(len(accepted))
        if duplicates:
            self.duplicates.inc(len(duplicates))
        total = time.perf_counter() - began
        return Logged(accepted=accepted, duplicates=duplicates,
                      latency_ms={"event_log": round(logged_s * 1000, 3),
                                  "online": round((total - logged_s) * 1000, 3)})

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def write(self, batches: list[list[Event]]) -> list:
        """Group commit: the batches that arrived together go to the log as one file and to
        the online store as one transaction. Per batch: (accepted ids, duplicate ids, seconds
        spent on the log), or the store's exception for every batch of the group."""
        events = [e for batch in batches for e in batch]
        try:
            tick = time.perf_counter()
            await asyncio.to_thread(self.log.append, events)
            logged_s = time.perf_counter() - tick
            applied = await asyncio.to_thread(self.live.apply, events)
        except (*STORE_ERRORS, LiveConflict) as exc:
            return [exc] * len(batches)
        fresh, out = set(applied.accepted), []
        for batch in batches:  # an id is accepted once: for its first event in the group
            accepted, duplicates = [], []
            for e in batch:
                (accepted if e.event_id in fresh else duplicates).append(e.event_id)
                fresh.discard(e.event_id)
            out.append((accepted, duplicates, logged_s))
        return out

    async def add_items(self, batch: ItemsRequest) -> Catalogued:
        """Give each item an id, embed its text, log it and write it online (all before the
        answer); items of the ingested dataset are only named."""
        began = time.perf_counter()
        now = time.time()
        try:
            allocated = await asyncio.to_thread(self.catalogue.allocate,
                                                [i.raw_item_id for i in batch.items])
            added = [NewItem(item_id=a.item_id, raw_item_id=i.raw_item_id, title=i.title,
                             genres=tuple(i.genres), year=i.year, text=i.text, timestamp=now)
                     for i, a in zip(batch.items, allocated, strict=True) if not a.dataset]
            if added:
                texts = item_text(pd.DataFrame({"title": [i.title for i in added],
                                                "genres": [list(i.genres) for i in added],
                                                "text": [i.text for i in added]}))
                vectors = np.asarray(await self.intent.embed.remote(texts.tolist()))
                await asyncio.to_thread(self.catalogue_log.append, added)
                await asyncio.to_thread(write_online, self.store, added, vectors)
        except STORE_ERRORS as exc:
            return Catalogued(error={"status": 503, "field": "items",
                                     "message": f"not acknowledged, retry the batch: "
                                                f"{type(exc).__name__}: {exc}"[:400]})
        self.num_items = max(self.num_items, *(a.item_id for a in allocated))
        return Catalogued(
            items=[{"raw_item_id": i.raw_item_id, "item_id": a.item_id, "new": a.new}
                   for i, a in zip(batch.items, allocated, strict=True)],
            latency_ms={"items": round((time.perf_counter() - began) * 1000, 3)})

    async def expose(self, shown: Shown) -> None:
        """Buffer one answered recommendation; a flush follows within exposure_flush_s."""
        self.shown.append(Exposure(request_id=shown.request_id, user_id=shown.user_id,
                                   model=shown.model, items=tuple(shown.items),
                                   scores=tuple(shown.scores), cold_start=shown.cold_start,
                                   timestamp=shown.timestamp))
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.create_task(self._flush_after(self.knobs.exposure_flush_s))

    async def _flush_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        batch, self.shown = self.shown, []
        await asyncio.to_thread(self.exposure_log.append, batch)

    def __del__(self) -> None:
        """Serve calls this when it stops the replica: write the exposures still held."""
        if self.shown:
            self.exposure_log.append(self.shown)

    def _validate(self, batch: EventsRequest, now: float) -> tuple[list[Event], Logged | None]:
        bound = now + self.knobs.max_future_skew_s
        events = []
        for k, e in enumerate(batch.events):
            where = f"events.{k}"
            if e.item_id > self.num_items:
                return [], _bad(f"{where}.item_id", 422, f"unknown item {e.item_id} (the "
                                f"catalogue's ids run 1..{self.num_items})")
            if e.timestamp is not None and e.timestamp > bound:
                return [], _bad(f"{where}.timestamp", 422, f"{e.timestamp} is later than now + "
                                f"max_future_skew_s={self.knobs.max_future_skew_s:g}s "
                                f"({int(bound)})")
            if e.rating is not None and self.rating_range is None:
                return [], _bad(f"{where}.rating", 422, "this dataset has no ratings")
            if e.rating is not None and not (
                    self.rating_range[0] <= e.rating <= self.rating_range[1]):
                low, high = self.rating_range
                return [], _bad(f"{where}.rating", 422, f"{e.rating:g} is outside the "
                                f"dataset's scale [{low:g}, {high:g}]")
            events.append(Event(event_id=e.event_id, user_id=e.user_id, item_id=e.item_id,
                                timestamp=int(now) if e.timestamp is None else e.timestamp,
                                rating=e.rating, kind=e.kind, request_id=e.request_id))
        return events, None


def _bad(field: str, status: int, message: str) -> Logged:
    return Logged(error={"status": status, "field": field, "message": message})
