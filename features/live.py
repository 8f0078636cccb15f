"""Live online features: accepted events update users' histories and stats and items' stats
in the online store at once, atomically, in the store itself.

For each batch of events the store's rows of every user and item it names are read, merged
with the new events and written back in one transaction of the store:

- SQLite (embedded): one ``BEGIN IMMEDIATE`` transaction on Feast's own tables (the database
  is switched to WAL, so serving reads never wait for a writer);
- Redis (production): ``WATCH`` on every key the batch touches, one ``MULTI``/``EXEC`` that
  writes them; a concurrent writer makes ``EXEC`` fail and the batch is merged again from what
  that writer left (optimistic concurrency, retried ``max_attempts`` times).

So writers in any number of threads, replicas or pods never lose each other's events. Rows
are Feast's own encoding (entity keys, ``ValueProto`` values, the view's event time), so
Feast's online reads see them, and a later ``materialize`` of older batch rows never replaces
them (the event-time guards of ``feature_repo/online_store.py``).

What an event changes:
- ``user_history``: the user's last N events by time (N = ``features.history_length``); an
  event older than the newest ones lands in time order and never pushes a newer one out;
- ``user_stats``: count, mean rating, last event time;
- ``item_stats``: count, mean rating, trailing-window popularity. The window count only
  grows here; it falls back to the true trailing window at the next batch materialize.

Event ids are remembered for ``dedup_ttl_s`` in the same transaction (a table beside Feast's
in SQLite, ``irec:<project>:event:<id>`` keys in Redis): an event id seen before is reported
a duplicate and changes nothing. The mean rating assumes the user's (item's) earlier events
were all rated when it has a mean, which holds for explicit and for implicit datasets alike.
"""

from __future__ import annotations

import math
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.sqlite import _quote_id, _table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, Value
from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import WatchError

from data.event_log import Event

USER_VIEWS = {"user_history": ("hist_item_ids", "hist_ratings", "hist_timestamps"),
              "user_stats": ("user_event_count", "user_mean_rating", "user_last_event_ts")}
ITEM_VIEWS = {"item_stats": ("item_event_count", "item_mean_rating", "item_popularity_window")}
# view -> (feature -> value, the row's event time): one entity's rows, as stored
Rows = dict[str, tuple[dict[str, Value], datetime | None]]


@dataclass
class Applied:
    """What one batch did: event ids applied now, and those seen before (changed nothing)."""

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


class LiveConflict(RuntimeError):
    """Redis: other writers changed the batch's keys on every one of ``max_attempts`` tries."""


def online_kind(store: FeatureStore) -> str:
    """``sqlite`` or ``redis``: the online stores whose writes this module makes atomic."""
    kind = store.config.online_store.type
    if kind.endswith("SqliteOnlineStore") or kind == "sqlite":
        return "sqlite"
    if kind.endswith("RedisOnlineStore") or kind == "redis":
        return "redis"
    raise ValueError(f"live updates need a SQLite or Redis online store, not {kind!r}")


def sqlite_path(store: FeatureStore) -> Path:
    """The SQLite online store's database file (relative paths are under the repo)."""
    path = Path(store.config.online_store.path)
    return path if path.is_absolute() else Path(store.repo_path) / path


def redis_client(store: FeatureStore):
    """The Redis online store's own client (its connection settings and timeouts)."""
    return store.provider.online_store._get_client(store.config.online_store)


class LiveUpdates:
    """Applies batches of events to the online store of ``store``; see the module docstring."""

    def __init__(self, store: FeatureStore, history_length: int, dedup_ttl_s: float = 7 * 86_400,
                 max_attempts: int = 50, busy_timeout_s: float = 5.0) -> None:
        self.history_length = history_length
        if online_kind(store) == "sqlite":
            self.backend = SqliteBackend(store, dedup_ttl_s, busy_timeout_s)
        else:
            self.backend = RedisBackend(store, dedup_ttl_s, max_attempts)

    def apply(self, events: Sequence[Event]) -> Applied:
        """Merge ``events`` into the online rows of their users and items, all or nothing."""
        if not events:
            return Applied()
        users = sorted({e.user_id for e in events})
        items = sorted({e.item_id for e in events})
        ids = list(dict.fromkeys(e.event_id for e in events))
        applied = Applied()

        def merge(seen: set[str], user_rows: dict[int, Rows], item_rows: dict[int, Rows]):
            applied.accepted, applied.duplicates, fresh, taken = [], [], [], set()
            for e in events:
                if e.event_id in seen or e.event_id in taken:
                    applied.duplicates.append(e.event_id)
                else:
                    taken.add(e.event_id)
                    fresh.append(e)
                    applied.accepted.append(e.event_id)
            fresh.sort(key=lambda e: (e.timestamp, e.event_id))
            writes_u = {u: merge_user(user_rows[u], [e for e in fresh if e.user_id == u],
                                      self.history_length)
                        for u in {e.user_id for e in fresh}}
            writes_i = {i: merge_item(item_rows[i], [e for e in fresh if e.item_id == i])
                        for i in {e.item_id for e in fresh}}
            return applied.accepted, writes_u, writes_i

        self.backend.transact(users, items, ids, merge)
        return applied


def merge_user(rows: Rows, events: list[Event], n: int) -> Rows:
    """The user's rows after ``events`` (sorted by time): last ``n`` of history, stats."""
    history, history_ts = rows.get("user_history", ({}, None))
    stamps = _values(history.get("hist_timestamps"))
    merged = sorted(
        [*zip(stamps, _values(history.get("hist_item_ids")), _values(history.get("hist_ratings")),
              strict=True),
         *((e.timestamp, e.item_id, _rating(e.rating)) for e in events)],
        key=lambda row: row[0])[-n:]  # stable: stored events first among equal times
    stats, stats_ts = rows.get("user_stats", ({}, None))
    count, mean = _mean_after(stats.get("user_event_count"), stats.get("user_mean_rating"),
                              events)
    last = max([_scalar(stats.get("user_last_event_ts")) or 0, *(e.timestamp for e in events)])
    newest = max(e.timestamp for e in events)
    return {
        "user_history": ({"hist_item_ids": Value(int64_list_val=Int64List(
                              val=[r[1] for r in merged])),
                          "hist_ratings": Value(double_list_val=DoubleList(
                              val=[r[2] for r in merged])),
                          "hist_timestamps": Value(int64_list_val=Int64List(
                              val=[r[0] for r in merged]))},
                         _later(history_ts, newest)),
        "user_stats": ({"user_event_count": Value(int64_val=count),
                        "user_mean_rating": _double(mean),
                        "user_last_event_ts": Value(int64_val=last)},
                       _later(stats_ts, newest)),
    }


def merge_item(rows: Rows, events: list[Event]) -> Rows:
    """The item's stats after ``events``."""
    stats, stats_ts = rows.get("item_stats", ({}, None))
    count, mean = _mean_after(stats.get("item_event_count"), stats.get("item_mean_rating"),
                              events)
    window = (_scalar(stats.get("item_popularity_window")) or 0) + len(events)
    return {"item_stats": ({"item_event_count": Value(int64_val=count),
                            "item_mean_rating": _double(mean),
                            "item_popularity_window": Value(int64_val=window)},
                           _later(stats_ts, max(e.timestamp for e in events)))}


def _mean_after(count_value: Value | None, mean_value: Value | None,
                events: list[Event]) -> tuple[int, float | None]:
    count = _scalar(count_value) or 0
    mean = _scalar(mean_value)
    rated_before = count if mean is not None and not math.isnan(mean) else 0
    new = [e.rating for e in events if e.rating is not None]
    rated = rated_before + len(new)
    if not rated:
        return count + len(events), mean
    total = (mean * rated_before if rated_before else 0.0) + sum(new)
    return count + len(events), total / rated


def _later(stored: datetime | None, seconds: int) -> datetime:
    """The row's new event time: never earlier than what it had (the stores' guards)."""
    newest = datetime.fromtimestamp(seconds, UTC)
    return max(stored, newest) if stored is not None else newest


def _scalar(value: Value | None):
    kind = value.WhichOneof("val") if value is not None else None
    return None if kind in (None, "null_val") else getattr(value, kind)


def _values(value: Value | None) -> list:
    """The elements of a list value (int64 or double); [] when unset."""
    listed = _scalar(value)
    return list(listed.val) if listed is not None else []


def _rating(rating: float | None) -> float:
    return float("nan") if rating is None else float(rating)


def _double(mean: float | None) -> Value:
    return Value() if mean is None else Value(double_val=mean)


def entity_key(name: str, value: int) -> EntityKey:
    return EntityKey(join_keys=[name], entity_values=[Value(int64_val=value)])


# merge(seen event ids, user rows, item rows) -> (new ids, user writes, item writes)
Merge = Callable[[set[str], dict[int, Rows], dict[int, Rows]],
                 tuple[list[str], dict[int, Rows], dict[int, Rows]]]


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``conn`` (autocommit mode) inside ``BEGIN IMMEDIATE``: the write lock at once, so no
    other writer, in any process, interleaves. Committed when the block ends, rolled back
    when it raises, closed either way."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


class SqliteBackend:
    """One ``BEGIN IMMEDIATE`` transaction per batch on the Feast SQLite database (WAL)."""

    DEDUP_TABLE = "irec_live_event_ids"

    def __init__(self, store: FeatureStore, dedup_ttl_s: float, busy_timeout_s: float) -> None:
        config = store.config
        self.path = sqlite_path(store)
        self.version = config.entity_key_serialization_version
        self.dedup_ttl_s, self.busy_timeout_s = dedup_ttl_s, busy_timeout_s
        versioning = config.registry.enable_online_feature_view_versioning
        self.tables = {view: _table_id(config.project, store.get_feature_view(view), versioning)
                       for view in (*USER_VIEWS, *ITEM_VIEWS)}
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.DEDUP_TABLE} "
                         "(event_id TEXT PRIMARY KEY, seen_at REAL NOT NULL)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {self.DEDUP_TABLE}_seen "
                         f"ON {self.DEDUP_TABLE} (seen_at)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                               detect_types=sqlite3.PARSE_DECLTYPES)

    def transact(self, users: list[int], items: list[int], ids: list[str], merge: Merge) -> None:
        with immediate(self._connect()) as conn:
            marks = ",".join("?" * len(ids))
            seen = {r[0] for r in conn.execute(
                f"SELECT event_id FROM {self.DEDUP_TABLE} WHERE event_id IN ({marks})", ids)}
            user_keys = {u: self._key("user_id", u) for u in users}
            item_keys = {i: self._key("item_id", i) for i in items}
            user_rows = self._read(conn, USER_VIEWS, user_keys)
            item_rows = self._read(conn, ITEM_VIEWS, item_keys)
            fresh, user_writes, item_writes = merge(seen, user_rows, item_rows)
            now = datetime.now(UTC).replace(tzinfo=None)
            for keys, writes in ((user_keys, user_writes), (item_keys, item_writes)):
                for entity, rows in writes.items():
                    for view, (values, ts) in rows.items():
                        stamp = ts.astimezone(UTC).replace(tzinfo=None)
                        conn.executemany(
                            f"INSERT INTO {_quote_id(self.tables[view])} (entity_key, "
                            "feature_name, value, event_ts, created_ts) VALUES (?, ?, ?, ?, ?) "
                            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
                            "value = excluded.value, event_ts = excluded.event_ts, "
                            "created_ts = excluded.created_ts",
                            [(keys[entity], name, value.SerializeToString(), stamp, now)
                             for name, value in values.items()])
            wall = time.time()
            conn.executemany(f"INSERT INTO {self.DEDUP_TABLE} VALUES (?, ?)",
                             [(i, wall) for i in fresh])
            conn.execute(f"DELETE FROM {self.DEDUP_TABLE} WHERE seen_at < ?",
                         (wall - self.dedup_ttl_s,))

    def _key(self, name: str, value: int) -> bytes:
        return serialize_entity_key(entity_key(name, value),
                                    entity_key_serialization_version=self.version)

    def _read(self, conn: sqlite3.Connection, views: dict[str, tuple[str, ...]],
              keys: dict[int, bytes]) -> dict[int, Rows]:
        entity_of = {key: entity for entity, key in keys.items()}
        rows: dict[int, Rows] = {entity: {} for entity in keys}
        marks = ",".join("?" * len(keys))
        for view in views:
            for key, name, blob, ts in conn.execute(
                    f"SELECT entity_key, feature_name, value, event_ts FROM "
                    f"{_quote_id(self.tables[view])} WHERE entity_key IN ({marks})",
                    list(keys.values())):
                values, _ = rows[entity_of[key]].setdefault(view, ({}, None))
                values[name] = Value.FromString(blob)
                when = ts.replace(tzinfo=UTC) if isinstance(ts, datetime) else None
                rows[entity_of[key]][view] = (values, when)
        return rows


class RedisBackend:
    """``WATCH`` the batch's keys, read them, ``MULTI``/``EXEC`` the merged rows; retry when
    another writer got there first. (Every key must live on one node: not Redis Cluster.)"""

    def __init__(self, store: FeatureStore, dedup_ttl_s: float, max_attempts: int) -> None:
        config = store.config
        self.client = redis_client(store)
        self.project, self.version = config.project, config.entity_key_serialization_version
        self.dedup_ttl_s, self.max_attempts = max(int(dedup_ttl_s), 1), max_attempts
        self.fields = {view: [_mmh3(f"{view}:{name}") for name in names]
                       for view, names in {**USER_VIEWS, **ITEM_VIEWS}.items()}

    def transact(self, users: list[int], items: list[int], ids: list[str], merge: Merge) -> None:
        user_keys = {u: self._key("user_id", u) for u in users}
        item_keys = {i: self._key("item_id", i) for i in items}
        id_keys = [f"irec:{self.project}:event:{i}".encode() for i in ids]
        watched = [*user_keys.values(), *item_keys.values(), *id_keys]
        for attempt in range(self.max_attempts):
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*watched)
                    reads = self.client.pipeline(transaction=False)  # one round trip
                    reads.mget(id_keys)
                    for views, keys in ((USER_VIEWS, user_keys), (ITEM_VIEWS, item_keys)):
                        for key in keys.values():
                            for view in views:
                                reads.hmget(key, [*self.fields[view], f"_ts:{view}".encode()])
                    got = iter(reads.execute())
                    seen = {i for i, hit in zip(ids, next(got), strict=True) if hit is not None}
                    user_rows = self._decode(got, USER_VIEWS, user_keys)
                    item_rows = self._decode(got, ITEM_VIEWS, item_keys)
                    fresh, user_writes, item_writes = merge(seen, user_rows, item_rows)
                    pipe.multi()
                    for keys, writes in ((user_keys, user_writes), (item_keys, item_writes)):
                        for entity, rows in writes.items():
                            pipe.hset(keys[entity], mapping=self._encode(rows))
                    for i in fresh:
                        pipe.set(f"irec:{self.project}:event:{i}".encode(), b"1",
                                 ex=self.dedup_ttl_s)
                    pipe.execute()
                    return
                except WatchError:
                    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise LiveConflict(f"{len(ids)} event(s) not applied: their users' or items' rows "
                           f"changed under every one of {self.max_attempts} attempts")

    def _key(self, name: str, value: int) -> bytes:
        return _redis_key(self.project, entity_key(name, value),
                          entity_key_serialization_version=self.version)

    def _decode(self, got: Iterable, views: dict[str, tuple[str, ...]],
                keys: dict[int, bytes]) -> dict[int, Rows]:
        rows: dict[int, Rows] = {}
        for entity in keys:
            rows[entity] = {}
            for view, names in views.items():
                *blobs, ts_blob = next(got)
                values = {n: Value.FromString(b) for n, b in zip(names, blobs, strict=True)
                          if b is not None}
                when = (Timestamp.FromString(ts_blob).ToDatetime(tzinfo=UTC)
                        if ts_blob is not None else None)
                if values or when is not None:
                    rows[entity][view] = (values, when)
        return rows

    def _encode(self, rows: Rows) -> dict[bytes, bytes]:
        mapping: dict[bytes, bytes] = {}
        for view, (values, ts) in rows.items():
            stamp = Timestamp()
            stamp.FromDatetime(ts)
            mapping[f"_ts:{view}".encode()] = stamp.SerializeToString()
            names = USER_VIEWS.get(view) or ITEM_VIEWS[view]
            for name, key in zip(names, self.fields[view], strict=True):
                mapping[key] = values[name].SerializeToString()
        return mapping
