"""Configuration: YAML presets, dotted overrides, strict keys, paths relative to the file."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from irec.config import FEATURE_REPO_DIR, FEATURE_STORE_YAML_ENV, FeatureConfig, PlatformConfig


def test_presets_load_and_point_at_the_shared_datasets(datasets):
    for name in ("ml-100k", "video-games", "tiny", "gpu"):
        cfg = PlatformConfig.load(f"configs/{name}.yaml")
        assert cfg.ingest.path.resolve().is_relative_to(datasets.resolve())
        assert cfg.ingest.path.exists()


def test_yaml_paths_are_relative_to_the_file_and_overrides_win(tmp_path):
    (tmp_path / "sub").mkdir()
    preset = tmp_path / "sub" / "p.yaml"
    preset.write_text("ingest: {format: sasrec, path: data/seq.txt}\n"
                      "features: {history_length: 20}\n")
    cfg = PlatformConfig.load(preset, {"features.history_length": 7, "features.repo_path": "ws"})
    assert cfg.ingest.path == tmp_path / "sub" / "data" / "seq.txt"
    assert cfg.features.history_length == 7
    assert str(cfg.features.repo_path) == "ws"


@pytest.mark.parametrize("text, fragment", [
    ("ingest: {formt: sasrec}\n", "formt"),
    ("features: {history_length: 0}\n", "history_length"),
    ("ingest: {rating_min: 5, rating_max: 1}\n", "rating_min=5.0 must be below rating_max=1.0"),
    ("features: {online_store: mysql}\n", "online_store"),
    ("serving: {deployments: {Ranking: {autoscaling: {min_replicas: 5, max_replicas: 2}}}}\n",
     "min_replicas=5 must not exceed max_replicas=2"),
    ("serving: {deployments: {Rankng: {num_cpus: 1}}}\n", "Rankng"),
])
def test_bad_configuration_names_the_key(tmp_path, text, fragment):
    preset = tmp_path / "bad.yaml"
    preset.write_text(text)
    with pytest.raises(ValidationError, match=fragment):
        PlatformConfig.load(preset)


def test_redis_profile_reads_the_deployment_feature_store_yaml(monkeypatch, tmp_path):
    production = FEATURE_REPO_DIR / "feature_store.production.yaml"
    assert FeatureConfig(online_store="redis").store_yaml == production
    monkeypatch.setenv(FEATURE_STORE_YAML_ENV, str(tmp_path / "feature_store.yaml"))
    assert FeatureConfig(online_store="redis").store_yaml == tmp_path / "feature_store.yaml"
    assert FeatureConfig().store_yaml == FEATURE_REPO_DIR / "feature_store.yaml"
