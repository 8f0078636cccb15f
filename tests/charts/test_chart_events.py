"""Live events on Kubernetes (render-only, every values case): the RayService serves the events
path, and the serving pods append the live logs (events, exposures, added items) to the
features volume, read-only otherwise."""

from __future__ import annotations

import posixpath

import pytest
import yaml
from chart_cases import CASES, one

from data.catalogue_log import CATALOGUE_LOG_DIR
from data.event_log import EVENT_LOG_DIR, EXPOSURE_LOG_DIR
from irec.k8s.pods import pod_templates
from ray_apps.config import STAGES, EventsUserConfig

LOGS = (EVENT_LOG_DIR, EXPOSURE_LOG_DIR, CATALOGUE_LOG_DIR)


def _serve_app(objects: list[dict]) -> dict:
    return yaml.safe_load(one(objects, "RayService")["spec"]["serveConfigV2"])["applications"][0]


def _platform(objects: list[dict]) -> dict:
    return yaml.safe_load(one(objects, "ConfigMap")["data"]["platform.yaml"])


@pytest.mark.parametrize("case", CASES)
def test_the_rayservice_serves_the_events_deployment(case, rendered):
    app = _serve_app(rendered[case])
    deployments = {d["name"]: d for d in app["deployments"]}
    assert set(deployments) == set(STAGES) and "Events" in deployments
    EventsUserConfig.model_validate(deployments["Events"]["user_config"])


@pytest.mark.parametrize("case", CASES)
def test_serving_pods_write_the_live_logs_and_nothing_else_of_the_features(case, rendered):
    data_dir = posixpath.join(_platform(rendered[case])["features"]["repo_path"], "data")
    service = one(rendered[case], "RayService")
    templates = list(pod_templates(service))
    assert templates
    for where, template in templates:
        container = template["spec"]["containers"][0]  # ray-head / ray-worker
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        features = next(m for m in mounts.values() if m["name"] == "features"
                        and "subPath" not in m)
        assert features["readOnly"] is True, where
        for name in LOGS:
            log = mounts[posixpath.join(data_dir, name)]
            assert (log["name"], log["subPath"]) == ("features", f"data/{name}"), where
            assert not log.get("readOnly", False), where
            assert data_dir.startswith(features["mountPath"] + "/"), where


@pytest.mark.parametrize("case", CASES)
def test_only_serving_pods_get_the_live_log_mounts(case, rendered):
    for obj in rendered[case]:
        if obj["kind"] == "RayService":
            continue
        for where, template in pod_templates(obj):
            for container in template["spec"].get("containers", []):
                subpaths = [m.get("subPath") for m in container.get("volumeMounts", [])]
                assert not {f"data/{name}" for name in LOGS} & set(subpaths), where
