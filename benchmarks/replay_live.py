"""The running platform under a replay (``benchmarks.replay``): (b) live features, (c) plus the
weekly retrain-gate-rollout loop.

One Serve app on a copy of the cut's workspace (its own SQLite online store), one replica per
stage. Day by day of replayed time: the serving clock (Retrieval's ``user_config``) moves to
the day's end, then every event of the day, in time order: ``/recommend`` for the user (n=10),
scored on the item the user took next, then ``POST /events`` with it. With ``retrain`` (c),
every ``every_s`` of replayed time (a week) starts a retraining in the background while the
replay goes on (``irec.pipeline``: features rebuilt with the logged events, the newest week
held out, new model and champion judged on it) and rolls the app out to a promoted model
(``ray_apps.rollout``: verified, put back on failure). Every request that fails is counted,
and so are those that fail while a rollout is in flight.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from irec.config import PlatformConfig

VIEWS = ["user_history", "user_stats", "item_stats", "user_profile", "item_profile",
         "item_text_embedding"]


@dataclass
class LiveResult:
    ranks: list[tuple[int, int]] = field(default_factory=list)  # (ts, rank; 10 = not in top 10)
    sent: int = 0
    logged: int = 0
    online: int = 0
    failed: int = 0
    failed_in_rollout: int = 0
    visible_ms: list[float] = field(default_factory=list)
    retrains: list[dict] = field(default_factory=list)


def workspace(cfg: PlatformConfig, root: Path) -> PlatformConfig:
    """A copy of the cut's workspace tables, applied and materialized into its own SQLite."""
    from features.store import apply, open_store

    data = root / "data"
    data.mkdir(parents=True)
    source = cfg.features.data_dir
    for path in [*source.glob("*.parquet"), source / "manifest.json", source / "features.json"]:
        shutil.copy(path, data / path.name)
    features = cfg.features.model_copy(update={"repo_path": root})
    store = open_store(features)
    apply(store, log=lambda _: None)
    store.materialize(datetime(1970, 1, 1, tzinfo=UTC), datetime.now(UTC), feature_views=VIEWS)
    training = cfg.training.model_copy(update={"storage_path": str(root / "runs")})
    return cfg.model_copy(update={"features": features, "training": training})


class Client:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def recommend(self, user: int) -> list[int] | None:
        """The top 10, or None when the request failed."""
        try:
            reply = self.session.post(f"{self.url}/recommend", json={"user_id": user, "n": 10},
                                      timeout=60)
        except requests.RequestException:
            return None
        return [i["item_id"] for i in reply.json()["items"]] if reply.ok else None

    def post(self, event: dict) -> bool:
        try:
            reply = self.session.post(f"{self.url}/events", json={"events": [event]}, timeout=60)
        except requests.RequestException:
            return False
        return reply.ok


class Loop:
    """(c): one retraining at a time in the background; its rollout under the replay."""

    def __init__(self, cfg: PlatformConfig, app: str, result: LiveResult, echo) -> None:
        self.cfg, self.app, self.result, self.echo = cfg, app, result, echo
        self.thread: threading.Thread | None = None
        self.rolling = threading.Event()
        # A rollout and a clock move both rewrite the app's Serve config: one at a time.
        self.config_lock = threading.Lock()

    def start(self, replay_ts: int) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.echo("replay: a retraining is still running; this week's is skipped")
            return
        self.thread = threading.Thread(target=self._retrain, args=(replay_ts,), daemon=True)
        self.thread.start()

    def _retrain(self, replay_ts: int) -> None:
        from irec.pipeline import refresh_features, retrain
        from ray_apps.rollout import RolloutFailed, RolloutRefused, rollout

        began = time.monotonic()
        quiet = lambda _: None  # noqa: E731
        cutoff = pd.Timestamp(replay_ts, unit="s", tz="UTC")
        record = {"at": replay_ts}
        try:
            refresh_features(self.cfg, quiet)
            report = retrain(self.cfg, log=quiet, cutoff=cutoff)
            record.update(model=report["model"], promoted=report["champion"],
                          gate=report["gate"]["message"])
            if report["champion"]:
                self.rolling.set()
                try:
                    with self.config_lock:
                        rollout(report["model"], self.app, timeout_s=600)
                    record["rollout"] = "rolled out"
                except (RolloutRefused, RolloutFailed) as exc:
                    record["rollout"] = f"failed: {exc}"
                finally:
                    self.rolling.clear()
        except ValueError as exc:  # e.g. a window with no target yet
            record["error"] = str(exc)
        record["seconds"] = round(time.monotonic() - began, 1)
        self.result.retrains.append(record)
        outcome = record.get("gate", record.get("error"))
        rolled = f"; {record['rollout']}" if "rollout" in record else ""
        self.echo(f"replay: retrain at {cutoff:%Y-%m-%d}: {outcome} ({record['seconds']}s"
                  f"{rolled})")

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


def set_clock(app: str, clock: int, lock: threading.Lock) -> None:
    """Move the serving clock: an in-place reconfigure of Retrieval (no restart)."""
    from ray_apps.app import apply
    from ray_apps.config import with_user_config
    from ray_apps.rollout import deployed_config

    with lock:
        apply(with_user_config(deployed_config(), {"clock": clock}, app), timeout_s=300)


def run_live(cfg: PlatformConfig, tag: str, stream: pd.DataFrame, token: str, *,
             retrain: bool, every_s: float, echo, app: str = "irec") -> LiveResult:
    """Replay ``stream`` (cut ids, time order) through a fresh app on ``cfg``'s workspace;
    the ``scored`` events are asked for first."""
    from data.event_log import EventLog
    from features.store import online_features, open_store
    from ray_apps.app import deploy

    first_day = int(stream.ts.min()) // 86_400 * 86_400
    serving = cfg.serving.model_copy(update={"model_tag": tag, "clock": first_day + 86_400})
    cfg = cfg.model_copy(update={"serving": serving})
    deploy({app: cfg.app_args()})
    client = Client(f"http://127.0.0.1:{cfg.serving.http_port}", token)
    result = LiveResult()
    loop = Loop(cfg, app, result, echo) if retrain else None
    lock = loop.config_lock if loop is not None else threading.Lock()
    store = open_store(cfg.features)
    users = sorted(int(u) for u in stream.user_id.unique())
    before = online_features(store, [{"user_id": u} for u in users],
                             ["user_stats:user_event_count"])["user_event_count"]
    began, next_retrain = time.monotonic(), first_day + every_s
    for n, (day, events) in enumerate(stream.groupby(stream.ts // 86_400 * 86_400), 1):
        set_clock(app, int(day) + 86_400, lock)
        if loop is not None and day >= next_retrain:
            loop.start(int(day))
            next_retrain += every_s
        for event in events.itertuples(index=False):
            _replay_one(client, event, result, loop)
        done = result.sent
        rate = done / (time.monotonic() - began)
        echo(f"replay {'(c)' if retrain else '(b)'}: day {n}, {done:,}/{len(stream):,} events "
             f"({rate:.1f}/s, ETA {(len(stream) - done) / rate:.0f}s)")
    if loop is not None:
        loop.join()
    logged = EventLog.of(cfg.features.data_dir).read()
    result.logged = int(logged.event_id.str.startswith("replay-").sum())
    after = online_features(store, [{"user_id": u} for u in users],
                            ["user_stats:user_event_count"])["user_event_count"]
    result.online = int(sum((a or 0) - (b or 0) for a, b in zip(after, before, strict=True)))
    return result


def _replay_one(client: Client, event, result: LiveResult, loop: Loop | None) -> None:
    user, item = int(event.user_id), int(event.item_id)
    rolling = loop is not None and loop.rolling.is_set()
    top = client.recommend(user) if event.scored else None
    if event.scored and top is None:
        result.failed += 1
        result.failed_in_rollout += int(rolling)
    elif top is not None:
        result.ranks.append((int(event.ts), top.index(item) if item in top else 10))
    body = {"event_id": f"replay-{event.n}", "user_id": user, "item_id": item,
            "timestamp": int(event.ts), "rating": float(event.rating)}
    posted = time.perf_counter()
    while not client.post(body):  # a retry of the same event_id is not counted twice
        result.failed += 1
        result.failed_in_rollout += int(rolling)
    result.sent += 1
    if top is not None and item in top:  # a hit: how soon is it excluded as seen?
        while (again := client.recommend(user)) is not None and item in again:
            pass
        result.visible_ms.append((time.perf_counter() - posted) * 1000)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")
