"""Ingest on the real datasets, the generic format, idempotence, and every bad-input error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from data import IngestError, ingest, movielens
from data.catalogue_log import CatalogueLog, NewItem
from data.config import IngestConfig

QUIET = {"log": lambda _: None}


def test_movielens_100k_is_read_whole_and_keeps_its_ids(datasets, tmp_path):
    result = ingest(IngestConfig(path=datasets / "ml-100k"), tmp_path, **QUIET)
    m = result.manifest
    assert m["counts"] == {"events": 100_000, "users": 943, "items": 1_682}
    assert m["has_ratings"] and m["has_timestamps"] and m["has_genres"] and m["has_text"]
    events = pd.read_parquet(tmp_path / "events.parquet")
    raw = pd.read_csv(datasets / "ml-100k" / "u.data", sep="\t",
                      names=["user_id", "item_id", "rating", "ts"])
    # ids 1..n stay as they are; every raw rating survives with its timestamp
    merged = raw.merge(events.assign(ts=events.event_timestamp.astype("int64") // 10**6),
                       on=["user_id", "item_id", "ts"], how="inner")
    assert len(merged) == 100_000
    assert (merged.rating_x == merged.rating_y).all()
    items = pd.read_parquet(tmp_path / "items.parquet").set_index("item_id")
    assert items.loc[1, "title"] == "Toy Story (1995)"
    assert list(items.loc[1, "genres"]) == ["Animation", "Children's", "Comedy"]
    assert items.loc[1, "year"] == 1995
    users = pd.read_parquet(tmp_path / "users.parquet").set_index("user_id")
    assert users.loc[1, ["age", "gender", "occupation", "zip_code"]].tolist() == [
        24, "M", "technician", "85711"]
    # sorted by user then time
    assert events.groupby("user_id").event_timestamp.apply(
        lambda s: s.is_monotonic_increasing).all()


def test_sasrec_sequences_keep_file_order(datasets, tmp_path):
    path = datasets / "amazon-video-games" / "Video.txt"
    m = ingest(IngestConfig(format="sasrec", path=path), tmp_path, **QUIET).manifest
    assert m["counts"] == {"events": 287_107, "users": 31_013, "items": 23_715}
    assert not m["has_ratings"] and not m["has_timestamps"] and not m["has_text"]
    events = pd.read_parquet(tmp_path / "events.parquet")
    raw = pd.read_csv(path, sep=" ", names=["user_id", "item_id"])
    for user in (1, 777, 31_013):
        assert events[events.user_id == user].item_id.tolist() == (
            raw[raw.user_id == user].item_id.tolist())


def test_generic_csv_with_string_ids_iso_times_and_item_text(tmp_path):
    (tmp_path / "events.csv").write_text(
        "user_id,item_id,rating,timestamp\n"
        "bob,sku-b,4,2024-01-02T10:00:00Z\n"
        "alice,sku-a,5,2024-01-01T09:00:00+00:00\n"
        "alice,sku-b,3.5,2024-01-03T09:00:00Z\n"
    )
    (tmp_path / "items.csv").write_text(
        "item_id,title,genres,text\n"
        "sku-a,Red Kettle,Kitchen|Home,A loud whistling kettle\n"
        "sku-b,Blue Mug,Kitchen,\n"
        "sku-c,Green Lamp,,Never bought\n"
    )
    out = tmp_path / "out"
    cfg = IngestConfig(format="generic", path=tmp_path / "events.csv",
                       items_path=tmp_path / "items.csv", rating_min=0, rating_max=5)
    m = ingest(cfg, out, **QUIET).manifest
    assert m["counts"] == {"events": 3, "users": 2, "items": 3}
    users = pd.read_parquet(out / "users.parquet")
    assert users.raw_user_id.tolist() == ["alice", "bob"] and users.user_id.tolist() == [1, 2]
    items = pd.read_parquet(out / "items.parquet")
    assert items.raw_item_id.tolist() == ["sku-a", "sku-b", "sku-c"]
    assert list(items.genres[0]) == ["Kitchen", "Home"] and items.text[0].startswith("A loud")
    events = pd.read_parquet(out / "events.parquet")
    assert events.values[:, :3].tolist() == [[1, 1, 5.0], [1, 2, 3.5], [2, 2, 4.0]]


def test_reingest_is_a_noop_and_a_changed_input_is_not(datasets, tmp_path):
    src = tmp_path / "ml"
    shutil.copytree(datasets / "ml-100k", src)
    out = tmp_path / "out"
    first = ingest(IngestConfig(path=src), out, **QUIET)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = ingest(IngestConfig(path=src), out, **QUIET)
    assert again.skipped and again.fingerprint == first.fingerprint
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    lines = (src / "u.data").read_text().splitlines()
    (src / "u.data").write_text("\n".join(lines[:-1]) + "\n")
    changed = ingest(IngestConfig(path=src), out, **QUIET)
    assert not changed.skipped and changed.fingerprint != first.fingerprint
    assert changed.manifest["counts"]["events"] == 99_999

    # a damaged output is rebuilt, not trusted
    (out / "events.parquet").write_bytes(b"garbage")
    rebuilt = ingest(IngestConfig(path=src), out, **QUIET)
    assert not rebuilt.skipped and rebuilt.fingerprint == changed.fingerprint


def test_fingerprint_depends_on_content_not_file_bytes(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.parquet"
    a.write_text("user_id,item_id,timestamp\n1,2,100\n1,3,200\n")
    pd.DataFrame({"user_id": [1, 1], "item_id": [2, 3], "timestamp": [100, 200]}).to_parquet(b)
    fa = ingest(IngestConfig(format="generic", path=a), tmp_path / "oa", **QUIET).fingerprint
    fb = ingest(IngestConfig(format="generic", path=b), tmp_path / "ob", **QUIET).fingerprint
    assert fa == fb


def _generic(tmp_path: Path, events: str, items: str | None = None) -> IngestConfig:
    (tmp_path / "events.csv").write_text(events)
    if items is not None:
        (tmp_path / "items.csv").write_text(items)
    return IngestConfig(format="generic", path=tmp_path / "events.csv",
                        items_path=tmp_path / "items.csv" if items is not None else None)


HEADER = "user_id,item_id,rating,timestamp\n"
BAD_GENERIC = {
    "missing column": (
        "user_id,rating,timestamp\n1,4,100\n", None,
        ["events.csv", "missing required column", "item_id"]),
    "rating not a number": (
        HEADER + "1,2,4,100\n1,3,great,200\n", None,
        ["events.csv line 3", "field 'rating'", "'great' is not a number"]),
    "rating out of range": (
        HEADER + "1,2,4,100\n1,3,7,200\n", None,
        ["events.csv line 3", "field 'rating'", "7.0 is outside [1.0, 5.0]"]),
    "bad timestamp": (
        HEADER + "1,2,4,100\n1,3,4,yesterday\n", None,
        ["events.csv line 3", "field 'timestamp'", "'yesterday'"]),
    "duplicate event": (
        HEADER + "1,2,4,100\n1,3,4,150\n1,2,5,100\n", None,
        ["events.csv line 2", "duplicate event", "user 1, item 2", "line 4"]),
    "unknown item": (
        HEADER + "1,2,4,100\n1,9,4,200\n", "item_id,title\n2,Two\n3,Three\n",
        ["line 3", "field 'item_id'", "item '9' is not in the items file"]),
    "empty id": (
        HEADER + "1,2,4,100\n,3,4,200\n", None,
        ["events.csv line 3", "field 'user_id'", "empty id"]),
    "header only": (HEADER, None, ["events.csv", "empty"]),
    "empty file": ("", None, ["events.csv", "empty"]),
    "duplicate item": (
        HEADER + "1,2,4,100\n", "item_id,title\n2,Two\n2,Again\n",
        ["items.csv line 3", "field 'item_id'", "duplicate item id '2'"]),
    "items missing title": (
        HEADER + "1,2,4,100\n", "item_id,name\n2,Two\n",
        ["items.csv", "missing required column", "title"]),
}


@pytest.mark.parametrize("case", sorted(BAD_GENERIC))
def test_bad_generic_input_names_file_line_and_field(tmp_path, case):
    events, items, expected = BAD_GENERIC[case]
    with pytest.raises(IngestError) as err:
        ingest(_generic(tmp_path, events, items), tmp_path / "out", **QUIET)
    for fragment in expected:
        assert fragment in str(err.value), (case, str(err.value))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_bad_movielens_and_sasrec_lines(datasets, tmp_path):
    src = tmp_path / "ml"
    shutil.copytree(datasets / "ml-100k", src)
    lines = (src / "u.data").read_text().splitlines()
    lines[41] = lines[41].rsplit("\t", 1)[0]  # line 42 loses its timestamp
    (src / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(IngestError, match=r"u.data line 42, field 'timestamp': too few fields"):
        ingest(IngestConfig(path=src), tmp_path / "out", **QUIET)

    seq = tmp_path / "seq.txt"
    seq.write_text("1 5\n1 6\n\n2 x7\n")
    expected = r"seq.txt line 4, field 'item_id': 'x7' is not an integer"
    with pytest.raises(IngestError, match=expected):
        ingest(IngestConfig(format="sasrec", path=seq), tmp_path / "out2", **QUIET)


def test_failed_ingest_leaves_previous_dataset_intact(tmp_path):
    cfg = _generic(tmp_path, HEADER + "1,2,4,100\n1,3,5,200\n")
    out = tmp_path / "out"
    good = ingest(cfg, out, **QUIET)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(IngestError):
        ingest(_generic(tmp_path, HEADER + "1,2,4,100\n1,3,9,200\n"), out, **QUIET)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] == good.fingerprint


def test_movielens_checksum_accepts_the_release_and_refuses_a_altered_copy(datasets, tmp_path):
    assert movielens.verify(datasets / "ml-100k") == datasets / "ml-100k"
    copy = tmp_path / "ml"
    shutil.copytree(datasets / "ml-100k", copy)
    data = bytearray((copy / "u.data").read_bytes())
    data[10] ^= 1
    (copy / "u.data").write_bytes(bytes(data))
    with pytest.raises(IngestError, match="checksum mismatch"):
        movielens.verify(copy)


def test_timestamps_beyond_the_future_skew_are_refused(tmp_path):
    now = int(pd.Timestamp.now(tz="UTC").timestamp())
    soon, late = now + 60, now + 3_600
    events = HEADER + f"1,2,4,100\n1,3,4,{soon}\n2,2,4,{late}\n2,3,4,2100-01-01T00:00:00Z\n"
    with pytest.raises(IngestError) as err:
        ingest(_generic(tmp_path, events), tmp_path / "out", **QUIET)
    message = str(err.value)
    assert "events.csv line 4, field 'timestamp': 2 timestamp(s) later than now + " in message
    assert "max_future_skew_s=300s" in message and f"the first is '{late}'" in message
    assert not (tmp_path / "out" / "manifest.json").exists()

    wider = _generic(tmp_path, events).model_copy(update={"max_future_skew_s": 200 * 365 * 86400})
    assert ingest(wider, tmp_path / "out", **QUIET).manifest["counts"]["events"] == 4
    within = HEADER + f"1,2,4,100\n1,3,4,{soon}\n"
    assert ingest(_generic(tmp_path, within), tmp_path / "out2", **QUIET).manifest["counts"][
        "events"] == 2


def test_ids_are_stable_across_reingests_and_new_ones_come_after(tmp_path):
    """A re-ingest keeps every id, also for items and users the new input no longer names;
    new raw ids (even ones that sort first) are numbered after the largest id."""
    first = _generic(tmp_path, HEADER + "u2,b,4,100\nu3,c,5,200\nu2,c,3,300\n",
                     "item_id,title\nb,Bee\nc,Sea\nd,Dee\n")
    out = tmp_path / "out"
    ingest(first, out, **QUIET)
    before = pd.read_parquet(out / "items.parquet")
    assert before.set_index("raw_item_id").item_id.to_dict() == {"b": 1, "c": 2, "d": 3}

    second = _generic(tmp_path, HEADER + "u1,a,4,400\nu3,c,2,500\nu2,e,5,600\n",
                      "item_id,title\na,Ay\nc,Sea again\ne,Ee\n")
    m = ingest(second, out, **QUIET).manifest
    items = pd.read_parquet(out / "items.parquet").set_index("raw_item_id")
    assert items.item_id.to_dict() == {"b": 1, "c": 2, "d": 3, "a": 4, "e": 5}
    assert items.loc["c", "title"] == "Sea again" and items.loc["d", "title"] == "Dee"
    users = pd.read_parquet(out / "users.parquet").set_index("raw_user_id")
    assert users.user_id.to_dict() == {"u2": 1, "u3": 2, "u1": 3}
    events = pd.read_parquet(out / "events.parquet")
    assert sorted(map(tuple, events[["user_id", "item_id"]].values.tolist())) == [
        (1, 5), (2, 2), (3, 4)]
    assert m["counts"] == {"events": 3, "users": 3, "items": 5}

    fresh = ingest(second.model_copy(update={"keep_ids": False}), out, **QUIET)
    assert not fresh.skipped
    renumbered = pd.read_parquet(out / "items.parquet")
    assert renumbered.set_index("raw_item_id").item_id.to_dict() == {"a": 1, "c": 2, "e": 3}


def test_items_added_at_run_time_join_the_catalogue_with_their_ids(tmp_path):
    """The catalogue log's items are folded into items.parquet with the ids they were given;
    a new log file makes a re-ingest of the same input do work, and dataset ids come after."""
    config = _generic(tmp_path, HEADER + "u1,b,4,100\nu2,c,5,200\n",
                      "item_id,title\nb,Bee\nc,Sea\n")
    out = tmp_path / "out"
    ingest(config, out, **QUIET)
    CatalogueLog.of(out).append([NewItem(item_id=3, raw_item_id="opera", title="Starfall",
                                         text="A space opera", timestamp=300.0)])
    again = ingest(config, out, **QUIET)
    assert not again.skipped  # the log grew: the catalogue is stale
    items = pd.read_parquet(out / "items.parquet").set_index("raw_item_id")
    assert items.item_id.to_dict() == {"b": 1, "c": 2, "opera": 3}
    assert (items.loc["opera", "title"], items.loc["opera", "text"]) == ("Starfall",
                                                                          "A space opera")
    assert ingest(config, out, **QUIET).skipped  # nothing new since

    grown = _generic(tmp_path, HEADER + "u1,b,4,100\nu2,d,5,200\nu3,opera,3,400\n",
                     "item_id,title\nb,Bee\nd,Dee\nopera,Starfall (the dataset's title)\n")
    ingest(grown, out, **QUIET)
    items = pd.read_parquet(out / "items.parquet").set_index("raw_item_id")
    assert items.item_id.to_dict() == {"b": 1, "c": 2, "opera": 3, "d": 4}
    events = pd.read_parquet(out / "events.parquet")
    assert 3 in set(events.item_id)  # the dataset's events name the added item by its id
