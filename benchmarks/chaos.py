"""Chaos: the app with two replicas per stage under closed-loop load, while things break.

    python benchmarks/chaos.py --config configs/tiny.yaml      # after `make run` (a champion)

The app reads its online features from its own ``redis-server`` (started here, on a free port,
materialized from the workspace). 8 clients send requests back to back, each retrying a
failed request (connection error, 5xx) up to 3 times, 50 ms apart, as a production client
would. Phases, in order:

1. baseline, 10 s;
2. kill -9 one replica of each stage in turn (Retrieval, Intent, Ranking, Events, Ingress): each
   phase lasts until Serve has replaced the replica (at least 10 s);
3. Redis stopped for 10 s, then started again (its data saved first, as a persistent Redis);
4. Redis SIGSTOPped for 10 s (a hung server keeps its connections), then SIGCONT;
5. after: 100 requests one by one.

Per phase it prints requests, status codes, answers with the feature-store fallback, retries,
success, p50/p99/max latency, and the time until full recovery (Serve's replica back, or the
first answer from Redis again). Goals: >= 99.9 % success with retries through a replica kill;
no 5xx and every answer within request_timeout_s during the Redis faults; 100/100 after.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers: RedisProcess

from irec.config import PlatformConfig  # noqa: E402
from irec.console import session  # noqa: E402
from ray_apps.config import STAGES  # noqa: E402
from serving.auth import client_token, ensure_local_token  # noqa: E402
from tests.helpers import RedisProcess, replica_pids  # noqa: E402

FALLBACK = "feature store unavailable"


@dataclass
class Outcome:
    phase: str
    status: int  # 0: no answer (connection error) after every retry
    ms: float
    attempts: int
    fallback: bool


@dataclass
class Load:
    """8 closed-loop clients; each outcome is labelled with the phase it ended in."""

    url: str
    token: str | None
    users: list[int]
    clients: int = 8
    retries: int = 3
    phase: str = "baseline"
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def one(self, session: requests.Session, user: int) -> Outcome:
        began, status, fallback, attempts = time.perf_counter(), 0, False, 0
        while attempts <= self.retries:
            attempts += 1
            try:
                reply = session.post(self.url, json={"user_id": user, "n": 10}, timeout=30)
                status = reply.status_code
                if status < 500:
                    fallback = status == 200 and FALLBACK in reply.json()["cold_start_reason"]
                    break
            except requests.RequestException:
                status = 0
            time.sleep(0.05)
        return Outcome(self.phase, status, (time.perf_counter() - began) * 1000, attempts,
                       fallback)

    def client(self, seed: int) -> None:
        session = requests.Session()
        if self.token:
            session.headers["Authorization"] = f"Bearer {self.token}"
        rng = np.random.default_rng(seed)
        while not self.stop.is_set():
            self.outcomes.append(self.one(session, int(rng.choice(self.users))))

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True)
                        for i in range(self.clients)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def wait_replicas(app: str, stage: str, count: int, gone: int, timeout_s: float) -> float:
    """Seconds until ``stage`` has ``count`` live replicas again, none of them ``gone``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        pids = replica_pids(app, stage)
        if len(pids) >= count and gone not in pids:
            from ray import serve

            status = serve.status().applications[app].deployments[stage].status
            if status == "HEALTHY":
                return time.monotonic() - began
        time.sleep(0.5)
    return float("nan")


def served_from_redis(url: str, token: str | None, user: int) -> bool:
    try:
        reply = requests.post(url, json={"user_id": user, "n": 10}, timeout=30,
                              headers={"Authorization": f"Bearer {token}"} if token else {})
    except requests.RequestException:
        return False
    return reply.status_code == 200 and FALLBACK not in reply.json()["cold_start_reason"]


def until(predicate, timeout_s: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if predicate():
            return time.monotonic() - began
        time.sleep(0.1)
    return float("nan")


def report(outcomes: list[Outcome], phases: list[str], recovery: dict[str, float],
           deadline_s: float, echo=print) -> None:
    echo(f"{'phase':<18}{'requests':>9}  {'codes':<22}{'fallback':>9}{'retried':>8}"
          f"{'success':>9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'late':>5}{'recovery':>10}")
    for phase in phases:
        mine = [o for o in outcomes if o.phase == phase]
        if not mine:
            continue
        ms = np.array([o.ms for o in mine])
        codes = ", ".join(f"{c or 'none'}:{n}" for c, n in sorted(Counter(
            o.status for o in mine).items()))
        ok = sum(o.status == 200 for o in mine) / len(mine)
        late = sum(o.ms > deadline_s * 1000 for o in mine)
        back = recovery.get(phase)
        echo(f"{phase:<18}{len(mine):>9}  {codes:<22}{sum(o.fallback for o in mine):>9}"
              f"{sum(o.attempts > 1 for o in mine):>8}{ok:>9.3%}{np.percentile(ms, 50):>8.1f}"
              f"{np.percentile(ms, 99):>8.1f}{ms.max():>8.1f}{late:>5}"
              f"{'' if back is None else f'{back:.1f} s':>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--repo-path", default=None, help="Feature workspace (the preset's).")
    parser.add_argument("--phase-s", type=float, default=10.0)
    parser.add_argument("--verbose", action="store_true", help="Library logs here, not a file.")
    options = parser.parse_args()
    with session("chaos", options.verbose) as console:
        chaos(options, console.echo)


def chaos(options: argparse.Namespace, echo) -> None:

    import ray

    from features.store import apply, materialize, open_store
    from ray_apps.app import start
    from ray_apps.config import DeploymentConfig

    cfg = PlatformConfig.load(options.config, {"features.repo_path": options.repo_path} if
                              options.repo_path else {})
    redis = RedisProcess(Path(tempfile.mkdtemp(prefix="irec-chaos-redis-")))
    redis.start()
    os.environ["REDIS_CONNECTION_STRING"] = redis.connection  # replicas inherit it
    features = cfg.features.model_copy(update={"online_store": "redis"})
    two = DeploymentConfig(num_replicas=2, ray_actor_options={"num_cpus": 0.1})
    serving = cfg.serving.model_copy(update={"deployments": {s: two for s in STAGES}})
    cfg = cfg.model_copy(update={"features": features, "serving": serving})
    try:
        store = open_store(features)
        apply(store, log=lambda _: None)
        echo("chaos: materializing the features into a fresh redis-server ...")
        materialize(store, log=echo)
        ensure_local_token(serving.auth)
        token = client_token(serving.auth)
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        began = time.monotonic()
        start(cfg.app_args())
        echo(f"chaos: app up with 2 replicas per stage in {time.monotonic() - began:.0f}s")
        run(cfg, redis, token, options.phase_s, echo)
    finally:
        redis.close()


def run(cfg: PlatformConfig, redis: RedisProcess, token: str | None, phase_s: float,
        echo=print) -> None:
    import pandas as pd

    url = f"http://127.0.0.1:{cfg.serving.http_port}/recommend"
    events = pd.read_parquet(cfg.features.data_dir / "events.parquet", columns=["user_id"])
    users = sorted(int(u) for u in events.user_id.unique())
    recovery: dict[str, float] = {}
    phases = ["baseline"]
    with Load(url, token, users) as load:
        time.sleep(phase_s)
        for stage in STAGES:
            load.phase = phase = f"kill {stage}"
            phases.append(phase)
            victim = replica_pids("irec", stage)[0]
            os.kill(victim, signal.SIGKILL)
            tick = time.monotonic()
            recovery[phase] = wait_replicas("irec", stage, 2, victim, 120)
            time.sleep(max(0.0, phase_s - (time.monotonic() - tick)))
            echo(f"chaos: {phase}: replica back in {recovery[phase]:.1f}s")
        for phase, (breaks, mends) in {"redis stopped": (redis.stop, redis.start),
                                       "redis SIGSTOP": (redis.pause, redis.resume)}.items():
            load.phase = phase
            phases.append(phase)
            breaks()
            time.sleep(phase_s)
            mends()
            load.phase = phase + " +after"
            phases.append(load.phase)
            recovery[load.phase] = until(lambda: served_from_redis(url, token, users[0]), 60)
            time.sleep(2)
            echo(f"chaos: {phase}: served from Redis again {recovery[load.phase]:.1f}s after "
                  "it returned")
    after = Load(url, token, users)
    after.phase = "after (1 by 1)"
    phases.append(after.phase)
    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    after.outcomes = [after.one(session, users[i % len(users)]) for i in range(100)]
    report(load.outcomes + after.outcomes, phases, recovery, cfg.serving.request_timeout_s, echo)
    ok = sum(o.status == 200 and not o.fallback for o in after.outcomes)
    echo(f"after recovery: {ok}/100 answered from the live features")


if __name__ == "__main__":
    main()
