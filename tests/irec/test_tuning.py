"""``irec tune`` on ML-100K: Ray Tune trials over the Ray Train trainer, the winner written
as a preset that loads, the trials table and plot, and a finished search resumed as is."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from irec.cli import app
from irec.config import PlatformConfig
from irec.tuning import run


@pytest.fixture(scope="module")
def searched(ml100k_workspace, ray_cluster, tmp_path_factory):
    storage = tmp_path_factory.mktemp("tune")
    cfg = PlatformConfig.load("configs/tiny.yaml", {
        "features.repo_path": str(ml100k_workspace.repo_path), "training.epochs": 3,
        "training.storage_path": str(storage),
        "training.tune": {"trials": 3, "grace_epochs": 1, "max_concurrent": 2,
                          "space": {"lr": {"loguniform": [5e-4, 5e-3]},
                                    "model.hidden": {"choice": [16, 32]}}}})
    lines: list[str] = []
    found = run(Path("configs/tiny.yaml"), cfg, log=lines.append)
    return cfg, found, lines


def test_every_trial_is_in_the_table_best_first_and_within_the_space(searched):
    cfg, found, lines = searched
    table = pd.read_csv(found.folder / "trials.csv")
    assert len(table) == 3 and table.trial.is_unique
    assert table["best_val_ndcg@10"].is_monotonic_decreasing
    assert table.lr.between(5e-4, 5e-3).all() and set(table["model.hidden"]) <= {16, 32}
    assert table.epochs.between(1, 3).all() and (table.status == "full").any()
    assert set(table.status) <= {"full", "stopped"}
    for _, row in table.iterrows():  # each trial's best is the best epoch of its curve
        assert max(found.curves[row.trial]) == pytest.approx(row["best_val_ndcg@10"])
    assert any(line.startswith("tune: trial ") and "epoch 1" in line for line in lines)
    report = (found.folder / "report.md").read_text()
    assert all(trial in report for trial in table.trial)
    assert (found.folder / "trials.png").stat().st_size > 0


def test_the_winner_is_written_as_a_preset_that_loads(searched):
    cfg, found, _ = searched
    preset = PlatformConfig.load(found.folder / "preset.yaml")
    assert preset.training.lr == pytest.approx(found.best["lr"])
    assert preset.training.model.hidden == found.best["model.hidden"]
    assert preset.training.epochs == 3 and preset.features.repo_path == cfg.features.repo_path
    best = pd.read_csv(found.folder / "trials.csv").iloc[0]
    assert found.best_score == pytest.approx(best["best_val_ndcg@10"])


def test_a_finished_search_resumes_with_its_trials_and_trains_nothing(searched):
    cfg, found, _ = searched
    def runs() -> list[str]:  # every trial's Ray Train run folders
        return sorted(str(p.relative_to(found.folder)) for p in found.folder.glob("*/train/*"))

    before = runs()
    assert len(before) == 3
    again = run(Path("configs/tiny.yaml"), cfg, log=lambda _: None, resume=found.folder.name)
    assert again.trials.equals(found.trials) and again.best == found.best
    assert runs() == before


def test_resuming_a_search_that_does_not_exist_is_one_line(ml100k_workspace, tmp_path):
    result = CliRunner().invoke(app, ["tune", "--config", "configs/tiny.yaml", "--repo-path",
                                      str(ml100k_workspace.repo_path), "--storage-path",
                                      str(tmp_path), "--resume", "20261203-000000-abcd"])
    assert result.exit_code == 2, result.output
    assert "no search to resume in" in result.output
