"""The replay benchmark (benchmarks/replay.py) on a short slice: the loop's invariants, not its
figures. Real ingest, Feast, Ray Train, BentoML and Ray Serve; two simulated days of
MovieLens-100K after the cut, through the platform twice, with a retraining after the first
day in (c)."""

from __future__ import annotations

import argparse

from irec.config import PlatformConfig
from tests.helpers import free_port


def test_a_short_replay_loses_no_event_and_fails_no_request(ray_cluster, datasets, tmp_path):
    from benchmarks.replay import run

    cfg = PlatformConfig.load("configs/tiny.yaml", {
        "ingest.path": str(datasets / "ml-100k"), "training.epochs": 2,
        "serving.http_port": free_port(), "serving.grpc_port": free_port(),
        "serving.auth.tokens_file": str(tmp_path / "tokens.yaml")})
    options = argparse.Namespace(cut=0.8, limit=700, retrain_days=1.0,
                                 out=tmp_path / "replay.png")
    got = run(cfg, options, tmp_path / "root", lambda _: None)

    stream, ranks, live = got["stream"], got["ranks"], got["live"]
    scored = int(stream.scored.sum())
    assert 0 < scored < len(stream) == 700 and len(ranks) == scored
    assert stream.ts.is_monotonic_increasing
    for name, result in live.items():
        assert result.sent == result.logged == result.online == len(stream), name
        assert result.failed == 0 and len(result.ranks) == scored, name
    loop = live["(c) live + retraining"]
    assert live["(b) live features"].retrains == []
    assert loop.retrains, "a day of replayed time passed: one retraining at least"
    for retrain in loop.retrains:
        assert "error" not in retrain, retrain
        assert retrain["gate"] and retrain["seconds"] > 0
        if retrain["promoted"]:
            assert retrain["rollout"] == "rolled out"
    assert loop.failed_in_rollout == 0
    assert options.out.stat().st_size > 10_000
