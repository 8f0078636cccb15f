"""Configuration: YAML presets, dotted overrides, strict keys, paths relative to the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from features.config import FEATURE_REPO_DIR, FEATURE_STORE_YAML_ENV, FeatureConfig
from irec.config import PlatformConfig


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
    assert cfg.features.repo_path == Path("ws").resolve()  # a CLI path: from the current dir


@pytest.mark.parametrize("text, fragment", [
    ("ingest: {formt: sasrec}\n", "formt"),
    ("features: {history_length: 0}\n", "history_length"),
    ("ingest: {rating_min: 5, rating_max: 1}\n", "rating_min=5.0 must be below rating_max=1.0"),
    ("features: {online_store: mysql}\n", "online_store"),
    ("serving: {deployments: {Ranking: {autoscaling_config: {min_replicas: 5, "
     "max_replicas: 2}}}}\n", "min_replicas=5 must not exceed max_replicas=2"),
    ("serving: {deployments: {Rankng: {num_replicas: 1}}}\n", "Rankng"),
    ("serving: {deployments: {Ranking: {num_replicas: 2, autoscaling_config: {}}}}\n",
     "num_replicas=2 and autoscaling_config exclude each other"),
    ("serving: {ranking: {weights: {popularty: 0.2}}}\n", "popularty"),
    ("serving: {clock: yesterday}\n", "clock"),
    ("serving: {ingress: {default_n: 0}}\n", "default_n"),
    ("training: {model: {hidden: 64, heads: 3}}\n", "heads=3 must divide hidden=64"),
    ("training: {model: {loss_weights: {nxt: 1}}}\n", "nxt"),
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


def test_every_runtime_knob_is_set_from_a_preset_and_reaches_the_serve_config(tmp_path):
    """One shape from YAML to replica: the preset's serving section is each stage's
    user_config and Serve deployment options, as the builder writes them."""
    from ray_apps.app import serve_config

    preset = tmp_path / "knobs.yaml"
    preset.write_text("""
serving:
  model_tag: interest:v7
  clock: 893286639
  request_timeout_s: 3.5
  ingress: {default_n: 20}
  retrieval: {k: 50, ann_nprobe: 8, max_batch_size: 4, threads: 2}
  intent: {query_weight: 0.25, temperature: 0.1}
  ranking: {weights: {like: 0.0, popularity: 0.4}, explain_top: 0, item_features_ttl_s: 5}
  deployments:
    Ranking: {num_replicas: 3, ray_actor_options: {num_cpus: 0.5},
              max_ongoing_requests: 4, max_queued_requests: 8}
    Retrieval: {autoscaling_config: {min_replicas: 1, max_replicas: 3}}
training:
  model: {like_threshold: 3.5, time_buckets: 12}
""")
    cfg = PlatformConfig.load(preset)
    assert (cfg.training.model.like_threshold, cfg.training.model.time_buckets) == (3.5, 12)
    app = serve_config({"irec": cfg.app_args()})["applications"][0]
    by_name = {d["name"]: d for d in app["deployments"]}
    assert by_name["Ingress"]["user_config"] == {"default_n": 20, "request_timeout_s": 3.5}
    retrieval = by_name["Retrieval"]["user_config"]
    assert (retrieval["k"], retrieval["ann_nprobe"], retrieval["max_batch_size"],
            retrieval["threads"], retrieval["clock"]) == (50, 8, 4, 2, 893286639)
    assert by_name["Intent"]["user_config"]["query_weight"] == 0.25
    ranking = by_name["Ranking"]
    assert ranking["user_config"]["weights"] == {
        "retrieval": 1.0, "rating": 0.3, "like": 0.0, "intent": 0.5, "query": 0.5,
        "popularity": 0.4, "fresh": 1.0}
    assert ranking["user_config"]["explain_top"] == 0
    assert {k: ranking[k] for k in ("num_replicas", "max_ongoing_requests",
                                    "max_queued_requests")} == {
        "num_replicas": 3, "max_ongoing_requests": 4, "max_queued_requests": 8}
    assert ranking["ray_actor_options"]["num_cpus"] == 0.5
    assert by_name["Retrieval"]["autoscaling_config"]["max_replicas"] == 3
    assert {d["user_config"].get("model_tag") for d in app["deployments"]} == {
        "interest:v7", None}
