"""Replay MovieLens-100K's history after a time cut, and score what each system would have shown.

    python -m benchmarks.replay --config configs/tiny.yaml --limit 3000   # a slice, ~10 min
    python -m benchmarks.replay --config configs/ml-100k.yaml        # the full preset

1. Cut: the raw ratings are split by time at ``--cut`` (0.8) of their events. A workspace of
   its own (temporary, SQLite online store) ingests and builds the features of what came
   before, and the preset trains on it (Ray Train; a private BentoML store).
2. Replay: the events after the cut, in time order. Before each one, every system ranks the
   whole catalogue for that user and is scored on the item the user actually took next
   (progressive validation: online HR@10 and NDCG@10), then the event is revealed:
   (a) the model and its features frozen at the cut (histories and seen items as of then);
   (b) the same model on the running platform, its features live: ``/recommend`` before and
       ``POST /events`` after each event, the serving clock following the replayed days;
   (c) as (b), plus every simulated week a retraining in the background, gated on the
       newest week and rolled out under the replay (``benchmarks.replay_live``);
   (d) popularity counted live, seen items live;
   (e) BPR-MF fitted at the cut, seen items live.
   (a), (d) and (e) are scored in-process over the same stream, (b) and (c) through HTTP
   (only the top 10 is asked for: a target outside it scores 0, as in the others). Most
   replayed events are by users who arrive after the cut: each one's first event is replayed
   but not scored, and (a) and (e) answer such users with popularity as of the cut.
3. Report: the table; events sent, in the offline log and counted online; requests failed
   (during rollouts); event-to-visible latency (after a hit, until the item is excluded);
   each retraining's time, gate decision and rollout; a PNG of weekly online NDCG@10 with the
   retrainings marked (``--out``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.replay_live import percentile, run_live, workspace  # noqa: E402
from irec.config import PlatformConfig  # noqa: E402
from irec.console import session  # noqa: E402

RAW_COLUMNS = ["raw_user_id", "raw_item_id", "rating", "ts"]


def cut_raw(source: Path, out: Path, fraction: float) -> tuple[pd.DataFrame, int]:
    """A copy of the ML-100K folder with only the ratings before the cut; (the ratings after
    it, in time order; the cut's epoch second)."""
    ratings = pd.read_csv(source / "u.data", sep="\t", names=RAW_COLUMNS)
    cut = int(np.quantile(ratings.ts, fraction))
    out.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.name != "u.data":
            shutil.copy(path, out / path.name)
    ratings[ratings.ts < cut].to_csv(out / "u.data", sep="\t", header=False, index=False)
    after = ratings[ratings.ts >= cut].sort_values("ts", kind="stable").reset_index(drop=True)
    return after, cut


def prepare(cfg: PlatformConfig, root: Path, fraction: float, echo) -> tuple:
    """Ingest, build, apply and materialize the cut; train and package on it."""
    from data.ingest import ingest
    from features.build import build
    from features.store import apply, materialize, open_store
    from irec.pipeline import run as run_training

    stream, cut = cut_raw(Path(cfg.ingest.path), root / "raw", fraction)
    quiet = lambda _: None  # noqa: E731
    cfg = cfg.model_copy(update={
        "ingest": cfg.ingest.model_copy(update={"path": root / "raw"}),
        "features": cfg.features.model_copy(update={"repo_path": root / "workspace",
                                                    "online_store": "sqlite"}),
        "training": cfg.training.model_copy(update={"storage_path": str(root / "runs"),
                                                    "ablations": []})})
    ingest(cfg.ingest, cfg.features.data_dir, log=quiet)
    build(cfg.features, log=quiet)
    store = open_store(cfg.features)
    apply(store, log=quiet)
    materialize(store, log=quiet)
    echo(f"replay: cut at {pd.Timestamp(cut, unit='s'):%Y-%m-%d %H:%M}; training on what came "
         "before ...")
    report = run_training(cfg, log=quiet)
    echo(f"replay: trained {report['model']} in {report['seconds']:.0f}s")
    return cfg, report["model"], stream, cut


def known_stream(cfg: PlatformConfig, stream: pd.DataFrame) -> pd.DataFrame:
    """The replayed events with the cut's ids; users new since the cut get the next ids in
    order of arrival (an event of a new id starts that user). ``scored``: the item is known at
    the cut and the user has an earlier event (before the cut or in the replay)."""
    users = pd.read_parquet(cfg.features.data_dir / "users.parquet", columns=["user_id",
                                                                                "raw_user_id"])
    items = pd.read_parquet(cfg.features.data_dir / "items.parquet", columns=["item_id",
                                                                                "raw_item_id"])
    user_of = dict(zip(users.raw_user_id.astype(str), users.user_id, strict=True))
    arrivals = [u for u in stream.raw_user_id.astype(str).unique() if u not in user_of]
    user_of |= {u: int(users.user_id.max()) + k for k, u in enumerate(arrivals, 1)}
    item_of = dict(zip(items.raw_item_id.astype(str), items.item_id, strict=True))
    out = stream.assign(user_id=stream.raw_user_id.astype(str).map(user_of),
                        item_id=stream.raw_item_id.astype(str).map(item_of))
    known_user = out.user_id.isin(users.user_id) | out.duplicated("user_id")
    out["scored"] = out.item_id.notna() & known_user
    out["n"] = np.arange(len(out))
    return out


def ndcg(rank: np.ndarray) -> np.ndarray:
    return np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0)


def rank_of(scores: np.ndarray, target: int, seen: set[int]) -> int:
    """0-based rank of ``target`` in one row of scores (index 0 = padding), ``seen`` removed;
    ties count against the target."""
    beats = scores >= scores[target]
    beats[0] = False
    if seen:
        beats[[i for i in seen if i != target]] = False
    return int(beats.sum()) - 1


class Frozen:
    """(a): the packaged model over the histories (and seen items) as of the cut; a user new
    since then gets what a cold start got at the cut: popularity."""

    def __init__(self, cfg: PlatformConfig, events: pd.DataFrame, tag: str, cut: int,
                 num_items: int) -> None:
        from features.store import open_store, training_set
        from serving import package
        from training.data.sequences import HISTORY, pad

        model = package.load(tag).model
        users = np.sort(events.user_id.unique())
        at = pd.Timestamp(cut, unit="s", tz="UTC")
        hist = training_set(open_store(cfg.features),
                            pd.DataFrame({"user_id": users, "event_timestamp": at}), HISTORY)
        length = cfg.features.history_length
        inputs = (pad(hist.hist_item_ids, length, np.int64, 0),
                  pad(hist.hist_ratings, length, np.float32, np.nan),
                  pad(hist.hist_timestamps, length, np.int64, 0))
        with torch.no_grad():
            states = model.user_state(*map(torch.from_numpy, inputs))
            scores = model.score_items(states).numpy()  # (U, I+1)
        self.row = {int(u): k for k, u in enumerate(users)}
        self.scores = scores
        self.popular = np.bincount(events.item_id, minlength=num_items + 1).astype(np.float64)
        self.seen = events.groupby("user_id").item_id.agg(set).to_dict()

    def rank(self, user: int, item: int) -> int:
        row = self.row.get(user)
        scores = self.popular if row is None else self.scores[row]
        return rank_of(scores, item, self.seen.get(user, set()))

    def reveal(self, user: int, item: int) -> None:
        """Frozen: what happens after the cut is never seen."""


class LivePopularity:
    """(d): counts of every event so far, seen items live."""

    def __init__(self, events: pd.DataFrame, num_items: int) -> None:
        self.counts = np.bincount(events.item_id, minlength=num_items + 1).astype(np.float64)
        self.seen = events.groupby("user_id").item_id.agg(set).to_dict()

    def rank(self, user: int, item: int) -> int:
        return rank_of(self.counts, item, self.seen.get(user, set()))

    def reveal(self, user: int, item: int) -> None:
        self.counts[item] += 1
        self.seen.setdefault(user, set()).add(item)


class CutBPR(LivePopularity):
    """(e): BPR-MF fitted on the events before the cut, seen items live; a user new since
    then gets popularity as of the cut."""

    def __init__(self, events: pd.DataFrame, num_items: int, seed: int) -> None:
        from training.baselines.mf import fit_bpr

        super().__init__(events, num_items)
        self.popular = self.counts.copy()
        model = fit_bpr(events.user_id.to_numpy(), events.item_id.to_numpy(),
                        int(events.user_id.max()) + 1, num_items, seed=seed)
        with torch.no_grad():
            self.scores = model.scores(torch.arange(int(events.user_id.max()) + 1)).numpy()
        self.fitted = set(events.user_id.unique().tolist())

    def rank(self, user: int, item: int) -> int:
        scores = self.scores[user] if user in self.fitted else self.popular
        return rank_of(scores, item, self.seen.get(user, set()))

    def reveal(self, user: int, item: int) -> None:
        self.seen.setdefault(user, set()).add(item)


def replay(stream: pd.DataFrame, systems: dict, echo) -> pd.DataFrame:
    """Progressive validation: rank, score, then reveal; one row per scored event."""
    rows = []
    began = time.monotonic()
    for n, event in enumerate(stream.itertuples(index=False), 1):
        user, item = int(event.user_id), int(event.item_id)
        if event.scored:
            ranks = {name: system.rank(user, item) for name, system in systems.items()}
            rows.append({"ts": event.ts, **ranks})
        for system in systems.values():
            system.reveal(user, item)
        if n % 2000 == 0 or n == len(stream):
            rate = n / (time.monotonic() - began)
            echo(f"replay: {n:,}/{len(stream):,} events ({rate:,.0f}/s, ETA "
                 f"{(len(stream) - n) / rate:.0f}s)")
    return pd.DataFrame(rows)


def plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], retrains: list[int],
         path: Path) -> None:
    """Weekly mean online NDCG@10 of each system, retrainings as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, (ts, r) in curves.items():
        week = pd.to_datetime(ts, unit="s").to_period("W").start_time
        weekly = pd.Series(ndcg(r), index=week).groupby(level=0).mean()
        ax.plot(weekly.index, weekly.to_numpy(), marker="o", label=name)
    for k, at in enumerate(retrains):
        ax.axvline(pd.Timestamp(at, unit="s"), color="grey", linestyle="--",
                   label="retrain" if k == 0 else None)
    ax.set_ylabel("online NDCG@10 (weekly mean)")
    ax.set_title("MovieLens-100K replayed after the cut")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--cut", type=float, default=0.8, help="Fraction of events before it.")
    parser.add_argument("--limit", type=int, default=None, help="Replay only this many events.")
    parser.add_argument("--retrain-days", type=float, default=7.0,
                        help="Simulated days between retrainings in (c).")
    parser.add_argument("--out", type=Path, default=Path("replay.png"))
    parser.add_argument("--verbose", action="store_true", help="Library logs here, not a file.")
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="irec-replay-"))
    os.environ["BENTOML_HOME"] = str(root / "bentoml")  # never the user's model store
    try:
        with session("replay", options.verbose) as console:
            run(PlatformConfig.load(options.config), options, root, console.echo)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(cfg: PlatformConfig, options: argparse.Namespace, root: Path, echo) -> dict:
    """The whole replay under ``root``; what it measured (the report's figures)."""
    import ray
    from ray import serve

    from data.ingest import read_manifest
    from ray_apps.app import start_serve
    from ray_apps.config import STAGES, DeploymentConfig
    from serving.auth import client_token, ensure_local_token

    one = DeploymentConfig(num_replicas=1, ray_actor_options={"num_cpus": 0.1})
    cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(
        update={"deployments": {s: one for s in STAGES}})})
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    cfg, tag, stream, cut = prepare(cfg, root, options.cut, echo)
    stream = known_stream(cfg, stream.head(options.limit) if options.limit else stream)
    num_items = read_manifest(cfg.features.data_dir)["counts"]["items"]
    events = pd.read_parquet(cfg.features.data_dir / "events.parquet")  # the cut's
    systems = {"(a) frozen at the cut": Frozen(cfg, events, tag, cut, num_items),
               "(d) popularity, live": LivePopularity(events, num_items),
               "(e) BPR-MF at the cut": CutBPR(events, num_items, cfg.training.seed)}
    ranks = replay(stream, systems, echo)
    ensure_local_token(cfg.serving.auth)
    token = client_token(cfg.serving.auth, "write")
    start_serve(cfg.serving)
    live = {}
    for name, folder, retrain in (("(b) live features", "live", False),
                                  ("(c) live + retraining", "loop", True)):
        echo(f"replay: {name} through the platform ...")
        live[name] = run_live(workspace(cfg, root / folder), tag, stream, token,
                              retrain=retrain, every_s=options.retrain_days * 86_400,
                              echo=echo)
    serve.shutdown()
    report(stream, ranks, systems, live, options.out, echo)
    return {"stream": stream, "ranks": ranks, "live": live}


def report(stream: pd.DataFrame, ranks: pd.DataFrame, systems: dict, live: dict, out: Path,
           echo) -> None:
    echo(f"\nreplayed {len(stream):,} events after the cut, {len(ranks):,} scored (the "
         f"other {int((~stream.scored).sum()):,}: a user's first event)")
    echo(f"{'system':<26} {'HR@10':>7} {'NDCG@10':>8}")
    curves = {}
    for name in systems:
        curves[name] = (ranks.ts.to_numpy(), ranks[name].to_numpy())
    for name, result in live.items():
        ts, r = (np.array(c) for c in zip(*result.ranks, strict=True))
        curves[name] = (ts, r)
    for name, (_, r) in curves.items():
        echo(f"{name:<26} {float((r < 10).mean()):>7.4f} {float(ndcg(r).mean()):>8.4f}")
    for name, result in live.items():
        echo(f"{name}: sent {result.sent:,}, in the offline log {result.logged:,}, counted "
             f"online {result.online:,}; failed requests {result.failed} "
             f"({result.failed_in_rollout} during rollouts); event -> visible p50/p99 "
             f"{percentile(result.visible_ms, 50):.0f}/{percentile(result.visible_ms, 99):.0f} "
             f"ms over {len(result.visible_ms):,} hits")
        for r in result.retrains:
            echo(f"  retrain at {pd.Timestamp(r['at'], unit='s'):%Y-%m-%d}: {r['seconds']}s, "
                 f"{r.get('gate', r.get('error'))}; {r.get('rollout', 'not rolled out')}")
    marks = [r["at"] for result in live.values() for r in result.retrains]
    plot(curves, marks, out)
    echo(f"replay: weekly online NDCG@10 in {out}")


if __name__ == "__main__":
    main()
