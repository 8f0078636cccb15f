"""Ray Train fine-tuning on real Ray, real Feast data (ML-100K), CPU workers."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.train import TrainingFailedError

from irec.config import PlatformConfig
from tests.training.conftest import fit_preset, resolved
from training.baselines.popularity import evaluate_popularity
from training.config import TrainingConfig
from training.eval.evaluate import evaluate_model
from training.models.config import InterestModelConfig, LossWeights, ModelConfig
from training.train import (
    best_checkpoint,
    build_model,
    epoch_history,
    load_checkpoint,
    new_run_id,
    run_dir,
)


def _with(cfg: PlatformConfig, tmp_path, name: str, **training) -> PlatformConfig:
    update = {"storage_path": str(tmp_path), "run_name": name, **training}
    return cfg.model_copy(update={"training": cfg.training.model_copy(update=update)})


def test_tiny_preset_beats_popularity(ray_cluster, tiny, tmp_path):
    cfg, data = tiny
    result = fit_preset(_with(cfg, tmp_path, "tiny"), data)
    model = load_checkpoint(best_checkpoint(result), data)
    mine = evaluate_model(model, data, "test")
    popular = evaluate_popularity(data, "test")
    assert mine["ndcg@10"] > popular["ndcg@10"], (mine, popular)
    assert mine["hr@10"] > popular["hr@10"]
    # the saved model reproduces its scores exactly
    again = evaluate_model(load_checkpoint(best_checkpoint(result), data), data, "test")
    assert again == mine


def _epochs(result) -> list[int]:
    return [metrics["epoch"] for metrics in epoch_history(result)]


def test_worker_failure_resumes_from_the_last_checkpoint(ray_cluster, tiny, tmp_path):
    cfg, data = tiny
    short = {"epochs": 3, "patience": 10}
    said: dict[str, list[str]] = {"clean": [], "failed": []}
    clean = fit_preset(_with(cfg, tmp_path, "clean", **short), data, said["clean"].append)
    failed = fit_preset(_with(cfg, tmp_path, "failed", max_failures=2, inject_failure_at_epoch=2,
                       **short), data, said["failed"].append)
    assert len(list((tmp_path / "failed").glob("*/injected_failure.txt"))) == 1
    # the driver printed each epoch once, as it happened, and the resume between them
    heads = {run: [line.split(" loss")[0] for line in lines] for run, lines in said.items()}
    epochs = [f"train: epoch {e}/3" for e in (1, 2, 3)]
    assert heads["clean"] == epochs, said["clean"]
    assert heads["failed"] == [*epochs[:2], "train: resumed from the checkpoint of epoch 2",
                               epochs[2]], said["failed"]
    # every epoch once, none repeated: the restart began at epoch 1's checkpoint + 1
    assert _epochs(failed) == _epochs(clean) == [0, 1, 2]
    timing = {"sequences_per_s"}
    assert {k: v for k, v in failed.metrics.items() if k not in timing} == {
        k: v for k, v in clean.metrics.items() if k not in timing}


def test_without_retries_the_same_failure_fails_the_run(ray_cluster, tiny, tmp_path):
    cfg, data = tiny
    with pytest.raises(TrainingFailedError):
        fit_preset(_with(cfg, tmp_path, "doomed", max_failures=0, inject_failure_at_epoch=0,
                  epochs=2), data)


def test_the_presets_model_section_is_the_models_config(tiny, tmp_path):
    """Every field of training.model reaches the model as set (no copied defaults between a
    preset model and the trained one), and the config round-trips through config.json."""
    cfg, data = tiny
    model = cfg.training.model.model_copy(update={
        "like_threshold": 3.5, "time_buckets": 12, "loss_weights": LossWeights(intent=0.0)})
    changed = cfg.model_copy(update={"training": cfg.training.model_copy(
        update={"model": model})})
    mcfg = resolved(changed, data)
    assert (mcfg.like_threshold, mcfg.time_buckets, mcfg.loss_weights.intent) == (3.5, 12, 0.0)
    assert {k: getattr(mcfg, k) for k in ModelConfig.model_fields if k != "lm_mode"} == {
        k: getattr(model, k) for k in ModelConfig.model_fields if k != "lm_mode"}
    assert build_model(mcfg, data).gap_emb.num_embeddings == 12 + 1
    mcfg.save(tmp_path)
    assert InterestModelConfig.load(tmp_path) == mcfg


def test_every_run_trains_afresh_in_its_own_folder_and_resumes_only_when_asked(
        ray_cluster, tiny, tmp_path):
    """The same config twice trains every epoch both times (the bug: the second run found the
    first one's checkpoints under the fixed run name and trained nothing); ``resume`` continues
    a run from its latest checkpoint; at most keep_checkpoints + the latest are kept."""
    cfg, data = tiny
    twice = _with(cfg, tmp_path, "twice", epochs=3, patience=10, keep_checkpoints=1)
    said: list[list[str]] = [[], []]
    first_id, second_id = new_run_id(), new_run_id()
    first = fit_preset(twice, data, said[0].append, run_id=first_id)
    second = fit_preset(twice, data, said[1].append, run_id=second_id)
    assert first_id != second_id
    for result, lines in ((first, said[0]), (second, said[1])):
        assert [m["epoch"] for m in epoch_history(result)] == [0, 1, 2]
        assert [line.split(" loss")[0] for line in lines] == [
            f"train: epoch {e}/3" for e in (1, 2, 3)], lines
    kept = sorted(p.name for p in Path(run_dir(twice.training, first_id)).glob("checkpoint_*")
                  if p.is_dir())  # Ray Train also writes checkpoint_manager_snapshot.json
    assert 1 <= len(kept) <= 2, kept  # the best one, and the latest when it is another
    longer = _with(cfg, tmp_path, "twice", epochs=4, patience=10, keep_checkpoints=1)
    resumed: list[str] = []
    again = fit_preset(longer, data, resumed.append, run_id=first_id)
    assert [line.split(" loss")[0] for line in resumed] == [
        "train: resumed from the checkpoint of epoch 3", "train: epoch 4/4"], resumed
    assert [m["epoch"] for m in epoch_history(again)] == [0, 1, 2, 3]


def test_resume_names_a_run_id_in_the_format_runs_get():
    with pytest.raises(ValueError, match="resume"):
        TrainingConfig(resume="../../etc")
    assert TrainingConfig(resume=new_run_id()).resume
