"""Serving (RayService) and retraining (RayCronJob, RayJob): what the pods run and on what."""

from __future__ import annotations

import pytest
import yaml
from chart_cases import CASES, ROOT_VALUES, by_kind, case_values, one

from irec.config import PlatformConfig
from irec.k8s.pods import pod_specs, ray_clusters
from irec.k8s.render import merge_values, notes, render


def platform_config(objects: list[dict]) -> dict:
    return yaml.safe_load(one(objects, "ConfigMap")["data"]["platform.yaml"])


def quantity(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_serving_cluster(rendered):
    spec = one(rendered["default"], "RayService")["spec"]
    assert spec["upgradeStrategy"] == {"type": "NewCluster"}
    cluster = spec["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (cpu,) = cluster["workerGroupSpecs"]
    assert (cpu["groupName"], cpu["minReplicas"], cpu["replicas"], cpu["maxReplicas"]) == (
        "cpu", 2, 2, 6)
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert "serviceAccountName" not in head, "KubeRay gives the autoscaler its own account"
    worker = cpu["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports["serve"] == 8000 and ports["grpc"] == 9000
    assert "gcsFaultToleranceOptions" not in cluster


def test_gpu_profile_adds_gpu_groups_and_trains_on_them(rendered):
    objects = rendered["gpu"]
    groups = {g["groupName"]: g for g in one(objects, "RayService")["spec"]["rayClusterConfig"][
        "workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert groups["gpu"]["minReplicas"] == 0
    job = one(objects, "RayCronJob")["spec"]["jobTemplate"]["rayClusterSpec"]
    training_groups = {g["groupName"]: g for g in job["workerGroupSpecs"]}
    assert training_groups["gpu"]["replicas"] == 2
    assert platform_config(objects)["training"]["use_gpu"] is True


@pytest.mark.parametrize("case", CASES)
def test_ray_train_workers_fit_the_retraining_worker_groups(case, rendered):
    """Each of num_workers needs cpus_per_worker CPUs (and a GPU with use_gpu) on one worker
    pod, or the run waits for resources; the render refuses values where they do not fit
    (test_operator), this checks the rendered cluster itself."""
    objects = rendered[case]
    training = PlatformConfig.model_validate(platform_config(objects)).training
    job = one(objects, "RayCronJob")["spec"]["jobTemplate"]["rayClusterSpec"]
    places = 0
    for group in job["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        per_pod = int(quantity(limits["cpu"]) // training.cpus_per_worker)
        if training.use_gpu:
            per_pod = min(per_pod, limits.get("nvidia.com/gpu", 0))
        places += group["replicas"] * per_pod
    assert places >= training.num_workers


def test_gcs_fault_tolerance_uses_its_own_redis_with_a_secret_reference(rendered):
    """The chart's GCS Redis (test_hardening: never the features Redis), its password from the
    features Redis's Secret unless serving.gcsFaultTolerance.auth names another."""
    for case in ("production", "existing-redis"):
        cluster = one(rendered[case], "RayService")["spec"]["rayClusterConfig"]
        options = cluster["gcsFaultToleranceOptions"]
        assert options["redisAddress"] == "irec-gcs-redis.irec.svc:6379"
        secret = options["redisPassword"]["valueFrom"]["secretKeyRef"]
        auth = case_values(case)["redis"]["auth"]
        assert secret == {"name": auth["existingSecret"],
                          "key": auth.get("existingSecretPasswordKey", "redis-password")}


def test_retraining_runs_the_training_pipeline_on_the_chart_config(rendered):
    objects = rendered["production"]
    cron = one(objects, "RayCronJob")["spec"]
    assert (cron["schedule"], cron["timeZone"]) == ("0 2 * * *", "Europe/Berlin")
    job = cron["jobTemplate"]
    assert job["entrypoint"] == ("python -m irec.pipeline --config /etc/irec/platform.yaml "
                                 "--margin 0.002 --retrain")
    assert not by_kind(objects, "Role")  # retraining.rollout is off by default
    head = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["automountServiceAccountToken"] is False
    assert (job["shutdownAfterJobFinishes"], job["ttlSecondsAfterFinished"],
            job["backoffLimit"]) == (True, 3600, 1)
    assert yaml.safe_load(job["runtimeEnvYAML"]) == {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    assert job["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"
    config = PlatformConfig.model_validate(platform_config(objects))
    assert (config.training.num_workers, config.training.epochs) == (4, 40)
    assert config.training.storage_path == "/data/models/runs"
    assert config.features.online_store == "redis"


def test_retraining_may_roll_out_only_this_releases_rayservice():
    from irec.k8s.validate import validate

    values = merge_values(ROOT_VALUES, {"retraining": {"rollout": {"enabled": True,
                                                                   "timeoutSeconds": 600}}})
    objects = render(values, release="irec", namespace="recs")
    assert validate(objects) == []
    job = one(objects, "RayCronJob")["spec"]["jobTemplate"]
    service = one(objects, "RayService")["metadata"]["name"]
    assert job["entrypoint"].endswith(
        f"--retrain --rollout-service {service} --namespace recs --rollout-timeout 600")
    role, binding = one(objects, "Role"), one(objects, "RoleBinding")
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayservices"],
                              "resourceNames": [service], "verbs": ["get", "patch"]}]
    (account,) = [o for o in by_kind(objects, "ServiceAccount")
                  if o["metadata"]["name"].endswith("-rollout")]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": "recs"}]
    head = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert (head["serviceAccountName"], head["automountServiceAccountToken"]) == (
        account["metadata"]["name"], True)
    for group in job["rayClusterSpec"]["workerGroupSpecs"]:  # the workers get no token
        assert group["template"]["spec"]["automountServiceAccountToken"] is False


def test_training_entrypoint_parses(capsys):
    from irec.pipeline import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_a_one_off_rayjob_has_the_scheduled_spec():
    values = merge_values(ROOT_VALUES, {"retraining": {"job": {"enabled": True,
                                                               "name": "retrain-now"}}})
    objects = render(values)
    job = one(objects, "RayJob")
    assert job["metadata"]["name"] == "retrain-now"
    assert job["spec"] == one(objects, "RayCronJob")["spec"]["jobTemplate"]


def test_pvc_mode_serving_reads_the_store_retraining_writes_it(rendered):
    objects = rendered["default"]
    for obj, read_only in ((one(objects, "RayService"), True), (one(objects, "RayCronJob"), False)):
        for where, spec in pod_specs(obj):
            if where.endswith("submitter"):
                continue
            claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                      for v in spec["volumes"] if "persistentVolumeClaim" in v}
            assert claims == {"features": "irec-features", "models": "irec-models"}, where
            mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
            assert mounts["models"]["mountPath"] == "/data/models"
            assert mounts["models"]["readOnly"] is read_only, where
            env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
            assert env["BENTOML_HOME"] == "/data/models/bentoml"


def test_object_store_mode_imports_the_tagged_model_at_start(rendered):
    objects = rendered["object-store"]
    for where, spec in pod_specs(one(objects, "RayService")):
        (init,) = spec["initContainers"]
        assert init["command"] == ["bentoml", "models", "import",
                                   "s3://models/irec/interest-abc123.bentomodel"]
        assert init["envFrom"] == [{"secretRef": {"name": "irec-s3"}}]
        models = next(v for v in spec["volumes"] if v["name"] == "models")
        assert "emptyDir" in models, where
    job = one(objects, "RayCronJob")["spec"]["jobTemplate"]
    assert job["entrypoint"].endswith("&& bentoml models export interest:latest s3://models/irec/")
    head = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert any(v["name"] == "models" and "persistentVolumeClaim" in v for v in head["volumes"])


def test_service_monitor_scrapes_the_ray_pods(rendered):
    objects = rendered["production"]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    metrics = services["irec-ray-metrics"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"][
        "labels"].items()
    assert {p["name"] for p in metrics["spec"]["ports"]} >= {
        e["port"] for e in monitor["spec"]["endpoints"]}
    for _, cluster in ray_clusters(one(objects, "RayService")):
        pod = cluster["headGroupSpec"]["template"]["metadata"]["labels"]
        assert metrics["spec"]["selector"].items() <= pod.items()
    assert by_kind(rendered["default"], "ServiceMonitor") == []


def test_notes_warn_when_the_autoscaler_cannot_reach_the_api_server():
    assert "apiServerCIDRs is empty" in notes(ROOT_VALUES)
    assert "apiServerCIDRs is empty" not in notes(case_values("production"))
