"""serveConfigV2 has one source: ray_apps' builder, run on configs/k8s.yaml."""

from __future__ import annotations

import yaml
from chart_cases import ROOT_VALUES, one

from irec.config import PlatformConfig
from irec.k8s.render import CHART_DIR, ROOT, merge_values, render
from ray_apps.app import serve_config as build
from ray_apps.config import AppArgs, ServingConfig, with_model_tag

STALE = "stale: run `make chart-config`"


def serve_config(objects: list[dict]) -> dict:
    return yaml.safe_load(one(objects, "RayService")["spec"]["serveConfigV2"])


def test_embedded_files_are_the_builders_output(builder_output):
    embedded = yaml.safe_load((CHART_DIR / "files" / "serve-config.yaml").read_text())
    assert embedded == builder_output, f"charts/irec/files/serve-config.yaml is {STALE}"
    platform = (CHART_DIR / "files" / "platform.yaml").read_text()
    assert platform == (ROOT / "configs" / "k8s.yaml").read_text(), (
        f"charts/irec/files/platform.yaml is {STALE}")


def test_rendered_serve_config_is_the_builders_output(rendered, builder_output):
    for case in ("default", "cpu", "production"):
        assert serve_config(rendered[case]) == builder_output, case


def test_model_tag_only_changes_the_stages_user_config(builder_output):
    objects = render(merge_values(ROOT_VALUES, {"serving": {"modelTag": "interest:v42"}}))
    rendered = serve_config(objects)
    assert rendered == with_model_tag(builder_output, "interest:v42")
    tags = {d["name"]: d.get("user_config", {}).get("model_tag")
            for d in rendered["applications"][0]["deployments"]}
    assert tags == {"Retrieval": "interest:v42", "Intent": "interest:v42",
                    "Ranking": "interest:v42", "Events": None, "Ingress": None}
    assert rendered["applications"][0]["args"] == builder_output["applications"][0]["args"]


def test_a_whole_serve_config_is_used_verbatim():
    custom = "applications:\n- name: irec\n  import_path: ray_apps.app:build_app\n"
    objects = render(merge_values(ROOT_VALUES, {"serving": {"serveConfigV2": custom}}))
    assert one(objects, "RayService")["spec"]["serveConfigV2"].strip() == custom.strip()


def test_ports_follow_the_serve_config(rendered, builder_output):
    service = one(rendered["default"], "RayService")["spec"]["serveService"]["spec"]
    targets = {p["name"]: p["targetPort"] for p in service["ports"]}
    assert targets == {"http": builder_output["http_options"]["port"],
                       "grpc": builder_output["grpc_options"]["port"]} == {"http": 8000,
                                                                           "grpc": 9000}


def test_cluster_preset_autoscales_every_stage_on_redis(builder_output):
    cfg = PlatformConfig.load(ROOT / "configs" / "k8s.yaml")
    assert cfg.features.online_store == "redis" and cfg.serving.clock == "wall"
    app = builder_output["applications"][0]
    assert app["args"]["features"]["repo_path"] == "/data/features"
    for deployment in app["deployments"]:
        assert "num_replicas" not in deployment, deployment["name"]
        scaling = deployment["autoscaling_config"]
        assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"], deployment["name"]
        assert deployment["ray_actor_options"]["num_cpus"] > 0.25


# Changes a user makes through `serving.app`, zeros and a switch from autoscaling to a fixed
# replica count included (Helm's mergeOverwrite would drop the zeros).
APP = {"clock": 1_700_000_000, "request_timeout_s": 4.0,
       "ingress": {"default_n": 20},
       "retrieval": {"k": 50, "threads": 2},
       "intent": {"query_weight": 0.25},
       "ranking": {"weights": {"popularity": 0.0, "like": 0.7}, "explain_top": 0},
       "deployments": {"Ranking": {"num_replicas": 3, "ray_actor_options": {"num_cpus": 2}},
                       "Ingress": {"max_queued_requests": 8}}}


def test_app_values_change_the_serve_config_as_the_builder_would(builder_output):
    """`serving.app` is the platform config's serving section: the rendered serveConfigV2 is
    the builder's output for configs/k8s.yaml with the same serving changes (args apart: the
    chart leaves them as built, so Serve reconfigures instead of redeploying)."""
    rendered = serve_config(render(merge_values(ROOT_VALUES, {"serving": {"app": APP}})))
    cfg = PlatformConfig.load(ROOT / "configs" / "k8s.yaml")
    serving = cfg.serving.model_dump()
    for key, value in APP.items():
        if key == "deployments":
            for stage, change in value.items():
                placed = serving["deployments"][stage]
                if "num_replicas" in change:
                    placed.pop("autoscaling_config")
                for option, setting in change.items():
                    if isinstance(setting, dict):
                        placed[option].update(setting)
                    else:
                        placed[option] = setting
        elif isinstance(value, dict):
            for knob, setting in value.items():
                if isinstance(setting, dict):
                    serving[key][knob].update(setting)
                else:
                    serving[key][knob] = setting
        else:
            serving[key] = value
    changed = AppArgs(features=cfg.features, serving=ServingConfig.model_validate(serving))
    expected = build({"irec": changed})
    expected["applications"][0]["args"] = builder_output["applications"][0]["args"]
    assert rendered == expected
    ranking = {d["name"]: d for d in rendered["applications"][0]["deployments"]}["Ranking"]
    assert ranking["user_config"]["weights"]["popularity"] == 0.0
    assert ranking["num_replicas"] == 3 and "autoscaling_config" not in ranking
