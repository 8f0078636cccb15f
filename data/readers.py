"""Readers for the supported input formats; each returns a ``RawDataset`` of string-typed tables.

- ``movielens-100k``: the original GroupLens folder (u.data, u.item, u.genre, u.user).
- ``sasrec``: ``<user> <item>`` lines, each user's lines in time order (no ratings, no times).
- ``generic``: an interactions CSV or parquet (``user_id,item_id[,rating],timestamp``) with
  optional items (``item_id,title[,genres][,text][,year]``) and users files.
Type checks, ranges and cross-table checks happen in ``data.ingest`` for all formats.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from data.schema import IngestError, RawDataset, RawTable, first_bad, require_columns

# Sequence-only data has order but no clock: event k of a user is stamped ORIGIN + k * STEP.
SYNTHETIC_ORIGIN = pd.Timestamp("2000-01-01", tz="UTC")
SYNTHETIC_STEP = pd.Timedelta(hours=1)
_YEAR = re.compile(r"\((\d{4})\)\s*$")
MOVIELENS_FILES = ("u.data", "u.item", "u.genre", "u.user")


def _existing(path: Path) -> Path:
    if not path.exists():
        raise IngestError(path, "file not found")
    if path.stat().st_size == 0:
        raise IngestError(path, "file is empty")
    return path


def read_delimited(
    path: Path, names: list[str] | None, sep: str, encoding: str = "utf-8"
) -> RawTable:
    """Read a delimited text file as strings, keeping each row's true line number."""
    _existing(path)
    header = None if names else 0
    try:
        frame = pd.read_csv(
            path, sep=sep, header=header, names=names, dtype=str, encoding=encoding,
            skip_blank_lines=False, keep_default_na=False, na_values=[""], engine="c",
        )
    except pd.errors.EmptyDataError as exc:
        raise IngestError(path, "file is empty") from exc
    except pd.errors.ParserError as exc:
        raise IngestError(path, f"malformed row: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise IngestError(path, f"not valid {encoding} text: {exc}") from exc
    frame["_line"] = frame.index + (1 if names else 2)
    frame = frame[frame.drop(columns="_line").notna().any(axis=1)].reset_index(drop=True)
    if frame.empty:
        raise IngestError(path, "file is empty: no data rows")
    return RawTable(frame, path.name)


def read_any(path: Path, names: list[str] | None = None) -> RawTable:
    """CSV/TSV by extension (header row required), or parquet (rows counted from 1)."""
    if path.suffix == ".parquet":
        _existing(path)
        frame = pd.read_parquet(path)
        for col in ("user_id", "item_id"):
            if col in frame.columns:
                frame[col] = frame[col].astype("string").astype(object)
        frame["_line"] = range(1, len(frame) + 1)
        return RawTable(frame, path.name, unit="row")
    sep = "\t" if path.suffix in {".tsv", ".tab"} else ","
    return read_delimited(path, names, sep)


def _check_field_count(table: RawTable, columns: list[str]) -> None:
    row = first_bad(table.frame[columns].isna().any(axis=1))
    if row is not None:
        missing = [c for c in columns if pd.isna(table.frame[c].iloc[row])]
        raise table.error(f"too few fields: no value for {missing}", row=row, field=missing[0])


def read_movielens_100k(folder: Path) -> RawDataset:
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestError(folder, "not a folder holding u.data, u.item and u.user")
    events = read_delimited(
        folder / "u.data", ["user_id", "item_id", "rating", "timestamp"], sep="\t"
    )
    _check_field_count(events, ["user_id", "item_id", "rating", "timestamp"])

    genres = read_delimited(folder / "u.genre", ["name", "index"], sep="|")
    genre_names = list(genres.frame.sort_values("index", key=lambda s: s.astype(int))["name"])
    item_cols = ["item_id", "title", "release_date", "video_release_date", "imdb_url"]
    items = read_delimited(
        folder / "u.item", item_cols + genre_names, sep="|", encoding="latin-1"
    )
    flags = items.frame[genre_names].fillna("0")
    bad_flag = ~flags.isin(["0", "1"])
    if bad_flag.to_numpy().any():
        row, col = (int(i[0]) for i in bad_flag.to_numpy().nonzero())
        raise items.error(
            f"genre flag {flags.iat[row, col]!r} is not 0 or 1", row=row, field=genre_names[col]
        )
    frame = items.frame
    frame["genres"] = [
        [g for g, f in zip(genre_names, row, strict=True) if f == "1" and g != "unknown"]
        for row in flags.itertuples(index=False)
    ]
    release = pd.to_datetime(frame["release_date"], format="%d-%b-%Y", errors="coerce")
    from_title = frame["title"].fillna("").str.extract(_YEAR, expand=False)
    year_in_title = pd.to_numeric(from_title).astype("Int64")
    frame["year"] = release.dt.year.astype("Int64").fillna(year_in_title)
    frame["title"] = frame["title"].fillna("").str.strip()
    frame["text"] = ""
    items.frame = frame[["item_id", "title", "genres", "year", "text", "_line"]]

    users = read_delimited(
        folder / "u.user", ["user_id", "age", "gender", "occupation", "zip_code"], sep="|"
    )
    return RawDataset(
        events=events, items=items, users=users, has_timestamps=True,
        inputs=[folder / n for n in MOVIELENS_FILES],
    )


def read_sasrec(path: Path) -> RawDataset:
    path = Path(path)
    events = read_delimited(path, ["user_id", "item_id"], sep=" ")
    _check_field_count(events, ["user_id", "item_id"])
    frame = events.frame
    for col in ("user_id", "item_id"):
        row = first_bad(~frame[col].str.fullmatch(r"\d+"))
        if row is not None:
            raise events.error(
                f"{frame[col].iloc[row]!r} is not an integer id", row=row, field=col
            )
    position = frame.groupby("user_id", sort=False).cumcount()
    frame["timestamp"] = SYNTHETIC_ORIGIN + position * SYNTHETIC_STEP
    return RawDataset(events=events, has_timestamps=False, inputs=[path])


def read_generic(
    path: Path, items_path: Path | None = None, users_path: Path | None = None
) -> RawDataset:
    events = read_any(Path(path))
    if "timestamp" not in events.frame.columns and "event_timestamp" in events.frame.columns:
        events.frame = events.frame.rename(columns={"event_timestamp": "timestamp"})
    require_columns(events, ["user_id", "item_id", "timestamp"])
    inputs = [Path(path)]
    items = users = None
    if items_path is not None:
        items = read_any(Path(items_path))
        require_columns(items, ["item_id", "title"])
        frame = items.frame
        frame["genres"] = [
            _genre_list(g) for g in frame.get("genres", pd.Series([None] * len(frame)))
        ]
        frame["text"] = frame["text"].fillna("") if "text" in frame else ""
        if "year" in frame:
            years = pd.to_numeric(frame["year"], errors="coerce")
            row = first_bad(years.isna() & frame["year"].notna())
            if row is not None:
                raise items.error(
                    f"year {frame['year'].iloc[row]!r} is not a number", row=row, field="year"
                )
            frame["year"] = years.astype("Int64")
        else:
            frame["year"] = pd.array([pd.NA] * len(frame), dtype="Int64")
        frame["title"] = frame["title"].fillna("").astype(str)
        items.frame = frame[["item_id", "title", "genres", "year", "text", "_line"]]
        inputs.append(Path(items_path))
    if users_path is not None:
        users = read_any(Path(users_path))
        require_columns(users, ["user_id"])
        inputs.append(Path(users_path))
    return RawDataset(events=events, items=items, users=users, inputs=inputs)


def _genre_list(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    if isinstance(value, str):
        return [g.strip() for g in value.split("|") if g.strip()]
    return [str(g) for g in value]
