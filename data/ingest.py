"""Validate raw interactions, normalise ids and write the canonical parquet tables.

Usage::

    irec ingest --config configs/ml-100k.yaml     # or: --format sasrec --path Video.txt

Writes ``events.parquet``, ``items.parquet``, ``users.parquet`` and ``manifest.json`` (counts,
flags, the dataset fingerprint) into the feature repository's ``data/`` folder. The
fingerprint is a sha256 over the canonical table contents. Re-running over the same input
(same file bytes, same options) with intact outputs is a no-op that reports the same
fingerprint. Writes are crash-safe (``data.atomic``): every table and the manifest are staged
under temporary names and fsynced, then renamed together under a journal, so a run killed at
any point leaves the previous dataset readable and unchanged, or (killed during the renames)
the new one, completed by the next ``ingest`` or ``read_manifest``. One ingest at a time per
folder (a file lock, ``.ingest.lock``). Event timestamps later than now plus
``max_future_skew_s`` are refused.

Ids are stable across re-ingests into the same folder: the previous ingest's items and users
tables are its id map, every id it gave is kept (with its item or user, even one the new
input no longer names), and new raw ids are numbered after the largest one. A model trained
before a re-ingest therefore still names the same items (``ingest.keep_ids: false`` numbers
afresh, for a different dataset in the same folder). Items added at run time (``POST /items``,
``data.catalogue_log``) join the id map with the ids they were given: a re-ingest writes them
into ``items.parquet`` (title, genres, text), so the features build embeds them and training
learns them; a new file in the catalogue log makes an otherwise unchanged input stale.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data import movielens
from data.atomic import StagedFiles, file_lock, recover, remove_stale_temps
from data.catalogue_log import CatalogueLog
from data.config import IngestConfig
from data.readers import (
    MOVIELENS_FILES,
    read_generic,
    read_movielens_100k,
    read_sasrec,
)
from data.schema import (
    ARROW_SCHEMAS,
    EVENT_COLUMNS,
    ITEM_COLUMNS,
    USER_COLUMNS,
    USER_PROFILE_FIELDS,
    IngestError,
    RawDataset,
    RawTable,
    first_bad,
    ordered_ids,
)

INGEST_VERSION = 2
TABLES = ("events", "items", "users")
MANIFEST = "manifest.json"
LOCK = ".ingest.lock"
JOURNAL = ".ingest-commit.json"
OUTPUTS = [*(f"{t}.parquet" for t in TABLES), MANIFEST]


@dataclass
class IngestResult:
    manifest: dict
    out_dir: Path
    skipped: bool

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]


def ingest(cfg: IngestConfig, out_dir: Path, log: Callable[[str], None] = print) -> IngestResult:
    """Read, validate, normalise and write one dataset; see the module docstring."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(out_dir / LOCK):
        if recover(out_dir, JOURNAL):
            log(f"ingest: completed an interrupted ingest in {out_dir}")
        remove_stale_temps(out_dir, [*OUTPUTS, JOURNAL])
        return _ingest(cfg, out_dir, log)


def _ingest(cfg: IngestConfig, out_dir: Path, log: Callable[[str], None]) -> IngestResult:
    started = time.perf_counter()
    dataset_reader = _reader(cfg, log)
    inputs = dataset_reader.inputs
    added = CatalogueLog.of(out_dir).files() if cfg.keep_ids else []
    source_digest = _source_digest(cfg, [*inputs, *added])
    existing = _read_manifest(out_dir)
    if existing and existing.get("source_digest") == source_digest and _outputs_intact(
        out_dir, existing
    ):
        log(f"ingest: up to date, nothing to do (fingerprint {existing['fingerprint'][:12]})")
        return IngestResult(existing, out_dir, skipped=True)

    log(f"ingest: reading {', '.join(p.name for p in inputs)}")
    raw = dataset_reader.read()
    events = _coerce_events(raw.events, cfg, check_future=raw.has_timestamps)
    previous = _previous_ids(out_dir, existing, log) if cfg.keep_ids else None
    tables = _normalise(raw, events, previous)
    if previous is not None:
        grew = {name: len(tables[name]) - len(previous[name]) for name in ("items", "users")}
        log(f"ingest: ids kept from the previous ingest; {grew['items']:,} new item(s), "
            f"{grew['users']:,} new user(s) numbered after them")
    manifest = _write(tables, raw, cfg, out_dir, source_digest)
    seconds = time.perf_counter() - started
    log(
        f"ingest: {manifest['counts']['events']:,} events, {manifest['counts']['users']:,} "
        f"users, {manifest['counts']['items']:,} items in {seconds:.1f}s -> {out_dir} "
        f"(fingerprint {manifest['fingerprint'][:12]})"
    )
    return IngestResult(manifest, out_dir, skipped=False)


@dataclass
class _Reader:
    inputs: list[Path]
    read: Callable[[], RawDataset]


def _reader(cfg: IngestConfig, log: Callable[[str], None]) -> _Reader:
    if cfg.format == "movielens-100k":
        folder = cfg.path or movielens.download(cfg.download_dir, log)
        return _Reader([Path(folder) / n for n in MOVIELENS_FILES],
                       lambda: read_movielens_100k(folder))
    if cfg.path is None:
        raise IngestError("ingest.path", f"format {cfg.format!r} needs a path to the input file")
    if cfg.format == "sasrec":
        return _Reader([Path(cfg.path)], lambda: read_sasrec(cfg.path))
    extra = [Path(p) for p in (cfg.items_path, cfg.users_path) if p is not None]
    return _Reader(
        [Path(cfg.path), *extra],
        lambda: read_generic(cfg.path, cfg.items_path, cfg.users_path),
    )


def _source_digest(cfg: IngestConfig, inputs: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [INGEST_VERSION, cfg.format, cfg.rating_min, cfg.rating_max,
             *([] if cfg.keep_ids else ["ids numbered afresh"])], sort_keys=True
        ).encode()
    )
    for path in inputs:
        if not path.exists():
            raise IngestError(path, "file not found")
        h.update(path.name.encode())
        h.update(_file_sha256(path).encode())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _coerce_events(table: RawTable, cfg: IngestConfig, check_future: bool = True) -> pd.DataFrame:
    """Typed events with ``_line``: ids as strings, rating float, UTC timestamps."""
    frame = table.frame
    for col in ("user_id", "item_id"):
        ids = frame[col]
        row = first_bad(ids.isna() | (ids.astype(str).str.strip() == ""))
        if row is not None:
            raise table.error("empty id", row=row, field=col)
        frame[col] = ids.astype(str).str.strip()

    if "rating" in frame.columns:
        ratings = pd.to_numeric(frame["rating"], errors="coerce").astype("float64")
        row = first_bad(ratings.isna() & frame["rating"].notna())
        if row is not None:
            raise table.error(
                f"{frame['rating'].iloc[row]!r} is not a number", row=row, field="rating"
            )
        row = first_bad((ratings < cfg.rating_min) | (ratings > cfg.rating_max))
        if row is not None:
            raise table.error(
                f"{ratings.iloc[row]} is outside [{cfg.rating_min}, {cfg.rating_max}]",
                row=row, field="rating",
            )
    else:
        ratings = pd.Series(np.nan, index=frame.index)

    stamps = _parse_timestamps(table)
    if check_future:
        _refuse_future(table, stamps, cfg.max_future_skew_s)
    events = pd.DataFrame(
        {
            "user_id": frame["user_id"], "item_id": frame["item_id"], "rating": ratings,
            "event_timestamp": stamps, "_line": frame["_line"],
        }
    )
    dup = events.duplicated(["user_id", "item_id", "event_timestamp"], keep=False)
    if dup.any():
        rows = np.flatnonzero(dup.to_numpy())
        first = events.iloc[rows[0]]
        twin = events.iloc[rows[1:]]
        twin = twin[(twin.user_id == first.user_id) & (twin.item_id == first.item_id)
                    & (twin.event_timestamp == first.event_timestamp)]
        raise table.error(
            f"duplicate event: user {first.user_id}, item {first.item_id} at "
            f"{first.event_timestamp.isoformat()} also appears at {table.unit} "
            f"{int(twin['_line'].iloc[0])}",
            row=int(rows[0]),
        )
    return events


def _parse_timestamps(table: RawTable) -> pd.Series:
    raw = table.frame["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(raw):
        stamps = pd.to_datetime(raw, utc=True)
    else:
        # Each value on its own: epoch seconds where numeric, ISO-8601 otherwise.
        text = raw.astype("string").str.strip()
        numeric = pd.to_numeric(text, errors="coerce")
        stamps = pd.to_datetime(numeric, unit="s", utc=True, errors="coerce")
        textual = numeric.isna() & text.notna()
        if textual.any():
            stamps[textual] = pd.to_datetime(
                text[textual], utc=True, errors="coerce", format="ISO8601"
            )
    row = first_bad(stamps.isna())
    if row is not None:
        raise table.error(
            f"{raw.iloc[row]!r} is not a timestamp (epoch seconds or ISO-8601)",
            row=row, field="timestamp",
        )
    return stamps.astype("datetime64[us, UTC]")


def _refuse_future(table: RawTable, stamps: pd.Series, skew_s: float) -> None:
    """Refuse events stamped after now + ``skew_s``: a wrong clock or unit, not real data."""
    bound = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=skew_s)
    late = stamps > bound
    row = first_bad(late)
    if row is not None:
        raise table.error(
            f"{int(late.sum())} timestamp(s) later than now + max_future_skew_s={skew_s:g}s "
            f"(bound {bound.isoformat()}); the first is {table.frame['timestamp'].iloc[row]!r} "
            f"= {stamps.iloc[row].isoformat()}",
            row=row, field="timestamp",
        )


def _previous_ids(out_dir: Path, manifest: dict | None,
                  log: Callable[[str], None]) -> dict[str, pd.DataFrame] | None:
    """The previous ingest's items and users tables (its id map), when it left intact ones."""
    if not manifest:
        return None
    files = manifest.get("files", {})
    tables = {}
    for name in ("items", "users"):
        path = out_dir / f"{name}.parquet"
        if not path.exists() or _file_sha256(path) != files.get(path.name):
            log(f"ingest: warning: the previous {path.name} is missing or damaged; ids are "
                "numbered afresh (a model trained before will be refused by serving)")
            return None
        tables[name] = pd.read_parquet(path)
    added = CatalogueLog.of(out_dir).read()
    added = added[~added["raw_item_id"].isin(set(tables["items"]["raw_item_id"]))]
    if len(added):
        log(f"ingest: {len(added):,} item(s) added at run time join the catalogue "
            f"(ids {added['item_id'].min()}..{added['item_id'].max()})")
        known = tables["items"]
        rows = added[ITEM_COLUMNS].astype({c: known[c].dtype for c in ITEM_COLUMNS
                                           if c in known and added[c].isna().all()})
        tables["items"] = pd.concat([known, rows], ignore_index=True)
    return tables


def _append_ids(raw_ids: list[str], known: dict[str, int]) -> dict[str, int]:
    """``known`` plus every raw id not in it, numbered after the largest known id in order."""
    ids = dict(known)
    next_id = max(known.values(), default=0) + 1
    for raw_id in raw_ids:
        if raw_id not in ids:
            ids[raw_id] = next_id
            next_id += 1
    return ids


def _normalise(raw: RawDataset, events: pd.DataFrame,
               previous: dict[str, pd.DataFrame] | None = None) -> dict[str, pd.DataFrame]:
    """Canonical tables. With ``previous`` (the last ingest's items and users), every id it
    gave is kept, its items and users stay in the tables, and new raw ids are numbered after
    the largest id in their natural order: the id map only ever grows."""
    start = events["event_timestamp"].min()
    items = _items_table(raw.items, events, start)
    old_items = previous["items"] if previous is not None else None
    known_items = ({} if old_items is None else
                   dict(zip(old_items["raw_item_id"], old_items["item_id"], strict=True)))
    item_ids = _append_ids(list(items["raw_item_id"]), known_items)
    items["item_id"] = items["raw_item_id"].map(item_ids).astype("int64")
    if old_items is not None:
        kept = old_items[~old_items["raw_item_id"].isin(set(items["raw_item_id"]))]
        items = pd.concat([items[ITEM_COLUMNS], kept[ITEM_COLUMNS]], ignore_index=True)
        items["event_timestamp"] = min(start, old_items["event_timestamp"].min())
    items = items.sort_values("item_id").reset_index(drop=True)
    old_users = previous["users"] if previous is not None else None
    known_users = ({} if old_users is None else
                   dict(zip(old_users["raw_user_id"], old_users["user_id"], strict=True)))
    user_ids = _append_ids(ordered_ids(events["user_id"]), known_users)

    events = events.assign(
        user_id=events["user_id"].map(user_ids).astype("int64"),
        item_id=events["item_id"].map(item_ids).astype("int64"),
    )
    events = events.sort_values(["user_id", "event_timestamp", "_line"], kind="stable")
    users = _users_table(raw.users, user_ids, start)
    if old_users is not None:
        seen = set(events["user_id"].unique())
        kept = old_users[old_users["user_id"].isin(set(known_users.values()) - seen)]
        profiled = users[users["user_id"].isin(seen) | ~users["user_id"].isin(kept["user_id"])]
        users = pd.concat([profiled, kept[users.columns]], ignore_index=True)
        users["event_timestamp"] = min(start, old_users["event_timestamp"].min())
        users = users.sort_values("user_id").reset_index(drop=True)
    return {
        "events": events[EVENT_COLUMNS].reset_index(drop=True),
        "items": items[ITEM_COLUMNS],
        "users": users,
    }


def _items_table(table: RawTable | None, events: pd.DataFrame, start) -> pd.DataFrame:
    if table is None:
        order = ordered_ids(events["item_id"])
        return pd.DataFrame(
            {
                "item_id": np.arange(1, len(order) + 1, dtype="int64"),
                "raw_item_id": order, "title": "", "genres": [[] for _ in order],
                "year": pd.array([pd.NA] * len(order), dtype="Int64"), "text": "",
                "event_timestamp": start,
            }
        )
    frame = table.frame.copy()
    frame["item_id"] = frame["item_id"].astype(str).str.strip()
    dup = frame["item_id"].duplicated(keep="first")
    row = first_bad(dup)
    if row is not None:
        raise table.error(f"duplicate item id {frame['item_id'].iloc[row]!r}", row=row,
                          field="item_id")
    known = set(frame["item_id"])
    unknown = ~events["item_id"].isin(known)
    if unknown.any():
        bad = events[unknown].iloc[0]
        raise IngestError(
            f"events (item ids checked against {table.source})",
            f"item {bad.item_id!r} is not in the items file "
            f"({int(unknown.sum())} event(s) name unknown items)",
            line=int(bad["_line"]), field="item_id",
        )
    order = ordered_ids(frame["item_id"])
    frame = frame.set_index("item_id").loc[order].reset_index()
    frame["raw_item_id"] = frame.pop("item_id")
    frame.insert(0, "item_id", np.arange(1, len(frame) + 1, dtype="int64"))
    frame["event_timestamp"] = start
    return frame


def _users_table(table: RawTable | None, user_ids: dict[str, int], start) -> pd.DataFrame:
    users = pd.DataFrame({"raw_user_id": list(user_ids), "user_id": list(user_ids.values())})
    if table is not None:
        profile = table.frame.copy()
        profile["user_id"] = profile["user_id"].astype(str).str.strip()
        row = first_bad(profile["user_id"].duplicated())
        if row is not None:
            raise table.error(
                f"duplicate user id {profile['user_id'].iloc[row]!r}", row=row, field="user_id"
            )
        if "age" in profile:
            age = pd.to_numeric(profile["age"], errors="coerce")
            row = first_bad((age.isna() & profile["age"].notna()) | (age < 0) | (age > 150))
            if row is not None:
                raise table.error(
                    f"age {profile['age'].iloc[row]!r} is not a number in [0, 150]",
                    row=row, field="age",
                )
            profile["age"] = age.astype("Int64")
        keep = ["user_id", *[c for c in USER_PROFILE_FIELDS if c in profile]]
        users = users.merge(
            profile[keep].rename(columns={"user_id": "raw_user_id"}), on="raw_user_id",
            how="left",
        )
    for col in USER_PROFILE_FIELDS:
        if col not in users:
            users[col] = pd.array([pd.NA] * len(users), dtype="Int64" if col == "age" else object)
    users["age"] = users["age"].astype("Int64")
    users["event_timestamp"] = start
    return users[USER_COLUMNS]


def table_digest(frame: pd.DataFrame) -> str:
    """sha256 over column names, dtypes and values (list cells joined), not file bytes."""
    h = hashlib.sha256(json.dumps([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    hashable = frame.copy()
    for col in hashable.columns:
        if hashable[col].dtype == object:
            hashable[col] = hashable[col].map(
                lambda v: "\x1f".join(map(str, v)) if isinstance(v, list | np.ndarray) else v
            )
    h.update(pd.util.hash_pandas_object(hashable, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _write(
    tables: dict[str, pd.DataFrame], raw: RawDataset, cfg: IngestConfig, out_dir: Path,
    source_digest: str,
) -> dict:
    digests = {name: table_digest(frame) for name, frame in tables.items()}
    fingerprint = hashlib.sha256(
        json.dumps(digests, sort_keys=True).encode()
    ).hexdigest()
    with StagedFiles(out_dir, JOURNAL) as staged:
        files = {}
        for name, frame in tables.items():
            tmp = staged.stage(f"{name}.parquet")
            table = pa.Table.from_pandas(frame, schema=ARROW_SCHEMAS[name], preserve_index=False)
            pq.write_table(table, tmp)
            files[f"{name}.parquet"] = _file_sha256(tmp)
        manifest = _manifest(tables, raw, cfg, source_digest, fingerprint, digests, files)
        staged.stage(MANIFEST).write_text(json.dumps(manifest, indent=2))
        staged.commit()
    return manifest


def _manifest(
    tables: dict[str, pd.DataFrame], raw: RawDataset, cfg: IngestConfig, source_digest: str,
    fingerprint: str, digests: dict[str, str], files: dict[str, str],
) -> dict:
    events = tables["events"]
    items = tables["items"]
    manifest = {
        "ingest_version": INGEST_VERSION,
        "format": cfg.format,
        "inputs": [str(p) for p in raw.inputs],
        "source_digest": source_digest,
        "fingerprint": fingerprint,
        "table_digests": digests,
        "files": files,
        "counts": {"events": len(events), "users": len(tables["users"]), "items": len(items)},
        "has_ratings": bool(events["rating"].notna().any()),
        "has_timestamps": raw.has_timestamps,
        "has_genres": bool(items["genres"].map(len).gt(0).any()),
        "has_text": bool((items["title"].str.len() + items["text"].str.len()).gt(0).any()),
        "rating_range": [cfg.rating_min, cfg.rating_max],
        "time_range": [
            events["event_timestamp"].min().isoformat(),
            events["event_timestamp"].max().isoformat(),
        ],
    }
    return manifest


def _read_manifest(out_dir: Path) -> dict | None:
    path = out_dir / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def read_manifest(out_dir: Path) -> dict:
    """The manifest of an ingested dataset; a clear error when there is none.

    An ingest killed while renaming its files is completed first (under the ingest lock).
    """
    out_dir = Path(out_dir)
    if (out_dir / JOURNAL).exists():
        with file_lock(out_dir / LOCK):
            recover(out_dir, JOURNAL)
    return _require_manifest(out_dir)


@contextmanager
def locked_dataset(out_dir: Path) -> Iterator[dict]:
    """The manifest, with the ingest lock held: tables read in the block are the ones it
    describes (an ingest waits for the block to end, and the block for an ingest)."""
    out_dir = Path(out_dir)
    if not (out_dir / JOURNAL).exists():
        _require_manifest(out_dir)  # no dataset: say so before creating a lock file there
    with file_lock(out_dir / LOCK):
        recover(out_dir, JOURNAL)
        yield _require_manifest(out_dir)


def _require_manifest(out_dir: Path) -> dict:
    manifest = _read_manifest(out_dir)
    if manifest is None:
        raise FileNotFoundError(f"no ingested dataset in {out_dir}: run `irec ingest` first")
    return manifest


def _outputs_intact(out_dir: Path, manifest: dict) -> bool:
    files = manifest.get("files", {})
    return set(files) == {f"{t}.parquet" for t in TABLES} and all(
        (out_dir / name).exists() and _file_sha256(out_dir / name) == digest
        for name, digest in files.items()
    )
