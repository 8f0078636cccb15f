"""``irec features build``: write the Feast source tables for the ingested dataset.

Reads events/items/users from ``<repo_path>/data``, plus the events logged live since
(``data.event_log``: the events API appends them), and writes ``user_history``,
``user_stats``, ``item_stats`` and ``item_text_embedding`` parquet files beside them, plus
``features.json`` recording what they were built from (dataset fingerprint, history length,
language model). Item embeddings are the slow step; they are reused when the dataset, the
model and the text settings are unchanged.

Writes are crash-safe (``data.atomic``): the tables and ``features.json`` are staged under
temporary names and renamed together, so a build killed midway leaves the previous build
readable and whole. One build at a time per workspace (``.features.lock``); the dataset is
read under the ingest lock, so a build never mixes two ingests' tables.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data.atomic import StagedFiles, file_lock, recover, remove_stale_temps
from data.event_log import LOGGED_EVENTS, EventLog, dataset_events, write_logged_events
from data.ingest import locked_dataset
from features import tables
from features.config import FeatureConfig

BUILD_FILE = "features.json"
LOCK = ".features.lock"
JOURNAL = ".features-commit.json"
TABLES = ("user_history", "user_stats", "item_stats", "item_text_embedding")


TIMESTAMP = pa.timestamp("us", tz="UTC")


def _write(table: pa.Table | pd.DataFrame, path: Path) -> None:
    """Write with ``event_timestamp`` as timestamp[us, UTC] in every source (DuckDB 2.0
    cannot cast nanosecond tz-aware stamps in Feast's point-in-time SQL)."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    column = table.column("event_timestamp")
    if column.type.tz is None:
        column = pc.assume_timezone(column, "UTC")
    table = table.set_column(
        table.schema.get_field_index("event_timestamp"), "event_timestamp",
        column.cast(TIMESTAMP),
    )
    pq.write_table(table, path)


def build(cfg: FeatureConfig, log: Callable[[str], None] = print) -> dict:
    """Write the feature tables and ``features.json``; see the module docstring."""
    data = cfg.data_dir
    started = time.perf_counter()
    with locked_dataset(data) as manifest:
        events = pd.read_parquet(data / "events.parquet")
        items = pd.read_parquet(data / "items.parquet")
    with file_lock(data / LOCK):
        if recover(data, JOURNAL):
            log(f"features: completed an interrupted build in {data}")
        remove_stale_temps(data, [*(f"{t}.parquet" for t in TABLES), BUILD_FILE, JOURNAL,
                                  LOGGED_EVENTS])
        logged = EventLog.of(data).read()
        ahead = logged["item_id"] > int(items["item_id"].max())
        if ahead.any():  # items added at run time: ingest folds them into items.parquet
            log(f"features: {int(ahead.sum()):,} logged event(s) name items added since the "
                "last ingest; they join the build after `irec ingest` adds those items")
            logged = logged[~ahead]
        if len(logged):
            log(f"features: {len(logged):,} logged live events join the {len(events):,} "
                "ingested ones")
        with StagedFiles(data, JOURNAL) as staged:
            write_logged_events(logged, staged.stage(LOGGED_EVENTS))
            summary = _build(cfg, manifest, dataset_events(events, logged), items, staged, log)
            summary["logged_events"] = len(logged)
            summary["seconds"] = round(time.perf_counter() - started, 2)
            staged.stage(BUILD_FILE).write_text(json.dumps(summary, indent=2))
            staged.commit()
    log(f"features: built in {summary['seconds']}s -> {data}")
    return summary


def _build(cfg: FeatureConfig, manifest: dict, events: pd.DataFrame, items: pd.DataFrame,
           staged: StagedFiles, log: Callable[[str], None]) -> dict:
    data = cfg.data_dir
    started = time.perf_counter()
    history = tables.user_history(events, cfg.history_length)
    _write(history, staged.stage("user_history.parquet"))
    _write(tables.user_stats(events), staged.stage("user_stats.parquet"))
    _write(tables.item_stats(events, cfg.popularity_window_days),
           staged.stage("item_stats.parquet"))
    log(f"features: history (N={cfg.history_length}), user and item stats: "
        f"{history.num_rows:,} history rows in {time.perf_counter() - started:.1f}s")

    previous = _read_build(data)
    lm_key = {"fingerprint": manifest["fingerprint"], "model": cfg.lm.model or "default",
              "max_length": cfg.lm.max_length}
    embedded = "item_text_embedding.parquet"
    if previous.get("lm_key") == lm_key and (data / embedded).exists():
        dim, n_embedded = previous["embedding_dim"], previous["items_embedded"]
        log(f"features: item text embeddings up to date ({n_embedded:,} items)")
    else:
        dim, n_embedded = _embed_items(cfg, items, staged.stage(embedded), log)

    summary = {
        "fingerprint": manifest["fingerprint"],
        "history_length": cfg.history_length,
        "popularity_window_days": cfg.popularity_window_days,
        "lm_key": lm_key,
        "embedding_dim": dim,
        "items_embedded": n_embedded,
        "history_rows": history.num_rows,
    }
    return summary


def _embed_items(
    cfg: FeatureConfig, items: pd.DataFrame, path: Path, log: Callable[[str], None]
) -> tuple[int | None, int]:
    texts = tables.item_text(items)
    has_text = (texts.str.len() > 0).to_numpy()
    todo = texts[has_text].tolist()
    if todo:
        from features.lm import TextEncoder

        encoder = TextEncoder(cfg.lm)
        vectors = encoder.encode(todo, progress=_Progress("features: embedding item text",
                                                          len(todo), "items", log))
        dim = encoder.dim
        log(f"features: embedded {len(todo):,} item texts with {encoder.name} ({dim}-d)")
    else:
        log("features: items carry no text; item_text_embedding stays empty "
            "(models fall back to id embeddings)")
        vectors, dim = np.zeros((0, 0), dtype=np.float32), None
    width = vectors.shape[1]
    offsets = np.arange(0, vectors.size + 1, max(width, 1), dtype=np.int32)[: len(todo) + 1]
    table = pa.table(
        {
            "item_id": pa.array(items["item_id"].to_numpy()[has_text], type=pa.int64()),
            "event_timestamp": pa.array(items["event_timestamp"][has_text]),
            "text_embedding": pa.ListArray.from_arrays(
                pa.array(offsets), pa.array(vectors.reshape(-1), type=pa.float32())
            ),
        }
    )
    _write(table, path)
    return dim, len(todo)


class _Progress:
    """A line every ``every_s`` seconds with the count, rate and ETA; called with each batch."""

    def __init__(self, what: str, total: int, unit: str, log: Callable[[str], None],
                 every_s: float = 10.0) -> None:
        self.what, self.total, self.unit, self.log, self.every_s = what, total, unit, log, every_s
        self.done = 0
        self.began = self.last = time.perf_counter()

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last < self.every_s or self.done >= self.total:
            return
        self.last = now
        rate = self.done / (now - self.began)
        self.log(f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({rate:,.0f} "
                 f"{self.unit}/s, ETA {(self.total - self.done) / rate:.0f}s)")


def _read_build(data: Path) -> dict:
    path = data / BUILD_FILE
    return json.loads(path.read_text()) if path.exists() else {}
