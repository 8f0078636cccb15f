"""The offline event log: partitioned, durable files; each event read back once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd

from data.event_log import Event, EventLog, Exposure, ExposureLog
from tests.helpers import ROOT

DAY = 86_400
T0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC


def _events(prefix: str, n: int, start: int = T0) -> list[Event]:
    return [Event(f"{prefix}-{k}", user_id=1 + k % 3, item_id=10 + k, timestamp=start + k * 3600,
                  rating=None if k % 2 else 4.0, kind="click" if k % 2 else "rating",
                  request_id=f"req-{k}" if k % 3 == 0 else "")
            for k in range(n)]


def test_append_partitions_by_event_date_and_reads_back_every_field(tmp_path):
    log = EventLog(tmp_path / "event_log")
    events = _events("a", 30)  # 30 hours: two or three dates
    written = log.append(events)
    dates = sorted(p.parent.name for p in written)
    assert dates == sorted({f"date={pd.Timestamp(e.timestamp, unit='s'):%Y-%m-%d}"
                            for e in events})
    back = log.read()
    assert back.event_id.tolist() == [e.event_id for e in events]  # oldest first
    row = back.iloc[1]
    assert (row.user_id, row.item_id, row.kind, row.request_id) == (2, 11, "click", "")
    assert pd.isna(row.rating) and back.iloc[0].rating == 4.0
    assert back.iloc[3].event_timestamp == pd.Timestamp(T0 + 3 * 3600, unit="s", tz="UTC")


def test_a_retried_batch_is_read_once_and_until_cuts_by_event_time(tmp_path):
    log = EventLog(tmp_path / "event_log")
    batch = _events("b", 5)
    log.append(batch)
    log.append(batch[2:])  # the client never saw the first answer and retried part of it
    assert len(log.files()) >= 2
    back = log.read()
    assert back.event_id.tolist() == [e.event_id for e in batch]
    cut = log.read(until=pd.Timestamp(T0 + 2 * 3600, unit="s", tz="UTC"))
    assert cut.event_id.tolist() == ["b-0", "b-1", "b-2"]


def test_an_empty_log_reads_as_an_empty_frame_with_the_columns(tmp_path):
    frame = EventLog(tmp_path / "nothing").read()
    assert frame.empty and {"event_id", "user_id", "event_timestamp"} <= set(frame.columns)


WRITER = """
import sys
from data.event_log import Event, EventLog, Exposure, ExposureLog
log = EventLog(sys.argv[1])
k = 0
while True:
    log.append([Event(f"w-{k}-{j}", 1, 1 + j, 1_700_000_000 + k, 3.0) for j in range(200)])
    print(k, flush=True)
    k += 1
"""


def test_a_writer_killed_midway_leaves_only_whole_files(tmp_path):
    """kill -9 a process appending in a loop: every batch it reported is there, whole; a
    half-written file, if any, is a hidden temporary the reader never lists."""
    root = tmp_path / "event_log"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    acknowledged = -1
    deadline = time.monotonic() + 120
    while acknowledged < 20 and time.monotonic() < deadline:
        acknowledged = int(proc.stdout.readline())
    time.sleep(0.013)  # land somewhere inside a later append
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    back = EventLog(root).read()
    batches = back.groupby(back.event_id.str.split("-").str[1].astype(int)).size()
    assert acknowledged >= 20 and set(range(acknowledged + 1)) <= set(batches.index)
    assert (batches == 200).all()  # no torn batch


def test_exposures_are_one_row_per_shown_item_anonymous_users_kept(tmp_path):
    log = ExposureLog(tmp_path / "exposure_log")
    log.append([Exposure("r1", 7, "interest:v1", (5, 9, 2), (0.9, 0.5, 0.1), False, T0 + 0.25),
                Exposure("r2", None, "interest:v1", (4,), (1.0,), True, T0 + DAY)])
    shown = log.read()
    assert shown.request_id.tolist() == ["r1", "r1", "r1", "r2"]
    assert shown.position.tolist() == [1, 2, 3, 1]
    assert shown.item_id.tolist() == [5, 9, 2, 4]
    assert shown.user_id.iloc[0] == 7 and pd.isna(shown.user_id.iloc[3])
    assert shown.cold_start.tolist() == [False, False, False, True]
    assert shown.event_timestamp.iloc[0] == pd.Timestamp((T0 + 0.25) * 1e6, unit="us", tz="UTC")
    assert len(list((tmp_path / "exposure_log").glob("date=*/*.parquet"))) == 2  # two dates
