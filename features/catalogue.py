"""The catalogue grows at run time: item ids allocated atomically in the online store, and the
added items' features written online through Feast.

Ids are never renumbered (``data.ingest`` keeps an append-only id map). An added item's
``raw_item_id`` (the client's own id, its idempotency key) gets the next id after the largest
one given, in one atomic step of the store itself, so any number of replicas and pods allocate
without a lock between them:

- SQLite: a ``BEGIN IMMEDIATE`` transaction on a table beside Feast's (``irec_catalogue``);
- Redis: one Lua script over ``irec:<project>:catalogue:ids`` (raw id -> id) and ``...:top``.

A raw id seen before (in ``items.parquet``, the catalogue log, or the store) keeps its id: a
retried add is the same item. Ids run on from the largest id of the workspace's items and the
catalogue log, so they stay contiguous across re-ingests that fold the log in.

Then ``write_online`` puts the item's ``item_profile`` and ``item_text_embedding`` rows in the
online store with Feast's ``write_to_online_store``; the serving stages read them from there
(``ray_apps.models.added_items``) when ``size`` says the catalogue grew.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore

from data.catalogue_log import CatalogueLog, NewItem
from features.live import immediate, online_kind, redis_client, sqlite_path


@dataclass(frozen=True)
class Allocated:
    item_id: int
    new: bool  # given by this call
    dataset: bool  # an item of the ingested dataset (its features come from the batch build)


class Catalogue:
    """Item ids of the workspace at ``data_dir`` and of the online store of ``store``."""

    def __init__(self, store: FeatureStore, data_dir: Path, busy_timeout_s: float = 5.0) -> None:
        items = pd.read_parquet(Path(data_dir) / "items.parquet",
                                columns=["item_id", "raw_item_id"])
        logged = CatalogueLog.of(data_dir).read()
        self.dataset = dict(zip(items["raw_item_id"].astype(str), items["item_id"].astype(int),
                                strict=True))
        self.logged = dict(zip(logged["raw_item_id"].astype(str), logged["item_id"].astype(int),
                               strict=True))
        self.base = max([*self.dataset.values(), *self.logged.values()], default=0)
        self.ids = (_SqliteIds(sqlite_path(store), busy_timeout_s)
                    if online_kind(store) == "sqlite"
                    else _RedisIds(redis_client(store), store.config.project))

    def allocate(self, raw_ids: Sequence[str]) -> list[Allocated]:
        """The id of each raw id, allocated when it has none (all in one store step)."""
        fresh = [r for r in dict.fromkeys(raw_ids) if r not in self.dataset
                 and r not in self.logged]
        given = self.ids.allocate(fresh, self.base) if fresh else {}
        out = []
        for raw in raw_ids:
            if raw in self.dataset:
                out.append(Allocated(self.dataset[raw], new=False, dataset=True))
            elif raw in self.logged:
                out.append(Allocated(self.logged[raw], new=False, dataset=False))
            else:
                item_id, new = given[raw]
                out.append(Allocated(item_id, new=new, dataset=False))
                given[raw] = (item_id, False)  # the same raw id twice: new once
        return out

    def size(self) -> int:
        """The largest item id given: the catalogue is ids 1..size."""
        return max(self.base, self.ids.top())

    def raw_ids(self, item_ids: Sequence[int]) -> dict[int, str]:
        """The raw id of each added item id (from the log, else the store)."""
        logged = {i: raw for raw, i in self.logged.items()}
        found = {i: logged[i] for i in item_ids if i in logged}
        rest = [i for i in item_ids if i not in found]
        return {**found, **(self.ids.raw_ids(rest) if rest else {})}


class _SqliteIds:
    TABLE = "irec_catalogue"

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        self.path, self.busy_timeout_s = path, busy_timeout_s
        self.readers = threading.local()  # reads run per Retrieval batch: one connection each
        self._reader().execute(f"CREATE TABLE IF NOT EXISTS {self.TABLE} (raw_item_id TEXT "
                               "PRIMARY KEY, item_id INTEGER NOT NULL UNIQUE)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)

    def _reader(self) -> sqlite3.Connection:
        """This thread's connection for reads (autocommit: each read sees the latest)."""
        if not hasattr(self.readers, "conn"):
            self.readers.conn = self._connect()
        return self.readers.conn

    def allocate(self, raw_ids: list[str], base: int) -> dict[str, tuple[int, bool]]:
        with immediate(self._connect()) as conn:  # one allocator at a time, across processes
            marks = ",".join("?" * len(raw_ids))
            got = {raw: (item_id, False) for raw, item_id in conn.execute(
                f"SELECT raw_item_id, item_id FROM {self.TABLE} WHERE raw_item_id IN ({marks})",
                raw_ids)}
            top = max(base, conn.execute(f"SELECT max(item_id) FROM {self.TABLE}").fetchone()[0]
                      or 0)
            for raw in raw_ids:
                if raw not in got:
                    top += 1
                    got[raw] = (top, True)
            conn.executemany(f"INSERT INTO {self.TABLE} VALUES (?, ?)",
                             [(raw, item_id) for raw, (item_id, new) in got.items() if new])
        return got

    def top(self) -> int:
        return self._reader().execute(f"SELECT max(item_id) FROM {self.TABLE}").fetchone()[0] or 0

    def raw_ids(self, item_ids: list[int]) -> dict[int, str]:
        marks = ",".join("?" * len(item_ids))
        return {i: raw for raw, i in self._reader().execute(
            f"SELECT raw_item_id, item_id FROM {self.TABLE} WHERE item_id IN ({marks})",
            item_ids)}


# KEYS: the raw id -> id hash, the largest id given, the id -> raw id hash; ARGV: the base
# id, then the raw ids. Returns {ids, new flags}; atomic (Redis runs a script alone).
_ALLOCATE = """
local top = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(ARGV[1]))
local ids, new = {}, {}
for i = 2, #ARGV do
  local id = redis.call('HGET', KEYS[1], ARGV[i])
  if id then
    ids[#ids + 1] = tonumber(id); new[#new + 1] = 0
  else
    top = top + 1
    redis.call('HSET', KEYS[1], ARGV[i], top)
    redis.call('HSET', KEYS[3], top, ARGV[i])
    ids[#ids + 1] = top; new[#new + 1] = 1
  end
end
redis.call('SET', KEYS[2], top)
return {ids, new}
"""


class _RedisIds:
    def __init__(self, client, project: str) -> None:
        self.client = client
        self.keys = [f"irec:{project}:catalogue:{name}" for name in ("ids", "top", "raw")]
        self.script = client.register_script(_ALLOCATE)

    def allocate(self, raw_ids: list[str], base: int) -> dict[str, tuple[int, bool]]:
        ids, new = self.script(keys=self.keys, args=[base, *raw_ids])
        return {raw: (int(i), bool(n)) for raw, i, n in zip(raw_ids, ids, new, strict=True)}

    def top(self) -> int:
        return int(self.client.get(self.keys[1]) or 0)

    def raw_ids(self, item_ids: list[int]) -> dict[int, str]:
        got = self.client.hmget(self.keys[2], item_ids)
        return {i: raw.decode() for i, raw in zip(item_ids, got, strict=True) if raw is not None}


def write_online(store: FeatureStore, items: Sequence[NewItem], vectors: np.ndarray) -> None:
    """The items' ``item_profile`` and ``item_text_embedding`` rows, through Feast.

    ``vectors`` (N, E) are the LM embeddings of ``features.tables.item_text`` of each item."""
    stamps = pd.to_datetime([int(i.timestamp * 1e6) for i in items], unit="us", utc=True)
    ids = [i.item_id for i in items]
    store.write_to_online_store("item_profile", pd.DataFrame({
        "item_id": ids, "event_timestamp": stamps, "title": [i.title for i in items],
        "genres": [list(i.genres) for i in items],
        "year": pd.array([i.year for i in items], dtype="Int64")}))
    store.write_to_online_store("item_text_embedding", pd.DataFrame({
        "item_id": ids, "event_timestamp": stamps,
        "text_embedding": [np.asarray(v, dtype=np.float32).tolist() for v in vectors]}))
