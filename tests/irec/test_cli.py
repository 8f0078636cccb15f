"""The command line: feature commands, training and promotion, and clean errors.

The README quick start (`make run`, the `irec run` command) is tests/test_readme.py.
"""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from irec.cli import app
from serving import package

runner = CliRunner()


def test_feature_commands_on_a_workspace(ml100k_workspace, tmp_path):
    repo = ["--repo-path", str(ml100k_workspace.repo_path)]
    online = runner.invoke(app, ["features", "online", "--user", "7", "--user", "8", *repo,
                                 "--request-ts", "893286638"])
    assert online.exit_code == 0, online.output
    rows = [json.loads(line) for line in online.output.strip().splitlines()]
    assert [r["user_id"] for r in rows] == [7, 8]
    assert all(len(r["hist_item_ids"]) == 50 for r in rows)

    entities = tmp_path / "entities.csv"
    entities.write_text("user_id,item_id,event_timestamp\n1,1,1998-01-01T00:00:00Z\n"
                        "2,50,1998-03-01T00:00:00Z\n")
    out = tmp_path / "train.parquet"
    made = runner.invoke(app, ["features", "training-set", "--entities", str(entities),
                               "--out", str(out), *repo])
    assert made.exit_code == 0, made.output
    frame = pd.read_parquet(out)
    assert frame.title.tolist() == ["Toy Story (1995)", "Star Wars (1977)"]

    again = runner.invoke(app, ["features", "materialize", "--incremental", *repo])
    assert again.exit_code == 0, again.output


def test_bad_input_is_one_error_line_and_exit_2(tmp_path):
    bad = tmp_path / "events.csv"
    bad.write_text("user_id,item_id,rating,timestamp\n1,2,4,100\n1,3,11,200\n")
    result = runner.invoke(app, ["ingest", "--format", "generic", "--path", str(bad),
                                 "--repo-path", str(tmp_path / "ws")])
    assert result.exit_code == 2
    assert "error: events.csv line 3, field 'rating': 11.0 is outside [1.0, 5.0]" in result.output
    assert "Traceback" not in result.output

    config = tmp_path / "bad.yaml"
    config.write_text("ingest:\n  formt: sasrec\n")
    result = runner.invoke(app, ["ingest", "--config", str(config)])
    assert result.exit_code == 2 and "formt" in result.output and "Traceback" not in result.output

    result = runner.invoke(app, ["features", "build", "--repo-path", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "run `irec ingest` first" in result.output


def test_train_command_trains_packages_and_reports(ml100k_workspace, ray_cluster, tmp_path):
    result = runner.invoke(app, ["train", "--repo-path", str(ml100k_workspace.repo_path),
                                 "--storage-path", str(tmp_path), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "package: saved interest:" in result.output and "promote:" in result.output
    runs = list((tmp_path / "interest").iterdir())  # this run's own folder
    assert len(runs) == 1 and f"train: run {runs[0].name} in {runs[0]}" in result.output
    run = runs[0]
    assert [line.split(" loss")[0] for line in result.output.splitlines()
            if line.startswith("train: epoch")] == ["train: epoch 1/2", "train: epoch 2/2"]
    report = json.loads((run / "report.json").read_text())
    assert set(report["test"]) == {"interest transformer", "popularity", "BPR-MF", "biased MF"}
    assert report["test"]["BPR-MF"]["ndcg@10"] > 0 and report["test"]["biased MF"]["rmse"] < 2
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert report["model"].startswith("interest:")
    assert "| popularity |" in (run / "report.md").read_text()
    assert report["run"] == run.name

    trained = package.load(report["model"])
    worse = package.save(trained.model, trained.items, metrics={package.SCORE: 0.0},
                         dataset_fingerprint="0" * 64,
                         feature_services=trained.metadata["feature_services"],
                         genre_names=trained.metadata["genre_names"], log=lambda _: None)
    refused = runner.invoke(app, ["promote", worse])
    assert refused.exit_code == 1 and "lost by" in refused.output
    missing = runner.invoke(app, ["promote", "interest:doesnotexist"])
    assert missing.exit_code == 2 and "error:" in missing.output


def test_train_resume_of_a_run_that_is_not_there_is_one_error_line(ml100k_workspace, tmp_path):
    args = ["train", "--repo-path", str(ml100k_workspace.repo_path), "--storage-path",
            str(tmp_path)]
    missing = runner.invoke(app, [*args, "--resume", "20260101-000000-abcd"])
    assert missing.exit_code == 2, missing.output
    assert "error: no run 20260101-000000-abcd in" in missing.output
    assert "nothing to resume" in missing.output and "Traceback" not in missing.output
    malformed = runner.invoke(app, [*args, "--resume", "../elsewhere"])
    assert malformed.exit_code == 2 and "training.resume" in malformed.output


def test_promote_refuses_a_worse_model_and_force_promotes_it_with_a_warning(
        untrained, monkeypatch, tmp_path):
    monkeypatch.setattr(package, "_champions_file", lambda: tmp_path / "champions.json")
    model, data, items, services = untrained

    def saved(score: float) -> str:
        return package.save(model, items, metrics={package.SCORE: score},
                            dataset_fingerprint="c" * 64, feature_services=services,
                            genre_names=data.genre_names, log=lambda _: None)

    champion, worse = saved(0.05), saved(0.04)
    assert runner.invoke(app, ["promote", champion]).exit_code == 0
    refused = runner.invoke(app, ["promote", worse])
    assert refused.exit_code == 1, refused.output
    assert f"{worse} not promoted: {package.SCORE} 0.0400 vs champion {champion} 0.0500" in (
        refused.output)
    assert f"`irec promote --force {worse}` promotes it regardless" in refused.output
    assert package.champion() == champion

    forced = runner.invoke(app, ["promote", "--force", worse])
    assert forced.exit_code == 0, forced.output
    first, second = forced.output.splitlines()[:2]
    assert first == (f"warning: forced: {worse} promoted although the comparison refused it "
                     f"({package.SCORE} 0.0400 vs champion {champion} 0.0500; needs +0.0000, "
                     "lost by 0.0100)")
    assert second.startswith(f"{worse} is champion")
    assert package.champion() == worse

    nan = runner.invoke(app, ["promote", "--force", saved(float("nan"))])
    assert nan.exit_code == 1 and "not a number" in nan.output and "warning" not in nan.output
    assert package.champion() == worse
