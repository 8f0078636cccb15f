"""What the KubeRay v1.7.0 operator refuses past its CRD schemas (irec.k8s.operator): every
values case renders objects it accepts, each rule refuses a rendering or a hand-edited object
that breaks it, and the chart refuses at render the values that would produce such objects."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from chart_cases import CASES, ROOT_VALUES, by_kind, case_values, one

from irec.k8s.cron import SCHEDULE_PATTERN, schedule_error
from irec.k8s.operator import operator_errors
from irec.k8s.render import (
    CHART_DIR,
    ROOT,
    ValuesError,
    merge_values,
    notes,
    render,
    validate,
)
from irec.k8s.schema import TIME_ZONES_PATH, render_time_zones

LONG_RELEASE = "recommender-production-eu1"
LIMITS = {"RayService": 47, "RayJob": 47, "RayCronJob": 36, "CronJob": 52}
FULL_UPGRADE = {"serving": {"upgradeStrategy": {
    "type": "NewClusterWithIncrementalUpgrade",
    "clusterUpgradeOptions": {"gatewayClassName": "istio", "stepSizePercent": 25,
                              "intervalSeconds": 60, "maxSurgePercent": 50}}}}
# The switches the chart tests flip, and the ones that change what the operator checks.
TOGGLES = {
    "serving-off": {"serving": {"enabled": False}},
    "retraining-off": {"retraining": {"enabled": False}},
    "features-off": {"features": {"enabled": False}},
    "network-policy-off": {"networkPolicy": {"enabled": False}},
    "gcs-fault-tolerance": {"serving": {"gcsFaultTolerance": {"enabled": True}}},
    "no-autoscaling": {"serving": {"autoscaling": {"enabled": False}}},
    "gpu-serving": {"serving": {"workers": {"gpu": {"enabled": True}}}},
    "one-off-job": {"retraining": {"job": {"enabled": True}}},
    "keep-cluster": {"retraining": {"shutdownAfterJobFinishes": False, "job": {"enabled": True}}},
    "short-deadlines": {"retraining": {"activeDeadlineSeconds": 1},
                        "features": {"apply": {"activeDeadlineSeconds": 1},
                                     "materialize": {"activeDeadlineSeconds": 1,
                                                     "startingDeadlineSeconds": 1}}},
    "external-gcs-redis": {"serving": {"gcsFaultTolerance": {
        "enabled": True, "redisAddress": "gcs-redis.data.svc:6380",
        "auth": {"existingSecret": "gcs-redis", "existingSecretPasswordKey": "password"}}}},
    "no-api-auth": {"serving": {"auth": {"enabled": False}}},
    "ray-auth-secret": {"rayAuth": {"secretName": "irec-ray-token"}},
    "feature-server": {"features": {"server": {"enabled": True}}},
    "no-spread": {"topologySpread": {"enabled": False}},
    "incremental-upgrade": FULL_UPGRADE,
    "local-dataset": {"features": {"dataset": {"path": "/data/features/raw/ml-100k"}}},
    "descriptor-schedules": {"retraining": {"schedule": {"cron": "@weekly"}},
                             "features": {"materialize": {"schedule": "@every 30m"}}},
}


def refused(values: dict, **kwargs) -> str:
    with pytest.raises(ValuesError) as error:
        render(values, **kwargs)
    return str(error.value)


def ray_objects(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["apiVersion"].startswith("ray.io/")]


@pytest.mark.parametrize("case", CASES)
def test_every_case_renders_what_the_operator_accepts(case, rendered):
    assert [e for o in rendered[case] for e in operator_errors(o)] == []
    assert ray_objects(rendered[case]), "no KubeRay object to check"


@pytest.mark.parametrize("toggle", sorted(TOGGLES))
def test_every_toggle_renders_what_the_operator_accepts(toggle):
    objects = render(merge_values(ROOT_VALUES, TOGGLES[toggle]))
    assert validate(objects) == []
    assert [e for o in objects for e in operator_errors(o)] == []


# --- GCS fault tolerance: the password through gcsFaultToleranceOptions only -----------------

def head_container(rayservice: dict) -> dict:
    return rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
        "containers"][0]


@pytest.mark.parametrize("case", ["production", "existing-redis"])
def test_fault_tolerant_head_gets_the_password_from_gcs_options_only(case, rendered):
    service = one(rendered[case], "RayService")
    names = [e["name"] for e in head_container(service)["env"]]
    assert "REDIS_PASSWORD" not in names and "REDIS_CONNECTION_STRING" not in names
    options = service["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert set(options["redisPassword"]["valueFrom"]) == {"secretKeyRef"}
    worker = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert "REDIS_PASSWORD" in [e["name"] for e in worker["template"]["spec"]["containers"][0][
        "env"]], "the replicas on the workers still read Feast's Redis"


@pytest.mark.parametrize("env, field", [
    ({"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "irec-redis",
                                                               "key": "redis-password"}}},
     "containers[0].env.REDIS_PASSWORD"),
    ({"name": "RAY_REDIS_ADDRESS", "value": "irec-redis:6379"},
     "containers[0].env.RAY_REDIS_ADDRESS"),
    ({"name": "REDIS_USERNAME", "value": "default"}, "containers[0].env.REDIS_USERNAME"),
])
def test_redis_settings_beside_gcs_options_on_the_head_are_refused(env, field, rendered):
    service = copy.deepcopy(one(rendered["production"], "RayService"))
    head_container(service)["env"].append(env)
    errors = operator_errors(service)
    assert len(errors) == 1 and field in errors[0] and env["name"] in errors[0], errors
    assert errors[0].startswith(f"RayService/{service['metadata']['name']}: ")
    assert validate([service]) == errors, "validate reports it like a schema error"


def test_redis_password_in_start_params_with_gcs_options_is_refused(rendered):
    service = copy.deepcopy(one(rendered["production"], "RayService"))
    service["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"][
        "redis-password"] = "$REDIS_PASSWORD"
    assert any("rayStartParams.redis-password" in e for e in operator_errors(service))


# --- Names within the operator's limits ------------------------------------------------------

def test_a_long_release_gets_names_within_the_operators_limits():
    values = merge_values(case_values("production"), {"retraining": {"job": {"enabled": True}}})
    objects = render(values, release=LONG_RELEASE)
    assert validate(objects) == []
    named = {o["kind"]: o["metadata"]["name"] for o in objects if o["kind"] in LIMITS}
    assert set(named) == set(LIMITS)
    for kind, name in named.items():
        assert len(name) <= LIMITS[kind] and re.fullmatch(r"[a-z][-a-z0-9]*[a-z0-9]", name), name
    assert named["RayCronJob"].endswith("-retrain") and len(named["RayCronJob"]) == 36
    again = {o["kind"]: o["metadata"]["name"] for o in render(values, release=LONG_RELEASE)
             if o["kind"] in LIMITS}
    other = {o["kind"]: o["metadata"]["name"]
             for o in render(values, release="recommender-production-eu2") if o["kind"] in LIMITS}
    assert again == named and other["RayCronJob"] != named["RayCronJob"]
    printed = notes(values, release=LONG_RELEASE)
    assert named["RayCronJob"] in printed and named["RayService"] in printed


@pytest.mark.parametrize("kind, limit", [("RayCronJob", 36), ("RayService", 47)])
def test_names_past_the_operators_limit_are_refused(kind, limit, rendered):
    obj = copy.deepcopy(one(rendered["default"], kind))
    obj["metadata"]["name"] = "r" * (limit + 1)
    errors = operator_errors(obj)
    assert errors and "metadata.name" in errors[0] and f"no more than {limit}" in errors[0]
    assert "r" * (limit + 1) in errors[0]


def test_a_job_name_past_kuberays_limit_or_not_dns_1035_is_refused_by_the_schema():
    name = "nightly-" + "x" * 40
    message = refused(merge_values(ROOT_VALUES, {"retraining": {"job": {"enabled": True,
                                                                        "name": name}}}))
    assert "at '/retraining/job/name'" in message and "47" in message
    message = refused(merge_values(ROOT_VALUES, {"retraining": {"job": {"enabled": True,
                                                                        "name": "7-nightly"}}}))
    assert "'7-nightly' does not match pattern" in message


def test_a_release_not_starting_with_a_letter_is_refused():
    assert refused(ROOT_VALUES, release="1recs").startswith(
        'the release\'s full name "1recs-irec" must start with a lowercase letter')


# --- Schedules and time zones ----------------------------------------------------------------

@pytest.mark.parametrize("key, schedule", [
    ("retraining.schedule.cron", "0 3 * * 8"),
    ("retraining.schedule.cron", "61 * * * *"),
    ("retraining.schedule.cron", "0 3 * *"),
    ("retraining.schedule.cron", "TZ=Europe/Berlin 0 3 * * *"),
    ("features.materialize.schedule", "@fortnightly"),
])
def test_bad_schedules_are_refused_at_render(key, schedule):
    section, *rest = key.split(".")
    nested: object = schedule
    for part in reversed(rest):
        nested = {part: nested}
    message = refused(merge_values(ROOT_VALUES, {section: nested}))
    assert f"at '/{key.replace('.', '/')}': '{schedule}' does not match pattern" in message


@pytest.mark.parametrize("key, zone", [("retraining.schedule.timeZone", "Europe/Berln"),
                                       ("features.materialize.timeZone", "UTC+2"),
                                       ("retraining.schedule.timeZone", "Local")])
def test_bad_time_zones_are_refused_at_render(key, zone):
    section, *rest = key.split(".")
    nested: object = zone
    for part in reversed(rest):
        nested = {part: nested}
    assert refused(merge_values(ROOT_VALUES, {section: nested})).startswith(f'{key}="{zone}"')


@pytest.mark.parametrize("field, value, message", [
    ("schedule", "0 3 * * 8", "end of range (8) above maximum (6)"),
    ("schedule", "5-2 * * * *", "beginning of range (5) beyond end of range (2)"),
    ("schedule", "CRON_TZ=Etc/UTC 0 3 * * *", "cannot use TZ or CRON_TZ in schedule"),
    ("timeZone", "Mars/Olympus_Mons", "unknown time zone Mars/Olympus_Mons"),
    ("timeZone", "", "must not be empty string"),
])
def test_the_operator_refuses_bad_raycronjob_schedules(field, value, message, rendered):
    cron = copy.deepcopy(one(rendered["default"], "RayCronJob"))
    cron["spec"][field] = value
    errors = operator_errors(cron)
    assert len(errors) == 1 and f"spec.{field}" in errors[0] and message in errors[0], errors
    assert repr(value) in errors[0]


@pytest.mark.parametrize("schedule, error", [
    ("0 3 * * 0", None), ("*/15 9-17 * * MON-FRI", None), ("0 0 1 jan,JUL ?", None),
    ("00 03 * * 06", None), ("@daily", None), ("@every 1h30m", None),
    ("0 3 * * 7", "end of range (7) above maximum (6)"), ("*/0 * * * *", "should be a positive"),
    ("0 24 * * *", "end of range (24)"), ("* * 0 * *", "below minimum (1)"),
    ("0 3 * * 1 2", "expected exactly 5 fields, found 6"), ("@every 5", "failed to parse"),
    ("1-2-3 * * * *", "too many hyphens"), ("0 3 * * Sun/2/1", "too many slashes"),
])
def test_schedules_parse_as_robfig_cron_and_the_schema_pattern_agrees(schedule, error):
    found = schedule_error(schedule)
    assert (found is None) if error is None else (error in found), found
    assert bool(re.fullmatch(SCHEDULE_PATTERN, schedule)) == (error is None)


def test_time_zone_list_is_generated():
    assert TIME_ZONES_PATH.read_text() == render_time_zones(), (
        "charts/irec/files/time-zones.txt is stale: run `make chart-config`")
    assert {"Etc/UTC", "Europe/Berlin", "UTC"} <= set(TIME_ZONES_PATH.read_text().split())


# --- RayJob settings --------------------------------------------------------------------------

def test_a_job_that_keeps_its_cluster_has_no_ttl_and_a_ttl_on_it_is_refused():
    values = merge_values(ROOT_VALUES, {"retraining": {"shutdownAfterJobFinishes": False,
                                                       "job": {"enabled": True}}})
    job = one(render(values), "RayJob")
    assert job["spec"]["shutdownAfterJobFinishes"] is False
    assert "ttlSecondsAfterFinished" not in job["spec"]
    job["spec"]["ttlSecondsAfterFinished"] = 3600
    errors = operator_errors(job)
    assert len(errors) == 1 and "spec.ttlSecondsAfterFinished" in errors[0]
    assert "shutdownAfterJobFinishes set to false" in errors[0] and "3600" in errors[0]


@pytest.mark.parametrize("edit, field", [
    ({"submissionMode": "InteractiveMode"}, "spec.jobTemplate.backoffLimit"),
    ({"submissionMode": "SidecarMode"}, "spec.jobTemplate.submitterPodTemplate"),
    ({"activeDeadlineSeconds": 0}, "spec.jobTemplate.activeDeadlineSeconds"),
    ({"runtimeEnvYAML": "- not\n- a mapping\n"}, "spec.jobTemplate.runtimeEnvYAML"),
    ({"suspend": True, "shutdownAfterJobFinishes": False, "ttlSecondsAfterFinished": 0},
     "spec.jobTemplate.suspend"),
    ({"rayClusterSpec": None}, "spec.jobTemplate.rayClusterSpec"),
])
def test_the_operator_refuses_bad_job_templates(edit, field, rendered):
    cron = copy.deepcopy(one(rendered["default"], "RayCronJob"))
    cron["spec"]["jobTemplate"].update(edit)
    assert any(e.split(": ")[1] == field for e in operator_errors(cron)), operator_errors(cron)


# --- Ray cluster settings ---------------------------------------------------------------------

def test_the_operator_refuses_bad_worker_groups(rendered):
    service = copy.deepcopy(one(rendered["gpu"], "RayService"))
    groups = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    groups[1]["groupName"] = "cpu"
    groups[0]["minReplicas"], groups[0]["maxReplicas"] = 5, 3
    errors = operator_errors(service)
    assert any("workerGroupSpecs[1].groupName" in e and "'cpu' repeats" in e for e in errors)
    assert any("workerGroupSpecs[0].minReplicas" in e and "minReplicas 5 greater than "
               "maxReplicas 3" in e for e in errors)


def test_the_operator_refuses_a_bad_upgrade_strategy(rendered):
    service = copy.deepcopy(one(rendered["default"], "RayService"))
    service["spec"]["upgradeStrategy"] = {"type": "Recreate"}
    assert any("spec.upgradeStrategy.type" in e and "'Recreate'" in e
               for e in operator_errors(service))
    service["spec"]["upgradeStrategy"] = {"type": "NewClusterWithIncrementalUpgrade",
                                          "clusterUpgradeOptions": {
                                              "gatewayClassName": "istio", "intervalSeconds": 0,
                                              "stepSizePercent": 60, "maxSurgePercent": 50}}
    errors = operator_errors(service)
    assert any("stepSizePercent" in e and "got 60" in e for e in errors)
    assert any("intervalSeconds" in e and "got 0" in e for e in errors)


@pytest.mark.parametrize("values, message", [
    (merge_values(FULL_UPGRADE, {"serving": {"upgradeStrategy": {"clusterUpgradeOptions": {
        "stepSizePercent": 80}}}}),
     "serving.upgradeStrategy.clusterUpgradeOptions.stepSizePercent=80 must not exceed "
     "maxSurgePercent=50"),
    (merge_values(FULL_UPGRADE, {"serving": {"autoscaling": {"enabled": False}}}),
     "serving.upgradeStrategy.type=NewClusterWithIncrementalUpgrade needs "
     "serving.autoscaling.enabled=true"),
])
def test_incremental_upgrades_the_operator_would_refuse_are_refused_at_render(values, message):
    assert refused(merge_values(ROOT_VALUES, values)).startswith(message)


# --- Values the operator (or Kubernetes) would take but that are wrong at install ------------

@pytest.mark.parametrize("path, quantity", [
    ("serving.head.resources.limits.memory", "8GB"),
    ("redis.persistence.size", "8 Gi"),
    ("retraining.workers.cpu.resources.requests.cpu", "2cores"),
])
def test_resource_quantities_must_be_kubernetes_quantities(path, quantity):
    nested: object = quantity
    for part in reversed(path.split(".")):
        nested = {part: nested}
    message = refused(merge_values(ROOT_VALUES, nested))
    assert f"at '/{path.replace('.', '/')}': '{quantity}' does not match pattern" in message


def test_kubernetes_quantities_are_accepted_and_fractions_only_as_strings():
    limits = {"cpu": "1500m", "memory": "8Gi", "ephemeral-storage": "1e9"}
    values = {"serving": {"head": {"resources": {"requests": {"cpu": "1.5", "memory": "8G"},
                                                 "limits": limits}}}}
    assert validate(render(merge_values(ROOT_VALUES, values))) == []
    values["serving"]["head"]["resources"]["requests"]["cpu"] = 1.5
    assert "at '/serving/head/resources/requests/cpu'" in refused(merge_values(ROOT_VALUES,
                                                                               values))


@pytest.mark.parametrize("min_available", [2, 3])
def test_a_disruption_budget_not_below_the_serving_workers_is_refused(min_available):
    """minAvailable equal to the workers at their minimum already allows no eviction."""
    values = merge_values(ROOT_VALUES, {"serving": {"podDisruptionBudget": {
        "minAvailable": min_available}}})
    assert refused(values).startswith(
        f"serving.podDisruptionBudget.minAvailable={min_available} must be below the serving "
        "workers (serving.workers.cpu.minReplicas=2 = 2)")
    fixed = {"serving": {"autoscaling": {"enabled": False},
                         "workers": {"cpu": {"replicas": 3, "minReplicas": 3}},
                         "podDisruptionBudget": {"minAvailable": 2}}}
    assert by_kind(render(merge_values(ROOT_VALUES, fixed)), "PodDisruptionBudget")


@pytest.mark.parametrize("training, message", [
    ({"num_workers": 3}, "retraining.training.num_workers=3 x cpus_per_worker=2 does not fit "
                         "the retraining worker group (retraining.workers.cpu: 2 pods x 2 CPUs: "
                         "room for 2 workers)"),
    ({"num_workers": 2, "cpus_per_worker": 3}, "num_workers=2 x cpus_per_worker=3 does not fit"),
    ({"use_gpu": True}, "retraining.training.use_gpu is true but retraining.workers.gpu.enabled "
                        "is false"),
])
def test_ray_train_workers_that_do_not_fit_are_refused(training, message):
    values = merge_values(ROOT_VALUES, {"retraining": {"training": training}})
    assert message in refused(values)


# --- The dataset download under the default-deny policies -------------------------------------

def download_policy(objects: list[dict]) -> dict | None:
    return next((p for p in by_kind(objects, "NetworkPolicy")
                 if p["metadata"]["name"].endswith("-dataset-download")), None)


def test_the_features_job_may_download_the_dataset_and_nothing_else_may(rendered):
    objects = rendered["default"]
    policy = download_policy(objects)["spec"]
    assert policy["policyTypes"] == ["Egress"]
    assert policy["egress"][0]["ports"] == [{"port": 443, "protocol": "TCP"}]
    (peer,) = policy["egress"][0]["to"]
    assert peer["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(peer["ipBlock"]["except"])
    selector = policy["podSelector"]["matchLabels"]
    pods = {o["metadata"]["name"]: (o["spec"].get("jobTemplate", {}).get("spec") or o["spec"])[
        "template"]["metadata"]["labels"] for o in objects if o["kind"] in ("Job", "CronJob")}
    selected = [name for name, labels in pods.items() if selector.items() <= labels.items()]
    assert selected == ["irec-features-apply"]


def test_no_download_opening_without_a_download():
    local = merge_values(ROOT_VALUES, {"features": {"dataset": {"path": "/data/features/ml"}}})
    objects = render(local)
    assert download_policy(objects) is None
    job = next(o for o in objects if o["metadata"]["name"] == "irec-features-apply")
    assert "irec/dataset-download" not in job["spec"]["template"]["metadata"]["labels"]
    assert yaml.safe_load(one(objects, "ConfigMap")["data"]["platform.yaml"])["ingest"][
        "path"] == "/data/features/ml"


def test_notes_warn_when_the_download_has_no_opening():
    closed = merge_values(ROOT_VALUES, {"networkPolicy": {"datasetDownload": {"enabled": False}}})
    assert download_policy(render(closed)) is None
    assert "networkPolicy.datasetDownload is off" in notes(closed)
    assert "networkPolicy.datasetDownload is off" not in notes(ROOT_VALUES)


# --- README: the Secret the existing-redis profile reads -------------------------------------

def test_the_readme_creates_the_secret_of_the_existing_redis_profile():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploy on Kubernetes"):]
    section = section[:section.index("\n## ", 1)]
    auth = case_values("existing-redis")["redis"]["auth"]
    command = (f"kubectl -n irec create secret generic {auth['existingSecret']} "
               f"--from-literal={auth['existingSecretPasswordKey']}=")
    assert command in section
    assert (CHART_DIR / "profiles" / "existing-redis.yaml").exists()
