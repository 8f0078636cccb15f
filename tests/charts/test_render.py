"""Every values case renders, lints clean and validates; every pod runs restricted."""

from __future__ import annotations

import re

import pytest
from chart_cases import CASES, by_kind, case_values

from irec.k8s.pods import containers, pod_specs, pod_templates, ray_clusters
from irec.k8s.render import ValuesError, lint, merge_values, render, validate

SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIAL|API_KEY|ACCESS_KEY", re.IGNORECASE)


@pytest.mark.parametrize("case", CASES)
def test_lint_is_clean(case):
    assert lint(case_values(case)) == []


def test_bare_defaults_lint_clean_and_render_asks_for_the_redis_secret():
    assert lint() == []
    with pytest.raises(ValuesError, match="redis.auth.existingSecret is required"):
        render()


@pytest.mark.parametrize("case", CASES)
def test_every_object_validates(case, rendered):
    """Core kinds against Kubernetes 1.33 (strict), KubeRay kinds against their CRDs."""
    assert validate(rendered[case]) == []


@pytest.mark.parametrize("case", CASES)
def test_every_pod_runs_under_the_restricted_profile(case, rendered):
    specs = [(where, spec) for obj in rendered[case] for where, spec in pod_specs(obj)]
    assert len(specs) >= 6
    for where, spec in specs:
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True, where
        assert context["runAsUser"] > 0 and context["fsGroup"] > 0, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), where
        assert all("hostPath" not in volume for volume in spec.get("volumes", [])), where
    for where, container in (c for obj in rendered[case] for c in containers(obj)):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["capabilities"] == {"drop": ["ALL"]}, where
        assert context.get("privileged", False) is False, where


@pytest.mark.parametrize("case", CASES)
def test_every_container_has_requests_and_limits(case, rendered):
    for where, container in (c for obj in rendered[case] for c in containers(obj)):
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), f"{where}: {kind}"


@pytest.mark.parametrize("case", CASES)
def test_writable_paths_are_emptydirs_or_data_volumes(case, rendered):
    """Read-only root: /tmp everywhere and /tmp/ray in Ray pods are emptyDirs; besides them only
    the data volumes (PVCs) are writable, and configuration and secrets are mounted read-only."""
    for obj in rendered[case]:
        claims = {t["metadata"]["name"]: {"persistentVolumeClaim": {}}
                  for t in (obj.get("spec") or {}).get("volumeClaimTemplates", [])}
        for where, spec in pod_specs(obj):
            volumes = claims | {v["name"]: v for v in spec["volumes"]}
            for container in spec.get("initContainers", []) + spec["containers"]:
                mounts = {m["mountPath"]: (m, volumes[m["name"]])
                          for m in container["volumeMounts"]}
                assert "emptyDir" in mounts["/tmp"][1], where
                if container["name"] in ("ray-head", "ray-worker"):
                    assert "emptyDir" in mounts["/tmp/ray"][1], where
                for path, (mount, volume) in mounts.items():
                    if {"configMap", "secret", "projected"} & set(volume):
                        assert mount.get("readOnly") is True, f"{where}: {path}"
                    else:
                        assert {"emptyDir", "persistentVolumeClaim"} & set(volume), path
    for where, cluster in (c for obj in rendered[case] for c in ray_clusters(obj)):
        if cluster.get("enableInTreeAutoscaling"):
            mounts = {m["mountPath"] for m in cluster["autoscalerOptions"]["volumeMounts"]}
            assert {"/tmp", "/tmp/ray"} <= mounts, where


@pytest.mark.parametrize("case", CASES)
def test_no_secret_is_inline(case, rendered):
    objects = rendered[case]
    assert by_kind(objects, "Secret") == []
    for where, container in (c for obj in objects for c in containers(obj)):
        for env in container.get("env", []):
            if SECRET_NAME.search(env["name"]):
                assert "value" not in env and "secretKeyRef" in env["valueFrom"], where
            if "password=" in env.get("value", ""):
                assert re.search(r"password=\$\(REDIS_PASSWORD\)(,|$)", env["value"]), where
    for where, cluster in (c for obj in objects for c in ray_clusters(obj)):
        password = (cluster.get("gcsFaultToleranceOptions") or {}).get("redisPassword")
        if password is not None:
            assert set(password) == {"valueFrom"}, where
            assert "secretKeyRef" in password["valueFrom"], where


@pytest.mark.parametrize("case", CASES)
def test_default_deny_network_policy_covers_every_pod(case, rendered):
    objects = rendered[case]
    policies = by_kind(objects, "NetworkPolicy")
    deny = [p for p in policies if p["metadata"]["name"].endswith("-default-deny")]
    assert len(deny) == 1
    spec = deny[0]["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in spec and "egress" not in spec
    selector = spec["podSelector"]["matchLabels"]
    for obj in objects:
        for where, template in pod_templates(obj):
            assert selector.items() <= template["metadata"]["labels"].items(), where
    dns = [rule for p in policies for rule in p["spec"].get("egress", [])
           if {"port": 53, "protocol": "UDP"} in rule.get("ports", [])]
    assert dns, "no DNS egress"


@pytest.mark.parametrize("case", CASES)
def test_disruption_budgets(case, rendered):
    """A budget for every pod that must not all go at once: the serving workers, each Redis in
    the release, the feature server when it runs (test_hardening checks the numbers)."""
    budgets = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p["spec"]
               for p in by_kind(rendered[case], "PodDisruptionBudget")}
    assert "serving" in budgets
    assert budgets["serving"]["selector"]["matchLabels"]["ray.io/node-type"] == "worker"
    assert ("redis" in budgets) == case_values(case)["redis"].get("enabled", True)
    server = [o for o in rendered[case] if o["kind"] == "Deployment"
              and o["metadata"]["name"].endswith("-feature-server")]
    assert ("feature-server" in budgets) == bool(server)
    gcs = [o for o in rendered[case] if o["kind"] == "StatefulSet"
           and o["metadata"]["name"].endswith("-gcs-redis")]
    assert ("gcs-redis" in budgets) == bool(gcs)



@pytest.mark.parametrize("off, gone", [
    ({"serving": {"enabled": False}}, {"serving"}),
    ({"retraining": {"enabled": False}}, {"retraining"}),
    ({"features": {"enabled": False}}, {"features", "feature-server"}),
    ({"networkPolicy": {"enabled": False}}, {"network"}),
])
def test_each_component_switches_off(off, gone):
    objects = render(merge_values(case_values("default"), off))
    assert validate(objects) == []
    components = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in objects}
    assert not components & gone
    assert "redis" in components
