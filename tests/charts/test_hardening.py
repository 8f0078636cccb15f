"""Production hardening of the chart (issue 12): high availability, a GCS Redis of its own,
authentication (the API's bearer tokens, Ray's token auth, the unauthenticated feature server
off), and a deadline on every Job-like object. Render-only, on every values case."""

from __future__ import annotations

import copy

import pytest
import yaml
from chart_cases import CASES, ROOT_VALUES, by_kind, case_values, one

from irec.k8s.operator import operator_errors
from irec.k8s.pods import pod_templates, ray_clusters
from irec.k8s.render import (
    CHART_DIR,
    ROOT,
    ValuesError,
    merge_values,
    notes,
    render,
    validate,
)
from ray_apps.config import STAGES
from serving.auth import AuthConfig

TOKENS_PATH = "/etc/irec/auth/tokens.yaml"
JOB_KINDS = ("Job", "CronJob", "RayJob", "RayCronJob")
# Cluster presets: every profile and the defaults (which target a cluster too).
CLUSTER_CASES = [case for case in CASES if case != "object-store"]


def refused(values: dict) -> str:
    with pytest.raises(ValuesError) as error:
        render(values)
    return str(error.value)


def serve_config(objects: list[dict]) -> dict:
    return yaml.safe_load(one(objects, "RayService")["spec"]["serveConfigV2"])


def platform_config(objects: list[dict]) -> dict:
    return yaml.safe_load(one(objects, "ConfigMap")["data"]["platform.yaml"])


def cpus(quantity) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def pod_labels(template: dict, node_type: str, cluster: str = "c") -> dict:
    """The labels a pod of ``template`` carries once KubeRay created it."""
    return template["metadata"]["labels"] | {"ray.io/node-type": node_type,
                                             "ray.io/cluster": cluster}


def selects(selector: dict, labels: dict) -> bool:
    return selector["matchLabels"].items() <= labels.items()


# --- A. High availability ---------------------------------------------------------------------

def min_replicas(deployment: dict) -> int:
    if "num_replicas" in deployment:
        return deployment["num_replicas"]
    return deployment["autoscaling_config"]["min_replicas"]


@pytest.mark.parametrize("case", CLUSTER_CASES)
def test_every_stage_keeps_two_replicas(case, rendered):
    deployments = {d["name"]: d for d in serve_config(rendered[case])["applications"][0][
        "deployments"]}
    assert set(deployments) == set(STAGES)
    for stage in STAGES:
        assert min_replicas(deployments[stage]) >= 2, (case, stage)


@pytest.mark.parametrize("case", CLUSTER_CASES)
def test_worker_groups_at_their_minimum_hold_every_stage_twice_on_two_pods(case, rendered):
    """Serve spreads a stage's replicas over the worker pods (its default SPREAD scheduling):
    the CPU workers that always run (minReplicas) must be two at least and have the CPUs of
    every stage's minimum replicas."""
    cluster = one(rendered[case], "RayService")["spec"]["rayClusterConfig"]
    cpu = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == "cpu")
    floor = cpu["minReplicas"] if cluster["enableInTreeAutoscaling"] else cpu["replicas"]
    assert floor >= 2, case
    pod_cpus = cpus(cpu["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    needed = 0.0
    per_pod = 0.0
    for deployment in serve_config(rendered[case])["applications"][0]["deployments"]:
        options = deployment.get("ray_actor_options") or {}
        if options.get("num_gpus"):
            continue
        share = options.get("num_cpus", 1) * min_replicas(deployment)
        needed += share
        per_pod = max(per_pod, options.get("num_cpus", 1))
    assert needed <= floor * pod_cpus, (case, needed, floor, pod_cpus)
    assert per_pod <= pod_cpus, case


@pytest.mark.parametrize("case", CASES)
def test_replicated_pods_spread_over_nodes_softly(case, rendered):
    """Serving workers (every group) and the feature server: a topologySpreadConstraint on the
    node name that selects the pod itself, preferred, so a one-node cluster still runs."""
    spread = []
    for obj in rendered[case]:
        for where, template in pod_templates(obj):
            if obj["kind"] == "RayService" and ".workers[" in where:
                labels = pod_labels(template, "worker")
            elif obj["kind"] == "Deployment":
                labels = template["metadata"]["labels"] | {"pod-template-hash": "h"}
            else:
                continue
            (constraint,) = template["spec"]["topologySpreadConstraints"]
            assert constraint["topologyKey"] == "kubernetes.io/hostname", where
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway", where
            assert constraint["maxSkew"] == 1, where
            assert selects(constraint["labelSelector"], labels), where
            assert set(constraint.get("matchLabelKeys", [])) <= set(labels), where
            spread.append(where)
    assert any(".workers[cpu]" in where for where in spread)


def test_the_spread_follows_its_values():
    values = merge_values(ROOT_VALUES, {"topologySpread": {
        "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}})
    cluster = one(render(values), "RayService")["spec"]["rayClusterConfig"]
    (constraint,) = cluster["workerGroupSpecs"][0]["template"]["spec"][
        "topologySpreadConstraints"]
    assert (constraint["topologyKey"], constraint["whenUnsatisfiable"]) == (
        "topology.kubernetes.io/zone", "DoNotSchedule")
    off = render(merge_values(ROOT_VALUES, {"topologySpread": {"enabled": False}}))
    assert all("topologySpreadConstraints" not in t["spec"]
               for o in off for _, t in pod_templates(o))


@pytest.mark.parametrize("case", CASES)
def test_disruption_budgets_guard_each_replicated_pod_and_let_drains_through(case, rendered):
    """Serving workers, the Redis instances and the feature server have budgets; a budget on
    several pods always allows one eviction at the minimum (or a drain would hang)."""
    objects = rendered[case]
    budgets = {b["metadata"]["labels"]["app.kubernetes.io/component"]: b["spec"]
               for b in by_kind(objects, "PodDisruptionBudget")}
    cluster = one(objects, "RayService")["spec"]["rayClusterConfig"]
    workers = sum(g["minReplicas"] for g in cluster["workerGroupSpecs"])
    assert 1 <= budgets["serving"]["minAvailable"] < workers, case
    worker = cluster["workerGroupSpecs"][0]["template"]
    assert selects(budgets["serving"]["selector"], pod_labels(worker, "worker"))
    assert not selects(budgets["serving"]["selector"], pod_labels(
        cluster["headGroupSpec"]["template"], "head"))
    for obj in by_kind(objects, "StatefulSet") + by_kind(objects, "Deployment"):
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        assert component in budgets, f"{obj['metadata']['name']} has no budget"
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert selects(budgets[component]["selector"], labels)
        if obj["kind"] == "Deployment":
            assert obj["spec"]["replicas"] >= 2
            assert budgets[component]["maxUnavailable"] < obj["spec"]["replicas"]


# --- B. The GCS fault tolerance on its own Redis -----------------------------------------------

def features_redis_host(objects: list[dict]) -> str:
    cluster = one(objects, "RayService")["spec"]["rayClusterConfig"]
    env = {e["name"]: e for e in cluster["workerGroupSpecs"][0]["template"]["spec"][
        "containers"][0]["env"]}
    return env["REDIS_CONNECTION_STRING"]["value"].split(",")[0].rsplit(":", 1)[0]


@pytest.mark.parametrize("case", ["production", "existing-redis"])
def test_gcs_fault_tolerance_never_uses_the_features_redis(case, rendered):
    objects = rendered[case]
    options = one(objects, "RayService")["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    host = options["redisAddress"].rsplit(":", 1)[0]
    assert host != features_redis_host(objects)
    assert host == "irec-gcs-redis.irec.svc"
    gcs = next(o for o in by_kind(objects, "StatefulSet")
               if o["metadata"]["name"] == "irec-gcs-redis")
    args = gcs["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "--maxmemory 200mb --maxmemory-policy noeviction" in args
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    assert services["irec-gcs-redis"]["spec"]["selector"].items() <= gcs["spec"]["template"][
        "metadata"]["labels"].items()
    # Only the serving Ray pods reach it, and they may.
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(objects, "NetworkPolicy")}
    (rule,) = policies["irec-gcs-redis"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "serving")
    egress = [r for r in policies["irec-serving"]["egress"]
              if any(selects(peer.get("podSelector", {"matchLabels": {"x": "y"}}),
                             gcs["spec"]["template"]["metadata"]["labels"])
                     for peer in r.get("to", []))]
    assert egress and egress[0]["ports"] == [{"port": 6379, "protocol": "TCP"}]


def test_no_gcs_redis_without_fault_tolerance(rendered):
    assert not [o for o in rendered["default"]
                if o["metadata"]["labels"].get("app.kubernetes.io/component") == "gcs-redis"]


def test_an_external_gcs_redis_has_its_own_secret_and_opening():
    values = merge_values(case_values("existing-redis"), {
        "serving": {"gcsFaultTolerance": {"redisAddress": "gcs.data.svc:6380", "auth": {
            "existingSecret": "gcs-redis", "existingSecretPasswordKey": "password"}}},
        "networkPolicy": {"externalGcsRedis": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]}})
    objects = render(values)
    assert validate(objects) == []
    options = one(objects, "RayService")["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert options["redisAddress"] == "gcs.data.svc:6380"
    assert options["redisPassword"]["valueFrom"]["secretKeyRef"] == {"name": "gcs-redis",
                                                                      "key": "password"}
    assert not [o for o in objects if "gcs-redis" in o["metadata"]["name"]]
    serving = next(p for p in by_kind(objects, "NetworkPolicy")
                   if p["metadata"]["name"] == "irec-serving")["spec"]
    assert {"ports": [{"port": 6380, "protocol": "TCP"}],
            "to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]} in serving["egress"]


@pytest.mark.parametrize("values, message", [
    ({"serving": {"gcsFaultTolerance": {"enabled": True, "redisAddress": "r.data.svc:6379"}}},
     "serving.gcsFaultTolerance.auth.existingSecret is required with"),
    ({"serving": {"gcsFaultTolerance": {"enabled": True, "redisAddress": "irec-redis.irec.svc:6379",
                                        "auth": {"existingSecret": "x"}}}},
     'serving.gcsFaultTolerance.redisAddress="irec-redis.irec.svc:6379" is the features Redis'),
    ({"redis": {"enabled": False, "external": {"host": "redis.data"}},
      "serving": {"gcsFaultTolerance": {"enabled": True, "redisAddress": "redis.data:6390",
                                        "auth": {"existingSecret": "x"}}}},
     'serving.gcsFaultTolerance.redisAddress="redis.data:6390" is the features Redis'),
])
def test_the_features_redis_or_no_secret_for_the_gcs_is_refused(values, message):
    assert refused(merge_values(ROOT_VALUES, values)).startswith(message)


# --- C. Authentication --------------------------------------------------------------------------

def serving_ray_pods(objects: list[dict]) -> list[tuple[str, dict]]:
    return [(where, template["spec"]) for where, template in pod_templates(
        one(objects, "RayService"))]


@pytest.mark.parametrize("case", CASES)
def test_every_serving_ray_pod_mounts_the_api_tokens(case, rendered):
    """Head and every worker group (Ingress replicas land anywhere), read-only, the whole Secret
    (no subPath, so a rotation reaches the pods), at the path the platform config names."""
    objects = rendered[case]
    values = merge_values({"serving": {"auth": {"existingSecret": "irec-api-tokens",
                                                "secretKey": "tokens.yaml"}}},
                          case_values(case))["serving"]["auth"]
    pods = serving_ray_pods(objects)
    assert len(pods) >= 2
    for where, spec in pods:
        volume = next(v for v in spec["volumes"] if v["name"] == "api-tokens")
        assert volume["secret"]["secretName"] == values["existingSecret"], where
        assert volume["secret"]["items"] == [{"key": values["secretKey"],
                                              "path": "tokens.yaml"}], where
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "api-tokens"]
        assert mount == {"name": "api-tokens", "mountPath": "/etc/irec/auth", "readOnly": True}
        assert "subPath" not in mount
    auth = AuthConfig.model_validate(platform_config(objects)["serving"]["auth"])
    assert auth.enabled and auth.tokens_file == TOKENS_PATH
    args = serve_config(objects)["applications"][0]["args"]["serving"]["auth"]
    assert AuthConfig.model_validate(args).tokens_file == TOKENS_PATH
    for obj in by_kind(objects, "RayCronJob") + by_kind(objects, "Job"):
        for where, template in pod_templates(obj):
            assert "api-tokens" not in {v["name"] for v in template["spec"]["volumes"]}, where


def test_the_readme_creates_the_api_token_secret_and_shows_clients_the_header():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploy on Kubernetes"):]
    section = section[:section.index("\n## ", 1)]
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["serving"]["auth"]
    assert (f"kubectl -n irec create secret generic {values['existingSecret']} \\\n"
            f"  --from-file={values['secretKey']}=") in section
    assert "irec token create" in section
    assert "Authorization: Bearer" in section and "`authorization` metadata key" in section


def test_the_token_commands_the_chart_prints_parse():
    """NOTES.txt, the render's refusal and the chart README name `irec token create` options
    the real CLI has."""
    from typer.testing import CliRunner

    from irec.cli import app

    help_text = CliRunner().invoke(app, ["token", "create", "--help"], terminal_width=200).output
    texts = [notes(ROOT_VALUES), (CHART_DIR / "README.md").read_text(),
             refused(merge_values(ROOT_VALUES, {"serving": {"auth": {"existingSecret": ""}}}))]
    commands = [line.split("irec token create", 1)[1] for text in texts
                for line in text.replace(";", "\n").splitlines() if "irec token create" in line]
    commands = [c.split("#")[0] for c in commands if " --" in c]
    assert len(commands) == 3
    for command in commands:
        for option in (word for word in command.split() if word.startswith("--")):
            assert option in help_text, option


def test_the_api_token_secret_and_key_follow_the_values():
    values = merge_values(case_values("gpu"), {"serving": {"auth": {
        "existingSecret": "recs-tokens", "secretKey": "api.yaml"}}})
    for where, spec in serving_ray_pods(render(values)):
        volume = next(v for v in spec["volumes"] if v["name"] == "api-tokens")["secret"]
        assert (volume["secretName"], volume["items"]) == (
            "recs-tokens", [{"key": "api.yaml", "path": "tokens.yaml"}]), where
    message = refused(merge_values(ROOT_VALUES, {"serving": {"auth": {"existingSecret": ""}}}))
    assert message.startswith("serving.auth.existingSecret is required when serving.auth.enabled")


def test_auth_off_mounts_nothing_and_tells_the_app():
    objects = render(merge_values(ROOT_VALUES, {"serving": {"auth": {"enabled": False}}}))
    assert validate(objects) == []
    for where, spec in serving_ray_pods(objects):
        assert "api-tokens" not in {v["name"] for v in spec["volumes"]}, where
    assert platform_config(objects)["serving"]["auth"]["enabled"] is False
    args = serve_config(objects)["applications"][0]["args"]["serving"]["auth"]
    assert AuthConfig.model_validate(args).enabled is False


@pytest.mark.parametrize("case", CASES)
def test_every_ray_cluster_runs_with_ray_token_auth(case, rendered):
    """Serving and retraining clusters: KubeRay's authOptions.mode token, so the dashboard and
    Jobs API (8265) refuse calls without the token; no token of ours in any env."""
    clusters = [(w, c) for obj in rendered[case] for w, c in ray_clusters(obj)]
    assert {w.split("/")[0] for w, _ in clusters} == {"RayService", "RayCronJob"}
    for where, cluster in clusters:
        assert cluster["authOptions"] == {"mode": "token"}, where
        assert "enableK8sTokenAuth" not in cluster["authOptions"], where


def test_a_one_off_job_and_a_named_ray_token_secret():
    values = merge_values(ROOT_VALUES, {"rayAuth": {"secretName": "irec-ray-token"},
                                        "retraining": {"job": {"enabled": True}}})
    objects = render(values)
    clusters = [c for obj in objects for _, c in ray_clusters(obj)]
    assert len(clusters) == 3
    assert all(c["authOptions"] == {"mode": "token", "secretName": "irec-ray-token"}
               for c in clusters)
    assert [e for o in objects for e in operator_errors(o)] == []


def test_ray_token_auth_needs_ray_2_52(rendered):
    message = refused(merge_values(ROOT_VALUES, {"serving": {"rayVersion": "2.51.0"}}))
    assert message.startswith('serving.rayVersion="2.51.0": the chart\'s Ray clusters run with '
                              "Ray token authentication")
    service = copy.deepcopy(one(rendered["default"], "RayService"))
    service["spec"]["rayClusterConfig"]["rayVersion"] = "2.51.0"
    errors = operator_errors(service)
    assert len(errors) == 1 and "Ray version 2.52.0" in errors[0], errors


def test_the_feature_server_is_off_by_default_and_never_without_its_policy(rendered):
    for case in CASES:
        assert not by_kind(rendered[case], "Deployment"), case
    message = refused(merge_values(ROOT_VALUES, {"features": {"server": {"enabled": True}},
                                                 "networkPolicy": {"enabled": False}}))
    assert message.startswith("features.server.enabled=true needs networkPolicy.enabled=true")
    objects = render(merge_values(ROOT_VALUES, {"features": {"server": {"enabled": True}}}))
    server = one(objects, "Deployment")
    policy = next(p for p in by_kind(objects, "NetworkPolicy")
                  if p["metadata"]["name"].endswith("-feature-server"))["spec"]
    assert selects(policy["podSelector"], server["spec"]["template"]["metadata"]["labels"])
    assert policy["ingress"][0]["ports"] == [{"port": 6566, "protocol": "TCP"}]


# --- D. Deadlines -------------------------------------------------------------------------------

def deadlines(obj: dict) -> dict:
    spec = obj["spec"]
    if obj["kind"] == "Job":
        return {"active": spec.get("activeDeadlineSeconds")}
    if obj["kind"] == "CronJob":
        return {"active": spec["jobTemplate"]["spec"].get("activeDeadlineSeconds"),
                "starting": spec.get("startingDeadlineSeconds"),
                "concurrency": spec.get("concurrencyPolicy")}
    if obj["kind"] == "RayJob":
        return {"active": spec.get("activeDeadlineSeconds")}
    return {"active": spec["jobTemplate"].get("activeDeadlineSeconds")}


@pytest.mark.parametrize("case", CASES)
def test_every_job_like_object_has_a_deadline(case, rendered):
    objects = rendered[case] + by_kind(render(merge_values(
        case_values(case), {"retraining": {"job": {"enabled": True}}})), "RayJob")
    jobs = [o for o in objects if o["kind"] in JOB_KINDS]
    assert {o["kind"] for o in jobs} == set(JOB_KINDS), case
    for obj in jobs:
        found = deadlines(obj)
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert isinstance(found["active"], int) and found["active"] > 0, where
        if obj["kind"] == "CronJob":
            assert found["starting"] > 0 and found["concurrency"] == "Forbid", where


def test_deadlines_follow_the_values():
    values = merge_values(ROOT_VALUES, {
        "retraining": {"activeDeadlineSeconds": 7000, "job": {"enabled": True}},
        "features": {"apply": {"activeDeadlineSeconds": 900},
                     "materialize": {"activeDeadlineSeconds": 300,
                                     "startingDeadlineSeconds": 120}}})
    found = {o["kind"]: deadlines(o) for o in render(values) if o["kind"] in JOB_KINDS}
    assert found == {"Job": {"active": 900},
                     "CronJob": {"active": 300, "starting": 120, "concurrency": "Forbid"},
                     "RayJob": {"active": 7000}, "RayCronJob": {"active": 7000}}


@pytest.mark.parametrize("key", ["retraining.activeDeadlineSeconds",
                                 "features.apply.activeDeadlineSeconds",
                                 "features.materialize.activeDeadlineSeconds",
                                 "features.materialize.startingDeadlineSeconds"])
def test_no_deadline_is_refused(key):
    nested: object = 0
    for part in reversed(key.split(".")):
        nested = {part: nested}
    message = refused(merge_values(ROOT_VALUES, nested))
    assert f"at '/{key.replace('.', '/')}': minimum: got 0, want 1" in message


def test_the_materialize_deadline_fits_its_hourly_schedule(rendered):
    """The default schedule runs hourly: a run ends (or is failed) before the next starts."""
    cron = one(rendered["default"], "CronJob")["spec"]
    assert cron["schedule"] == "15 * * * *"
    assert cron["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 3600
    assert cron["startingDeadlineSeconds"] == 600
