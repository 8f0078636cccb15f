"""Items added to the catalogue while the platform runs (``POST /items``), logged durably.

A ``NewItem`` is one added item: the normalised ``item_id`` the online store allocated for its
``raw_item_id`` (``features.catalogue``), its title, genres, year and free text, and when it
was added. The log is partitioned parquet under ``<data>/catalogue_log/date=YYYY-MM-DD/``,
each file published whole like the event log's (``data.event_log``). A retried add logs the
raw id again, with the same item id: ``read`` keeps the last row of each raw id (a retry may
correct the text).

The next ingest folds the log into ``items.parquet`` with the ids it names (``data.ingest``),
so the features build embeds the added items and training learns them; ids never move.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from data.event_log import PartitionedLog
from data.schema import ARROW_SCHEMAS, ITEM_COLUMNS

CATALOGUE_LOG_DIR = "catalogue_log"
CATALOGUE_SCHEMA = ARROW_SCHEMAS["items"].append(pa.field("logged_at", pa.timestamp("us", "UTC")))


@dataclass(frozen=True)
class NewItem:
    """One item added at run time, with the id the store allocated for it."""

    item_id: int
    raw_item_id: str
    title: str
    genres: tuple[str, ...] = ()
    year: int | None = None
    text: str = ""
    timestamp: float = 0.0  # epoch seconds, when it was added


class CatalogueLog(PartitionedLog):
    """Append-only partitioned parquet of added items under ``root``, like ``EventLog``."""

    FOLDER = CATALOGUE_LOG_DIR
    SCHEMA = CATALOGUE_SCHEMA

    def append(self, items: Sequence[NewItem]) -> list[Path]:
        """Write ``items`` durably (one file per date added); returns the files written."""
        if not items:
            return []
        frame = pd.DataFrame({
            "item_id": [i.item_id for i in items],
            "raw_item_id": [i.raw_item_id for i in items],
            "title": [i.title for i in items],
            "genres": [list(i.genres) for i in items],
            "year": pd.array([i.year for i in items], dtype="Int64"),
            "text": [i.text for i in items],
            "event_timestamp": pd.to_datetime([int(i.timestamp * 1e6) for i in items],
                                              unit="us", utc=True),
            "logged_at": pd.Timestamp(time.time_ns() // 1000, unit="us", tz="UTC"),
        })
        return self._append(frame)

    def read(self) -> pd.DataFrame:
        """Every added item once (its last logged row), as ``items.parquet`` columns, by id."""
        frame = self._rows().sort_values(["logged_at"], kind="stable")
        frame = frame.drop_duplicates("raw_item_id", keep="last")
        return frame.sort_values("item_id")[ITEM_COLUMNS].reset_index(drop=True)
