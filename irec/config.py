"""The platform config: one section per component, each defined by its own layer.

Config flows one way: YAML file -> ``PlatformConfig`` (pydantic, strict keys) -> code. Each
section is the component's own model, used as it is by the code that runs it:

    ingest    data.config.IngestConfig           (data/ingest.py)
    features  features.config.FeatureConfig      (features/, feature_repo/)
    training  training.config.TrainingConfig     (training/; its model section is
              training.models.config.ModelConfig)
    serving   ray_apps.config.ServingConfig      (ray_apps/: build_app, every replica)

``PlatformConfig.load(path, overrides={"features.history_length": 20})`` applies dotted
overrides on top of the file before validation, so a typo in either place is an error.
Relative paths inside a YAML file are relative to that file; on the command line, to the
current directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from data.config import IngestConfig, StrictModel
from features.config import FeatureConfig
from ray_apps.config import AppArgs, ServingConfig
from training.config import TrainingConfig

PATH_KEYS = ("ingest.path", "ingest.items_path", "ingest.users_path", "ingest.download_dir",
             "features.repo_path")


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
            if dotted in PATH_KEYS:
                value = str(Path(value).expanduser().resolve())
            node[leaf] = value
        return cls.model_validate(raw)

    def app_args(self) -> AppArgs:
        """The Serve application's arguments: the serving and features sections, as they are."""
        return AppArgs(features=self.features, serving=self.serving)


def _anchor_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the relative paths of a YAML file relative to the file's own folder."""
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            value = Path(node[key]).expanduser()
            node[key] = str(value if value.is_absolute() else base / value)
