"""Benchmark the Feast feature store: online read latency and point-in-time retrieval.

Usage::

    python benchmarks/feature_store.py [--requests N] [--workdir DIR] [--skip-pit]
                                       [--datasets ml-100k video-games] [--pit-sample N]

Prepares a workspace per dataset under ``--workdir`` (ingest, build, apply, materialize;
reused when already up to date), starts a private ``redis-server`` and reads:

* online latency after warm-up, p50/p95/p99 in ms, for 1 user and a batch of 100 users:
  the Feast SDK (``get_online_features`` of the three ``user_history`` features, no
  on-demand transform; plus the ``retrieval_v1`` service, which adds the ``user_decay``
  on-demand view, for 1 user) beside the raw floor of the same rows (a plain ``sqlite3``
  SELECT on the online DB file, a plain ``redis`` HMGET of the same hash fields);
* point-in-time retrieval (``training_set(..., "ranking_v1")``) over an entity frame of
  every event (user, item, event time minus one second), or a seeded random sample of
  ``--pit-sample`` rows; a retrieval that fails is reported as FAILED with its error.

Online cases run on the first dataset of ``--datasets``. Figures are printed, not asserted;
the targets (user-row p99 <= 3 ms on SQLite, <= 5 ms on Redis) get PASS/MISS for information.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Feast installs its own warning filters when imported; ours go in front of them afterwards.
from feast.infra.key_encoding_utils import serialize_entity_key  # noqa: E402
from feast.infra.online_stores.helpers import _mmh3  # noqa: E402
from feast.protos.feast.types.EntityKey_pb2 import EntityKey  # noqa: E402
from feast.protos.feast.types.Value_pb2 import Value  # noqa: E402

from data.config import IngestConfig  # noqa: E402
from data.ingest import ingest  # noqa: E402
from features.build import build  # noqa: E402
from features.config import FeatureConfig  # noqa: E402
from features.store import apply, materialize, open_store, training_set  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="On demand feature view is an experimental")

DATASETS = {
    "ml-100k": ("movielens-100k", Path("/work/shared/datasets/ml-100k")),
    "video-games": ("sasrec", Path("/work/shared/datasets/amazon-video-games/Video.txt")),
}
HISTORY_FEATURES = ["hist_item_ids", "hist_ratings", "hist_timestamps"]
HISTORY_REFS = [f"user_history:{name}" for name in HISTORY_FEATURES]
BATCH = 100
WARMUP = 100
SEED = 7
TARGET_P99_MS = {"sqlite": 3.0, "redis": 5.0}
STARTED = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f}s] {message}", flush=True)


def prepare(name: str, workdir: Path, online: bool):
    """Ingest, build and apply one dataset; materialize to SQLite and Redis when ``online``.

    Returns the config and the SQLite and Redis stores (Redis: None unless ``online``).
    """
    fmt, path = DATASETS[name]
    sqlite_cfg = FeatureConfig(repo_path=workdir / name)

    def quiet(line: str) -> None:
        progress(f"  {name}: {line}")

    progress(f"{name}: ingest + build")
    ingest(IngestConfig(format=fmt, path=path), out_dir=sqlite_cfg.data_dir, log=quiet)
    build(sqlite_cfg, log=quiet)
    progress(f"{name}: apply" + (" + materialize (sqlite)" if online else ""))
    sqlite_store = open_store(sqlite_cfg)
    apply(sqlite_store, log=quiet)
    if not online:
        return sqlite_cfg, sqlite_store, None
    materialize(sqlite_store, log=quiet)
    progress(f"{name}: apply + materialize (redis {os.environ['REDIS_CONNECTION_STRING']})")
    redis_store = open_store(sqlite_cfg.model_copy(update={"online_store": "redis"}))
    apply(redis_store, log=quiet)
    materialize(redis_store, log=quiet)
    return sqlite_cfg, sqlite_store, redis_store


def start_redis() -> tuple[subprocess.Popen, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            if client.ping():
                break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    else:
        proc.terminate()
        raise RuntimeError(f"redis-server did not answer on port {port}")
    os.environ["REDIS_CONNECTION_STRING"] = f"127.0.0.1:{port}"
    return proc, port


def time_calls(fn: Callable[[list[int]], object], batches: list[list[int]]) -> np.ndarray:
    """Milliseconds per call after ``WARMUP`` untimed calls."""
    for users in batches[:WARMUP]:
        fn(users)
    timed = batches[WARMUP:]
    out = np.empty(len(timed))
    for i, users in enumerate(timed):
        began = time.perf_counter()
        fn(users)
        out[i] = (time.perf_counter() - began) * 1e3
    return out


def entity_keys(users: list[int]) -> list[bytes]:
    return [serialize_entity_key(EntityKey(join_keys=["user_id"],
                                           entity_values=[Value(int64_val=u)]),
                                 entity_key_serialization_version=3) for u in users]


def sqlite_reader(db: Path, table: str) -> Callable[[list[int]], object]:
    """The floor: Feast's SQLite SELECT (same rows, same order), no converters, no decoding."""
    conn = sqlite3.connect(db)

    def read(users: list[int]):
        keys = entity_keys(users)
        sql = (f'SELECT entity_key, feature_name, value, event_ts FROM "{table}" '
               f"WHERE entity_key IN ({','.join('?' * len(keys))}) ORDER BY entity_key")
        rows = conn.execute(sql, keys).fetchall()
        assert len(rows) == 3 * len(users), (len(rows), len(users))
        return rows

    return read


def redis_reader(port: int, project: str) -> Callable[[list[int]], object]:
    """The floor: HMGET of the user_history fields and timestamp, one pipeline per batch."""
    client = redis.Redis(host="127.0.0.1", port=port)
    fields = [_mmh3(f"user_history:{f}") for f in HISTORY_FEATURES] + ["_ts:user_history"]
    suffix = project.encode()

    def read(users: list[int]):
        keys = [k + suffix for k in entity_keys(users)]
        if len(keys) == 1:
            values = [client.hmget(keys[0], fields)]
        else:
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, fields)
                values = pipe.execute()
        assert all(v[0] is not None for v in values), "missing user_history row"
        return values

    return read


def sdk_reader(store, features, request_ts: int | None = None) -> Callable[[list[int]], object]:
    def read(users: list[int]):
        extra = {} if request_ts is None else {"request_ts": request_ts}
        rows = [{"user_id": u, **extra} for u in users]
        return store.get_online_features(features=features, entity_rows=rows).to_dict()

    return read


def online_cases(cfg, stores: dict, redis_port: int | None, requests: int) -> list[dict]:
    events = pd.read_parquet(cfg.data_dir / "events.parquet",
                             columns=["user_id", "event_timestamp"])
    users = sorted(events["user_id"].unique().tolist())
    as_of = int(events["event_timestamp"].max().timestamp())
    rng = random.Random(SEED)
    plan = {1: [[rng.choice(users)] for _ in range(requests + WARMUP)],
            BATCH: [rng.sample(users, BATCH) for _ in range(requests + WARMUP)]}
    results = []
    for backend, store in stores.items():
        if backend == "sqlite":
            raw = sqlite_reader(cfg.data_dir / "online_store.db", f"{store.project}_user_history")
        else:
            raw = redis_reader(redis_port, store.project)
        sdk = sdk_reader(store, HISTORY_REFS)
        service = sdk_reader(store, store.get_feature_service("retrieval_v1"), as_of)
        raw_ms = {}
        for n in (1, BATCH):
            progress(f"online {backend}: {n} user(s) x {requests} requests")
            raw_ms[n] = time_calls(raw, plan[n])
            results.append(dict(backend=backend, users=n, case="raw", ms=raw_ms[n]))
            results.append(dict(backend=backend, users=n, case="SDK user_history",
                                ms=time_calls(sdk, plan[n]), raw=raw_ms[n]))
        progress(f"online {backend}: retrieval_v1, 1 user x {requests} requests")
        results.append(dict(backend=backend, users=1, case="SDK retrieval_v1",
                            ms=time_calls(service, plan[1]), raw=raw_ms[1]))
    return results


def pit_case(name: str, store, cfg, sample: int) -> dict:
    events = pd.read_parquet(cfg.data_dir / "events.parquet",
                             columns=["user_id", "item_id", "event_timestamp"])
    frame = events.assign(event_timestamp=events["event_timestamp"] - pd.Timedelta(seconds=1))
    note = "all events"
    if sample and len(frame) > sample:
        frame = frame.sample(n=sample, random_state=SEED)
        note = f"random sample of {sample:,} of {len(events):,} events (seed {SEED})"
    progress(f"point-in-time {name}: ranking_v1 over {len(frame):,} rows ({note})")
    began = time.perf_counter()
    try:
        result = training_set(store, frame, "ranking_v1")
    except pa.ArrowException as exc:
        progress(f"point-in-time {name}: FAILED: {type(exc).__name__}: {exc}")
        return dict(dataset=name, rows=len(frame), seconds=None, columns=0,
                    note=f"FAILED ({type(exc).__name__}: {exc})")
    seconds = time.perf_counter() - began
    assert len(result) == len(frame), (len(result), len(frame))
    return dict(dataset=name, rows=len(frame), seconds=seconds, note=note,
                columns=result.shape[1])


def report(online: list[dict], pit: list[dict], requests: int) -> None:
    print(f"\n=== Online reads ({requests} timed requests per case after {WARMUP} warm-up; ms)")
    print(f"{'backend':8} {'users':>5}  {'case':18} {'p50':>8} {'p95':>8} {'p99':>8} "
          f"{'mean':>8}  {'SDK/raw p50':>11} {'SDK/raw p99':>11}")
    for r in online:
        p50, p95, p99 = np.percentile(r["ms"], [50, 95, 99])
        ratio = ""
        if "raw" in r:
            raw50, raw99 = np.percentile(r["raw"], [50, 99])
            ratio = f"{p50 / raw50:11.1f}x {p99 / raw99:10.1f}x"
        print(f"{r['backend']:8} {r['users']:>5}  {r['case']:18} {p50:8.3f} {p95:8.3f} "
              f"{p99:8.3f} {r['ms'].mean():8.3f}  {ratio}")
    if pit:
        print("\n=== Point-in-time retrieval (training_set, ranking_v1, DuckDB offline store)")
        print(f"{'dataset':12} {'rows':>9} {'cols':>5} {'seconds':>8} {'rows/s':>9}  entity frame")
        for r in pit:
            timing = (f"{'-':>8} {'-':>9}" if r["seconds"] is None else
                      f"{r['seconds']:8.1f} {r['rows'] / r['seconds']:>9,.0f}")
            print(f"{r['dataset']:12} {r['rows']:>9,} {r['columns']:>5} {timing}  {r['note']}")
    print("\n=== Targets (information, not asserted): SDK user_history read, 1 user, p99")
    for r in online:
        if r["case"] == "SDK user_history" and r["users"] == 1:
            p99, target = np.percentile(r["ms"], 99), TARGET_P99_MS[r["backend"]]
            verdict = "PASS" if p99 <= target else "MISS"
            print(f"{r['backend']:8} p99 {p99:7.3f} ms  target <= {target:.0f} ms  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="Workspaces (default: a temporary folder, removed at the end).")
    parser.add_argument("--requests", type=int, default=2000, help="Timed reads per case.")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--skip-pit", action="store_true", help="No point-in-time retrieval.")
    parser.add_argument("--pit-sample", type=int, default=0,
                        help="Sample the point-in-time frames to N rows (0: every event).")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="irec-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    progress(f"workdir {workdir}")
    redis_proc, port = start_redis()
    progress(f"redis-server pid {redis_proc.pid} on 127.0.0.1:{port}")
    try:
        online, pit = [], []
        for i, name in enumerate(args.datasets):
            if i > 0 and args.skip_pit:
                break
            cfg, sqlite_store, redis_store = prepare(name, workdir, online=i == 0)
            if i == 0:
                online = online_cases(cfg, {"sqlite": sqlite_store, "redis": redis_store},
                                      port, args.requests)
            if not args.skip_pit:
                pit.append(pit_case(name, sqlite_store, cfg, args.pit_sample))
        report(online, pit, args.requests)
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    progress("done")


if __name__ == "__main__":
    main()
