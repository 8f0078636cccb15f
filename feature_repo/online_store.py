"""Feast's SQLite online store with an event-time guard.

Feast's SQLite store upserts unconditionally, so materializing an older window after a newer
one would replace newer online values with older ones (its Redis store already refuses that).
This store adds, for every feature-view table it creates, a trigger that ignores any update
whose event timestamp is older than the stored one. The guard lives in the database, so it
holds for every writer: ``irec features materialize``, ``feast materialize``, push sources.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Literal

from feast import Entity, FeatureView
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    _quote_id,
    _table_id,
)
from feast.repo_config import RepoConfig


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
