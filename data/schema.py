"""The canonical event/item/user schema, and the error every reader raises on bad input.

Canonical tables (written as parquet by ``data.ingest``):
- events: user_id int64, item_id int64, rating float64 (NaN for implicit data),
  event_timestamp timestamp[us, UTC]; sorted by user, time, then input order.
- items:  item_id int64, raw_item_id string, title string, genres list<string>, year int64
  (nullable), text string, event_timestamp (the dataset start: items are known from then on).
- users:  user_id int64, raw_user_id string, age int64 (nullable), gender, occupation,
  zip_code strings (nullable), event_timestamp (the dataset start).
Ids are normalised to 1..n (0 stays free for padding) in the natural order of the raw ids, so
datasets whose ids are already 1..n (MovieLens, SASRec files) keep them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

USER_PROFILE_FIELDS = ["age", "gender", "occupation", "zip_code"]

# Explicit parquet schemas: inference would type an all-empty column as null, which Feast
# (and any reader expecting the contract above) cannot cast.
_TIME = pa.timestamp("us", tz="UTC")
ARROW_SCHEMAS = {
    "events": pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                         ("rating", pa.float64()), ("event_timestamp", _TIME)]),
    "items": pa.schema([("item_id", pa.int64()), ("raw_item_id", pa.string()),
                        ("title", pa.string()), ("genres", pa.list_(pa.string())),
                        ("year", pa.int64()), ("text", pa.string()),
                        ("event_timestamp", _TIME)]),
    "users": pa.schema([("user_id", pa.int64()), ("raw_user_id", pa.string()),
                        ("age", pa.int64()), ("gender", pa.string()),
                        ("occupation", pa.string()), ("zip_code", pa.string()),
                        ("event_timestamp", _TIME)]),
}
EVENT_COLUMNS = ARROW_SCHEMAS["events"].names
ITEM_COLUMNS = ARROW_SCHEMAS["items"].names
USER_COLUMNS = ARROW_SCHEMAS["users"].names


class IngestError(ValueError):
    """Bad input, located: ``u.data line 17, field 'rating': 7.0 is outside [1.0, 5.0]``."""

    def __init__(
        self,
        source: str | Path,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
        unit: str = "line",
    ) -> None:
        where = str(source)
        if line is not None:
            where += f" {unit} {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")
        self.source = str(source)
        self.line = line
        self.field = field


@dataclass
class RawTable:
    """A table as read from one file, before id normalisation.

    ``frame`` has string id columns and a ``_line`` column holding each row's line (or row)
    number in ``source``, so every later check can say where the bad value came from.
    """

    frame: pd.DataFrame
    source: str
    unit: str = "line"

    def error(self, message: str, *, row: int | None = None, field: str | None = None):
        line = None if row is None else int(self.frame["_line"].iloc[row])
        return IngestError(self.source, message, line=line, field=field, unit=self.unit)


@dataclass
class RawDataset:
    """What a reader returns: events plus optional item and user tables."""

    events: RawTable
    items: RawTable | None = None
    users: RawTable | None = None
    # False for sequence-only formats: timestamps were synthesised from the order.
    has_timestamps: bool = True
    inputs: list[Path] = field(default_factory=list)


def require_columns(table: RawTable, required: list[str]) -> None:
    missing = [c for c in required if c not in table.frame.columns]
    if missing:
        found = [c for c in table.frame.columns if c != "_line"]
        raise IngestError(
            table.source, f"missing required column(s) {missing}; found columns {found}"
        )
    if table.frame.empty:
        raise IngestError(table.source, "file is empty: no rows after the header")


def first_bad(mask: pd.Series | np.ndarray) -> int | None:
    """Position of the first True in ``mask``, or None."""
    hits = np.flatnonzero(np.asarray(mask))
    return int(hits[0]) if hits.size else None


def ordered_ids(raw_ids: pd.Series) -> list[str]:
    """Distinct raw ids in natural order: numeric when every id is an integer."""
    distinct = pd.unique(raw_ids.astype(str))
    if all(s.isdigit() for s in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)
