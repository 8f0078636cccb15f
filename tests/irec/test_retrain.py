"""Retraining's fair gate (irec.pipeline.retrain) with real Ray Train, Feast and BentoML: the
new model and the champion are scored on the same held-out window, and promotion follows that
comparison both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from irec.config import PlatformConfig
from irec.pipeline import WINDOW_SCORE, retrain
from serving import package

quiet = lambda _: None  # noqa: E731


@pytest.fixture(scope="module")
def setup(ml100k_workspace, ray_cluster, untrained, tmp_path_factory):
    """The tiny preset over the session workspace, and the dataset's end as the cutoff (the
    live tests log events at today's date; the window is the data's last week)."""
    cfg = PlatformConfig.load("configs/tiny.yaml", {
        "features.repo_path": str(ml100k_workspace.repo_path),
        "training.storage_path": str(tmp_path_factory.mktemp("runs")),
        "training.epochs": 3, "training.window_days": 7})
    events = pd.read_parquet(ml100k_workspace.data_dir / "events.parquet")
    return cfg, events.event_timestamp.max() + pd.Timedelta(seconds=1)


def _champion_of(untrained) -> str:
    """An untrained model, forced champion: any trained challenger should beat it."""
    model, data, items, services = untrained
    tag = package.save(model, items, metrics={package.SCORE: 0.99},
                       dataset_fingerprint="0" * 64, feature_services=services,
                       genre_names=data.genre_names, log=quiet)
    assert package.promote(tag, force=True).promoted
    return tag


def test_the_gate_judges_both_models_on_the_same_window_and_promotes_the_better(setup,
                                                                                untrained):
    cfg, cutoff = setup
    weak = _champion_of(untrained)  # its stored validation score (0.99) would win
    report = retrain(cfg, log=quiet, cutoff=cutoff)
    window = report["window"]
    assert window["targets"] > 100 and pd.Timestamp(window["end"]) == cutoff
    table = window["table"]
    mine, theirs = table["interest transformer (new)"], table[f"champion {weak}"]
    assert mine["ndcg@10"] > theirs["ndcg@10"]
    assert report["champion"] and package.champion() == report["model"]
    assert "may have seen the window" in report["gate"]["champion_scored"]  # nothing recorded
    assert f"{WINDOW_SCORE} {mine['ndcg@10']:.4f}" in report["gate"]["message"]
    stored = package.load(report["model"]).metrics
    assert stored[WINDOW_SCORE] == pytest.approx(mine["ndcg@10"])
    text = (Path(cfg.training.storage_path) / cfg.training.run_name / report["run"]
            / "report.md").read_text()
    assert "Held-out window" in text and report["gate"]["message"] in text


def test_the_gate_refuses_a_worse_challenger_on_the_window(setup):
    cfg, cutoff = setup
    champion = package.champion()
    assert champion is not None  # the previous test's model
    barely = cfg.model_copy(update={"training": cfg.training.model_copy(
        update={"epochs": 1, "lr": 1e-7})})
    report = retrain(barely, log=quiet, margin=0.0, cutoff=cutoff)
    assert not report["champion"] and package.champion() == champion
    table = report["window"]["table"]
    mine, theirs = table["interest transformer (new)"], table[f"champion {champion}"]
    assert mine["ndcg@10"] < theirs["ndcg@10"]
    assert report["gate"]["champion_scored"] == "scored on the same window"  # trained before
    message = report["gate"]["message"]
    assert "not promoted" in message and f"{theirs['ndcg@10']:.4f}" in message
    runs = Path(cfg.training.storage_path) / cfg.training.run_name
    assert json.loads((runs / report["run"] / "report.json").read_text())["gate"] == \
        report["gate"]


def test_a_window_with_nothing_before_it_is_refused_naming_the_dates(setup):
    cfg, cutoff = setup
    wide = cfg.model_copy(update={"training": cfg.training.model_copy(
        update={"window_days": 400})})
    with pytest.raises(ValueError, match="400-day window .* starts at or before the first"):
        retrain(wide, log=quiet, cutoff=cutoff)
