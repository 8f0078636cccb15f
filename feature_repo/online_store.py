"""Feast's online stores as the platform runs them: SQLite with an event-time guard, and Redis
with a bound on every call.

Feast's SQLite store upserts unconditionally, so materializing an older window after a newer
one would replace newer online values with older ones (its Redis store already refuses that).
This store adds, for every feature-view table it creates, a trigger that ignores any update
whose event timestamp is older than the stored one. The guard lives in the database, so it
holds for every writer: ``irec features materialize``, ``feast materialize``, push sources.

Feast's Redis store connects with redis-py's defaults: no socket timeout (a hung Redis holds a
read forever) and three retries with exponential backoff. ``BoundedRedisOnlineStore`` gives
every connect and command a timeout and retries at once, so a read of a down or stopped Redis
fails in well under a second and serving falls back instead of hanging.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Literal

from feast import Entity, FeatureView
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    _quote_id,
    _table_id,
)
from feast.repo_config import RepoConfig
from pydantic import Field
from redis.backoff import NoBackoff
from redis.retry import Retry


class GuardedSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["feature_repo.online_store.GuardedSqliteOnlineStore"] = (
        "feature_repo.online_store.GuardedSqliteOnlineStore"
    )


class GuardedSqliteOnlineStore(SqliteOnlineStore):
    """SQLite online store whose rows only ever move forward in event time."""

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        super().update(
            config, tables_to_delete, tables_to_keep, entities_to_delete, entities_to_keep,
            partial,
        )
        conn = self._get_conn(config)
        versioning = config.registry.enable_online_feature_view_versioning
        with conn:
            for table in tables_to_keep:
                install_guard(conn, _table_id(config.project, table, versioning))


def install_guard(conn: sqlite3.Connection, table: str) -> None:
    """Make ``table`` ignore updates that carry an older ``event_ts`` than the stored row."""
    conn.execute(
        f"CREATE TRIGGER IF NOT EXISTS {_quote_id(table + '_event_time_guard')} "
        f"BEFORE UPDATE ON {_quote_id(table)} WHEN NEW.event_ts < OLD.event_ts "
        "BEGIN SELECT RAISE(IGNORE); END"
    )


class BoundedRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    type: Literal["feature_repo.online_store.BoundedRedisOnlineStore"] = (
        "feature_repo.online_store.BoundedRedisOnlineStore"
    )
    # Connecting, and each command, give up after this many seconds...
    timeout_s: float = Field(0.25, gt=0)
    # ...and are retried this often, at once: a down or hung Redis costs a read about
    # (retries + 1) x timeout_s, not redis-py's default three retries with backoff (seconds).
    retries: int = Field(1, ge=0)


class BoundedRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis online store whose every call ends within a bound (see the config)."""

    def _get_client(self, online_store_config: BoundedRedisOnlineStoreConfig):
        if not self._client:
            bounded = online_store_config.model_copy(update={"connection_string": with_timeouts(
                online_store_config.connection_string, online_store_config.timeout_s)})
            super()._get_client(bounded).set_retry(
                Retry(NoBackoff(), online_store_config.retries))
        return self._client


def with_timeouts(connection_string: str, timeout_s: float) -> str:
    """``connection_string`` with socket timeouts, unless it sets its own."""
    keys = {part.split("=", 1)[0].strip() for part in connection_string.split(",") if "=" in part}
    extra = [f"{key}={timeout_s}" for key in ("socket_timeout", "socket_connect_timeout")
             if key not in keys]
    return ",".join([connection_string, *extra])
