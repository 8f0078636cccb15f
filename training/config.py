"""The training section of the platform config: the Ray Train run and the model it trains."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from data.config import StrictModel
from training.models.config import ModelConfig


class TrainingConfig(StrictModel):
    """Ray Train run: workers, schedule, checkpoints, failure recovery."""

    model: ModelConfig = ModelConfig()
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    # Learning rate of the trained LM parameters (lm_mode finetune/lora).
    lm_lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    # Training windows: a user's history feeds at most features.history_length events, so a
    # longer one also trains through earlier windows, the histories as of every
    # window_stride-th event back from the validation target (point in time, from Feast).
    # 0: only the last window. Below history_length, every event is a target.
    window_stride: int = Field(0, ge=0)
    # Stop when validation NDCG@10 has not improved for this many epochs.
    patience: int = Field(5, ge=1)
    seed: int = 0
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    # Local folder or s3://, gs:// URI for checkpoints and results: each run gets its own
    # folder <storage_path>/<run_name>/<run id> (the id is the UTC start time plus 4 hex
    # digits), so a run never continues an earlier one by accident.
    storage_path: str = str(Path.home() / "irec-runs")
    run_name: str = "interest"
    # Continue this run (its id, printed when it started) from its latest checkpoint instead of
    # training afresh (`irec train --resume RUN`). Within one run, a failed worker group
    # restarts from the latest checkpoint by itself (max_failures).
    resume: str | None = Field(None, pattern=r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{4}$")
    # Checkpoints kept per run: the best ones by validation NDCG@10; Ray Train also keeps the
    # latest one, for resuming.
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(0, ge=-1)
    # Same-run comparisons in the report: transformer variants trained with the same budget.
    # ids_only: no LM text tower (SASRec-style); no_time: no time-gap features or decay.
    ablations: list[Literal["ids_only", "no_time"]] = ["ids_only", "no_time"]
    # Retraining (`irec retrain run`): the newest window_days of events before the cutoff are
    # held out of training, and the new model and the champion are both scored there (next
    # event, full ranking); promotion needs the margin on that window's NDCG@10.
    window_days: float = Field(7.0, gt=0)
    # Chaos testing: the first attempt of this epoch raises in the worker (never in presets).
    inject_failure_at_epoch: int | None = None
