"""Crash-safe writes with real processes killed by SIGKILL: ingest, staged file sets, the lock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from data import atomic, ingest, read_manifest
from data.config import IngestConfig
from data.ingest import JOURNAL, OUTPUTS
from tests.helpers import ROOT, wait_until

QUIET = {"log": lambda _: None}
INGEST = ("import sys\nfrom data.config import IngestConfig\nfrom data.ingest import ingest\n"
          "ingest(IngestConfig(path=sys.argv[1]), sys.argv[2], log=lambda _: None)\n")


def _outputs(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in OUTPUTS}


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def test_ingest_killed_midway_leaves_the_previous_dataset_readable_and_identical(
        datasets, tmp_path):
    (tmp_path / "events.csv").write_text("user_id,item_id,rating,timestamp\n"
                                         "1,2,4,100\n1,3,5,200\n")
    out = tmp_path / "out"
    previous = ingest(IngestConfig(format="generic", path=tmp_path / "events.csv"), out, **QUIET)
    before = _outputs(out)

    writer = subprocess.Popen([sys.executable, "-c", INGEST, str(datasets / "ml-100k"), str(out)],
                              cwd=ROOT)
    try:
        staged = wait_until(lambda: [p for p in _temps(out) if ".events.parquet." in p.name]
                            or writer.poll() is not None, 60,
                            "the ingest to stage events.parquet", interval_s=0.001)
        assert writer.poll() is None, f"the ingest ended ({writer.returncode}) before the kill"
    finally:
        writer.kill()
        writer.wait()
    assert staged and writer.returncode == -9
    assert not (out / JOURNAL).exists(), "killed during the renames, not while staging"

    assert read_manifest(out) == previous.manifest
    assert _outputs(out) == before
    events = pd.read_parquet(out / "events.parquet")
    assert events[["user_id", "item_id", "rating"]].values.tolist() == [[1, 1, 4.0], [1, 2, 5.0]]

    leftovers = _temps(out)
    assert leftovers  # the killed writer's staged files; the next ingest removes them
    again = ingest(IngestConfig(path=datasets / "ml-100k"), out, **QUIET)
    assert again.manifest["counts"]["events"] == 100_000 and read_manifest(out) == again.manifest
    assert not _temps(out)


STAGE_AND_DIE = """
import json, os, signal, sys
from pathlib import Path
from data.atomic import StagedFiles
folder = Path(sys.argv[1])
staged = StagedFiles(folder, "journal.json")
staged.stage("a.txt").write_text("new a")
staged.stage("b.txt").write_text("new b")
staged.stage("index.json").write_text(json.dumps(["new"]))
staged.write_journal()
first = next(iter(staged.renames))
os.replace(folder / first, folder / staged.renames[first])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_between_renames_is_completed_by_recover(tmp_path):
    for name, text in {"a.txt": "old a", "b.txt": "old b", "index.json": '["old"]'}.items():
        atomic.write_text(tmp_path / name, text)
    died = subprocess.run([sys.executable, "-c", STAGE_AND_DIE, str(tmp_path)], cwd=ROOT)
    assert died.returncode == -9
    assert (tmp_path / "a.txt").read_text() == "new a"  # torn: one renamed, two pending
    assert (tmp_path / "b.txt").read_text() == "old b"

    assert atomic.recover(tmp_path, "journal.json")
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt", "index.json")] == [
        "new a", "new b", '["new"]']
    assert not (tmp_path / "journal.json").exists() and not _temps(tmp_path)
    assert not atomic.recover(tmp_path, "journal.json")


HOLD_LOCK = """
import sys, time
from data.atomic import file_lock
with file_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_the_file_lock_excludes_other_processes_and_dies_with_its_holder(tmp_path):
    lock = tmp_path / "thing.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        began = time.monotonic()
        try:
            with atomic.file_lock(lock, timeout_s=0.3):
                raise AssertionError("took a lock another process holds")
        except atomic.LockTimeout as exc:
            assert str(lock) in str(exc) and time.monotonic() - began >= 0.3
    finally:
        holder.kill()
        holder.wait()
    with atomic.file_lock(lock, timeout_s=5):  # kill -9 released it
        pass


def test_write_text_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "state.json"
    atomic.write_text(target, json.dumps({"v": 1}))
    atomic.write_text(target, json.dumps({"v": 2}))
    assert json.loads(target.read_text()) == {"v": 2}
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_published_files_get_the_mode_of_a_plain_write(tmp_path):
    plain, atomic_file = tmp_path / "plain.txt", tmp_path / "atomic.txt"
    plain.write_text("x")
    atomic.write_text(atomic_file, "x")
    assert atomic_file.stat().st_mode == plain.stat().st_mode
