"""The training section of the platform config: the Ray Train run and the model it trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from data.config import StrictModel
from training.models.config import ModelConfig


class Dimension(StrictModel):
    """One searched setting: exactly one of ``choice`` (values), ``uniform`` and
    ``loguniform`` ([low, high] floats), ``randint`` ([low, high) integers)."""

    choice: list[Any] | None = Field(None, min_length=1)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        kinds = [k for k, v in self.__dict__.items() if v is not None]
        if len(kinds) != 1:
            raise ValueError(f"a dimension is exactly one of choice, uniform, loguniform, "
                             f"randint; got {kinds or 'none'}")
        bounds = self.uniform or self.loguniform or self.randint
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"{kinds[0]} needs low < high, got {list(bounds)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {list(self.loguniform)}")
        return self

    def examples(self) -> list[Any]:
        """Values this dimension can take, at least its ends (to validate the setting)."""
        return list(self.choice or self.uniform or self.loguniform
                    or (self.randint[0], self.randint[1] - 1))


# Settings fixed for a whole search, not searchable: the data every trial reads (prepared
# once, window_stride) and the run itself (workers, folders, epochs, seed).
FIXED_SETTINGS = ("window_stride", "num_workers", "use_gpu", "cpus_per_worker", "storage_path",
                 "run_name", "resume", "epochs", "seed")


class TuneConfig(StrictModel):
    """``irec tune``: Ray Tune over the Ray Train trainer, ASHA on validation NDCG@10.

    ``space`` maps a dotted ``training`` setting (``lr``, ``model.hidden``,
    ``model.loss_weights.rating``, ``model.lm_mode``...) to its ``Dimension``. Each trial
    trains up to ``training.epochs`` epochs; ASHA stops the weaker trials at
    ``grace_epochs``, then every ``reduction_factor``-fold more epochs.
    """

    trials: int = Field(8, ge=1)
    time_budget_s: float = Field(1800.0, gt=0)  # no new trial starts after it
    max_concurrent: int = Field(2, ge=1)  # trials at once (each one training worker group)
    grace_epochs: int = Field(2, ge=1)
    reduction_factor: int = Field(3, ge=2)
    space: dict[str, Dimension] = {
        "lr": Dimension(loguniform=(3e-4, 3e-3)),
        "model.hidden": Dimension(choice=[32, 64, 128]),
        "model.layers": Dimension(choice=[1, 2, 3]),
        "model.dropout": Dimension(uniform=(0.1, 0.4)),
    }


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
    # `irec tune`: the search over this section (the search space lives here too).
    tune: TuneConfig = TuneConfig()
    # Chaos testing: the first attempt of this epoch raises in the worker (never in presets).
    inject_failure_at_epoch: int | None = None

    @model_validator(mode="after")
    def _searchable(self) -> TrainingConfig:
        for key, dimension in self.tune.space.items():
            if key.split(".")[0] in FIXED_SETTINGS + ("tune", "ablations"):
                raise ValueError(f"training.tune.space: {key!r} cannot be searched (it shapes "
                                 "the data or the run; set it in the preset)")
            for value in dimension.examples():
                self.with_settings({key: value})
        return self

    def with_settings(self, settings: dict[str, Any]) -> TrainingConfig:
        """This config with dotted ``settings`` (``{"model.hidden": 64}``) applied, validated;
        a setting that names no field is an error naming it."""
        merged = self.model_dump()
        for key, value in settings.items():
            node, *path, leaf = [merged, *key.split(".")]
            for part in path:
                if not isinstance(node.get(part), dict):
                    raise ValueError(f"training setting {key!r}: no section {part!r}")
                node = node[part]
            if leaf not in node:
                raise ValueError(f"training setting {key!r}: no field {leaf!r}")
            node[leaf] = value
        merged["tune"]["space"] = {}  # validated once, here: not again per trial
        return TrainingConfig.model_validate(merged).model_copy(
            update={"tune": self.tune})
