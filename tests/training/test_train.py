"""Ray Train fine-tuning on real Ray, real Feast data (ML-100K), CPU workers."""

from __future__ import annotations

import pytest
from ray.train import TrainingFailedError

from irec.config import PlatformConfig
from training.baselines.popularity import evaluate_popularity
from training.eval.evaluate import evaluate_model
from training.train import best_checkpoint, fit, load_checkpoint


def _with(cfg: PlatformConfig, tmp_path, name: str, **training) -> PlatformConfig:
    update = {"storage_path": str(tmp_path), "run_name": name, **training}
    return cfg.model_copy(update={"training": cfg.training.model_copy(update=update)})


def test_tiny_preset_beats_popularity(ray_cluster, tiny, tmp_path):
    cfg, data = tiny
    result = fit(_with(cfg, tmp_path, "tiny"), data, log=lambda _: None)
    model = load_checkpoint(best_checkpoint(result), data)
    mine = evaluate_model(model, data, "test")
    popular = evaluate_popularity(data, "test")
    assert mine["ndcg@10"] > popular["ndcg@10"], (mine, popular)
    assert mine["hr@10"] > popular["hr@10"]
    # the saved model reproduces its scores exactly
    again = evaluate_model(load_checkpoint(best_checkpoint(result), data), data, "test")
    assert again == mine


def _epochs(result) -> list[int]:
    return sorted(metrics["epoch"] for _, metrics in result.best_checkpoints)


def test_worker_failure_resumes_from_the_last_checkpoint(ray_cluster, tiny, tmp_path):
    cfg, data = tiny
    short = {"epochs": 3, "patience": 10}
    clean = fit(_with(cfg, tmp_path, "clean", **short), data, log=lambda _: None)
    failed = fit(_with(cfg, tmp_path, "failed", max_failures=2, inject_failure_at_epoch=2,
                       **short), data, log=lambda _: None)
    assert (tmp_path / "failed" / "injected_failure.txt").exists()
    # one checkpoint per epoch, none repeated: the restart began at epoch 1's checkpoint + 1
    assert _epochs(failed) == _epochs(clean) == [0, 1, 2]
    timing = {"sequences_per_s"}
    assert {k: v for k, v in failed.metrics.items() if k not in timing} == {
        k: v for k, v in clean.metrics.items() if k not in timing}


def test_without_retries_the_same_failure_fails_the_run(ray_cluster, tiny, tmp_path):
    cfg, data = tiny
    with pytest.raises(TrainingFailedError):
        fit(_with(cfg, tmp_path, "doomed", max_failures=0, inject_failure_at_epoch=0,
                  epochs=2), data, log=lambda _: None)
