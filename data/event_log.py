"""The live event contract, the offline event log every accepted event is appended to, and the
exposure log of what every recommendation showed.

An ``Event`` is one thing a user did: ``event_id`` (the client's idempotency key), normalised
``user_id`` and ``item_id``, epoch-second ``timestamp``, an optional ``rating``, a ``kind``
(``interaction``, ``click``, ``purchase``... free text) and the ``request_id`` of the
recommendation it followed, if any.

The log is partitioned parquet under ``<data>/event_log/date=YYYY-MM-DD/`` (by event date,
UTC). Each append writes one new file per date, under a temporary name, fsynced, renamed and
the folder fsynced (``data.atomic.publish``): an append that returned is durable, and a crash
leaves whole files or none (a temporary ``.part-*.tmp`` a reader never lists). The log is
at-least-once: a client that retries a batch whose answer it never saw may log it twice, so
``read`` keeps the first logged row of each ``event_id``. The features build reads the log,
builds its tables from the ingested events plus the logged ones (``dataset_events``) and keeps
what it read as ``logged_events.parquet``, which training reads.

The exposure log (``<data>/exposure_log/date=YYYY-MM-DD/``, same file discipline) has one row
per recommended item: request id, user, model, position, item, score, time. An event names the
``request_id`` it followed, so what was shown can be joined with what was done. Files are never
rewritten, so any number of writers (Serve replicas, pods sharing the features volume) append
without a lock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from data.atomic import publish, temp_path

EVENT_LOG_DIR = "event_log"
# The log as the last features build read it: training reads this snapshot, so it learns from
# exactly the events the feature tables were built from, however many arrived since.
LOGGED_EVENTS = "logged_events.parquet"
_TIME = pa.timestamp("us", tz="UTC")
# Rows as logged; ``date`` (the partition) is added by the reader from the folder name.
EVENT_LOG_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("user_id", pa.int64()), ("item_id", pa.int64()),
    ("rating", pa.float64()), ("kind", pa.string()), ("request_id", pa.string()),
    ("event_timestamp", _TIME), ("logged_at", _TIME),
])


@dataclass(frozen=True)
class Event:
    """One accepted user event (validated by the API before it gets here)."""

    event_id: str
    user_id: int
    item_id: int
    timestamp: int  # epoch seconds
    rating: float | None = None
    kind: str = "interaction"
    request_id: str = ""


class PartitionedLog:
    """Append-only parquet files under ``root``, one folder per event date (``date=...``);
    each file is published whole (``_append``) and never rewritten."""

    FOLDER: str
    SCHEMA: pa.Schema

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, data_dir: Path):
        """The log of a feature workspace's ``data`` folder."""
        return cls(Path(data_dir) / cls.FOLDER)

    def files(self) -> list[Path]:
        return sorted(self.root.glob("date=*/part-*.parquet"))

    def _rows(self) -> pd.DataFrame:
        """Every row of every file (an empty frame with the columns when there is none)."""
        files = self.files()
        if not files:
            return self.SCHEMA.empty_table().to_pandas()
        return ds.dataset(files, schema=self.SCHEMA, format="parquet").to_table().to_pandas()

    def _append(self, frame: pd.DataFrame) -> list[Path]:
        """Write ``frame`` as one new file per event date, each published durably (temporary
        name, fsync, rename, folder fsync)."""
        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        written = []
        for date, rows in frame.groupby(frame["event_timestamp"].dt.strftime("%Y-%m-%d")):
            path = self.root / f"date={date}" / name
            tmp = temp_path(path)
            try:
                pq.write_table(pa.Table.from_pandas(rows, schema=self.SCHEMA,
                                                    preserve_index=False), tmp)
                publish(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            written.append(path)
        return written


class EventLog(PartitionedLog):
    """Append-only, partitioned, crash-safe parquet log of events under ``root``."""

    FOLDER = EVENT_LOG_DIR
    SCHEMA = EVENT_LOG_SCHEMA

    def append(self, events: Sequence[Event]) -> list[Path]:
        """Write ``events`` durably (one file per event date); returns the files written."""
        if not events:
            return []
        logged_at = time.time_ns()
        frame = pd.DataFrame({
            "event_id": [e.event_id for e in events],
            "user_id": [e.user_id for e in events],
            "item_id": [e.item_id for e in events],
            "rating": [float("nan") if e.rating is None else e.rating for e in events],
            "kind": [e.kind for e in events],
            "request_id": [e.request_id for e in events],
            "event_timestamp": pd.to_datetime([e.timestamp for e in events], unit="s", utc=True),
            "logged_at": pd.Timestamp(logged_at // 1000, unit="us", tz="UTC"),
        })
        return self._append(frame)

    def read(self, until: pd.Timestamp | None = None) -> pd.DataFrame:
        """Every logged event once (first logged row of each ``event_id``), oldest first;
        only events stamped at or before ``until`` when given."""
        frame = self._rows().sort_values(["logged_at", "event_id"], kind="stable")
        frame = frame.drop_duplicates("event_id", keep="first")
        if until is not None:
            frame = frame[frame["event_timestamp"] <= pd.Timestamp(until)]
        return frame.sort_values(["event_timestamp", "event_id"], kind="stable").reset_index(
            drop=True)


EXPOSURE_LOG_DIR = "exposure_log"
# One row per recommended item: which answer (request_id) showed what, where and why.
EXPOSURE_SCHEMA = pa.schema([
    ("request_id", pa.string()), ("user_id", pa.int64()), ("model", pa.string()),
    ("position", pa.int32()), ("item_id", pa.int64()), ("score", pa.float64()),
    ("cold_start", pa.bool_()), ("event_timestamp", _TIME),
])


@dataclass(frozen=True)
class Exposure:
    """One ``/recommend`` answer: what it showed (best first) and with which model."""

    request_id: str
    user_id: int | None  # None: an anonymous history
    model: str
    items: tuple[int, ...]
    scores: tuple[float, ...]
    cold_start: bool
    timestamp: float  # epoch seconds, when it was answered


class ExposureLog(PartitionedLog):
    """Append-only partitioned parquet of exposures under ``root``, like ``EventLog``."""

    FOLDER = EXPOSURE_LOG_DIR
    SCHEMA = EXPOSURE_SCHEMA

    def append(self, exposures: Sequence[Exposure]) -> list[Path]:
        rows = [(x, k, item, score) for x in exposures
                for k, (item, score) in enumerate(zip(x.items, x.scores, strict=True))]
        if not rows:
            return []
        frame = pd.DataFrame({
            "request_id": [x.request_id for x, *_ in rows],
            "user_id": pd.array([x.user_id for x, *_ in rows], dtype="Int64"),
            "model": [x.model for x, *_ in rows],
            "position": [k + 1 for _, k, *_ in rows],
            "item_id": [item for *_, item, _ in rows],
            "score": [score for *_, score in rows],
            "cold_start": [x.cold_start for x, *_ in rows],
            "event_timestamp": pd.to_datetime([int(x.timestamp * 1e6) for x, *_ in rows],
                                              unit="us", utc=True),
        })
        return self._append(frame)

    def read(self) -> pd.DataFrame:
        return self._rows().sort_values(["event_timestamp", "request_id", "position"],
                                        kind="stable").reset_index(drop=True)


def logged_events(data_dir: Path) -> pd.DataFrame:
    """The logged events the last features build used (``LOGGED_EVENTS``); none before one."""
    path = Path(data_dir) / LOGGED_EVENTS
    if not path.exists():
        return EVENT_LOG_SCHEMA.empty_table().to_pandas()
    return pd.read_parquet(path)


def write_logged_events(frame: pd.DataFrame, path: Path) -> None:
    """Write ``EventLog.read()``'s frame as the build's snapshot (the caller stages ``path``)."""
    pq.write_table(pa.Table.from_pandas(frame, schema=EVENT_LOG_SCHEMA, preserve_index=False),
                   path)


def dataset_events(events: pd.DataFrame, logged: pd.DataFrame) -> pd.DataFrame:
    """The ingested ``events`` table plus ``logged`` events, as one canonical events table
    (``data.schema`` columns, sorted by user and time)."""
    if logged.empty:
        return events
    merged = pd.concat([events, logged[list(events.columns)]], ignore_index=True)
    return merged.sort_values(["user_id", "event_timestamp"], kind="stable").reset_index(
        drop=True)
