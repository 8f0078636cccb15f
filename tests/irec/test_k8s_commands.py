"""The Kubernetes commands without a cluster: dry-run objects, rendered by the real Helm engine,
checked against the Kubernetes and KubeRay schemas; clear errors when values or the cluster are
wrong."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from typer.testing import CliRunner

from irec.cli import app
from irec.config import PlatformConfig
from irec.k8s.operator import operator_errors
from irec.k8s.ops import (
    PREVIOUS_TAG,
    deploy_objects,
    is_hook,
    job_state,
    rolled_out_to,
    rollout_patch,
    rollout_state,
    run_name,
    summarize,
)
from irec.k8s.render import ROOT, profile_values, render, validate
from ray_apps.config import with_model_tag

runner = CliRunner()
SECRET = ["--set", "redis.auth.existingSecret=irec-redis"]


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"KUBECONFIG": "/nonexistent/kubeconfig"})


def documents(output: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(output) if d]


@pytest.fixture(scope="module")
def builder_output() -> dict:
    from ray_apps.app import serve_config

    return serve_config({"irec": PlatformConfig.load(ROOT / "configs" / "k8s.yaml").app_args()})


@pytest.mark.parametrize("profile", ["cpu", "gpu", "existing-redis", "production"])
def test_deploy_apply_dry_run_sends_the_charts_objects_in_dependency_order(profile):
    result = invoke("deploy", "apply", "--dry-run", "-p", profile, "-n", "recs")
    assert result.exit_code == 0, result.output
    sent = documents(result.stdout)
    assert validate(sent) == []
    expected = render(profile_values(profile), release="irec", namespace="recs")
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, sent)) == sorted(map(key, expected))
    assert all(o["metadata"]["namespace"] == "recs" for o in sent)
    kinds = [o["kind"] for o in sent if not is_hook(o)]
    assert kinds.index("ServiceAccount") < kinds.index("StatefulSet") < kinds.index("RayService")
    hooks = [is_hook(o) for o in sent]
    assert hooks == sorted(hooks), "one-off hook Jobs go last"


def test_deploy_render_layers_profiles_files_and_sets(tmp_path):
    extra = tmp_path / "more.yaml"
    extra.write_text("retraining:\n  schedule:\n    cron: '0 1 * * *'\n")
    result = invoke("deploy", "render", "-p", "cpu", "-f", str(extra), "--set",
                    "retraining.schedule.suspend=true")
    assert result.exit_code == 0, result.output
    cron = next(o for o in documents(result.stdout) if o["kind"] == "RayCronJob")
    assert cron["spec"]["schedule"] == "0 1 * * *" and cron["spec"]["suspend"] is True


def test_retrain_submit_dry_run_is_the_scheduled_runs_spec_under_its_own_name():
    result = invoke("retrain", "submit", "--dry-run", "-p", "production", "--name", "nightly-7")
    assert result.exit_code == 0, result.output
    [job] = documents(result.stdout)
    assert validate([job]) == []
    assert job["kind"] == "RayJob" and job["metadata"]["name"] == "nightly-7"
    assert "python -m irec.pipeline --config" in job["spec"]["entrypoint"]
    cron = next(o for o in render(profile_values("production")) if o["kind"] == "RayCronJob")
    assert job["spec"] == cron["spec"]["jobTemplate"]


def test_run_names_are_unique_per_second_and_within_kuberays_limit():
    assert run_name("irec", at=0) == "irec-retrain-19700101-000000"
    assert run_name("irec", at=1) != run_name("irec", at=0)
    for release in ("recommender-production-eu1", "x" * 80, "recommender-production-eu2"):
        name = run_name(release, at=0)
        assert len(name) <= 47 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
    assert run_name("recommender-production-eu1", at=0) != run_name(
        "recommender-production-eu2", at=0)
    job = {"apiVersion": "ray.io/v1", "kind": "RayJob",
           "metadata": {"name": run_name("recommender-production-eu1", at=0)}, "spec": {}}
    assert not [e for e in operator_errors(job) if "metadata.name" in e]


def test_rollout_dry_run_changes_only_the_stages_model_tag(builder_output):
    result = invoke("rollout", "--model-tag", "interest:v7", "--dry-run", *SECRET)
    assert result.exit_code == 0, result.output
    [service] = documents(result.stdout)
    assert validate([service]) == []
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == with_model_tag(
        builder_output, "interest:v7")
    before = next(o for o in deploy_objects({"redis": {"auth": {"existingSecret": "irec-redis"}}},
                                            release="irec", namespace="irec")
                  if o["kind"] == "RayService")
    unchanged = copy.deepcopy(service)
    unchanged["spec"]["serveConfigV2"] = before["spec"]["serveConfigV2"]
    assert unchanged == before


def test_objects_the_operator_would_refuse_are_refused_like_schema_errors(monkeypatch):
    """The CLI validates with the KubeRay operator's rules too (irec.k8s.validate)."""
    import irec.k8s.ops as ops

    objects = render(profile_values("production"))
    service = next(o for o in objects if o["kind"] == "RayService")
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["env"].append({"name": "REDIS_PASSWORD", "valueFrom": {
        "secretKeyRef": {"name": "irec-redis", "key": "redis-password"}}})
    monkeypatch.setattr(ops, "deploy_objects", lambda values, **_: objects)
    result = invoke("deploy", "render", "-p", "production")
    assert result.exit_code == 2
    assert "KubeRay operator rules" in result.output and "REDIS_PASSWORD" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["deploy", "render", "--set", "serving.workers.cpu.replicas=-1"], "replicas"),
    (["deploy", "render", *SECRET, "--set", "serving.replcias=2"], "replcias"),
    (["deploy", "render", "--set", "noequals"], "key.path=value"),
    (["deploy", "render"], "redis.auth.existingSecret"),
    (["deploy", "render", "-p", "nope"], "no profile 'nope'"),
    (["rollout", "--model-tag", "x:1", "--dry-run", "--app", "other", *SECRET], "other"),
    (["deploy", "status"], "no Kubernetes cluster configured"),
    (["rollout", "--model-tag", "champion", *SECRET], "moves"),
    (["rollout", "--model-tag", "interest:latest", *SECRET], "moves"),
    (["rollout", "--undo", "--dry-run", *SECRET], "no --dry-run"),
    (["rollout", "--undo", "--model-tag", "interest:v1", *SECRET], "exactly one"),
    (["retrain", "submit", *SECRET], "no Kubernetes cluster configured"),
])
def test_bad_values_and_no_cluster_are_clear_errors(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def rayservice(generation: int, observed: int, tag: str, app_status: str) -> dict:
    config = {"applications": [{"name": "irec", "deployments": [
        {"name": stage, "user_config": {"model_tag": tag}}
        for stage in ("Retrieval", "Intent", "Ranking")] + [{"name": "Ingress"}]}]}
    return {
        "apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": "irec-serve", "namespace": "irec", "generation": generation},
        "spec": {"serveConfigV2": yaml.safe_dump(config)},
        "status": {"observedGeneration": observed,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "x",
                                   "message": "", "lastTransitionTime": "2026-11-23T00:00:00Z"}],
                   "activeServiceStatus": {"applicationStatuses": {
                       "irec": {"status": app_status, "message": ""}}}},
    }


def test_rollout_waits_for_the_operator_and_the_app():
    done = rayservice(3, 3, "interest:v7", "RUNNING")
    head = {"name": "ray-head", "image": "irec:0.1.0"}
    assert validate([{**done, "spec": {**done["spec"], "rayClusterConfig": {
        "headGroupSpec": {"template": {"spec": {"containers": [head]}}}}}}]) == []
    assert rolled_out_to(done, "interest:v7")
    assert not rolled_out_to(rayservice(4, 3, "interest:v7", "RUNNING"), "interest:v7")
    assert not rolled_out_to(rayservice(3, 3, "interest:v7", "DEPLOYING"), "interest:v7")
    assert not rolled_out_to(done, "interest:v8")
    assert summarize(done) == "RayService/irec-serve: ready=True app=RUNNING"


def test_a_rollout_records_what_it_replaces_and_sees_a_failed_deploy():
    before = rayservice(3, 3, "interest:v6", "RUNNING")
    patch = rollout_patch(before, "interest:v7")
    assert patch["metadata"] == {"annotations": {PREVIOUS_TAG: "interest:v6"}}
    assert rollout_state(rayservice(4, 4, "interest:v7", "DEPLOY_FAILED"), "interest:v7") == \
        "failed"
    assert rollout_state(rayservice(4, 3, "interest:v7", "DEPLOY_FAILED"), "interest:v7") == \
        "pending"  # the operator has not seen the patch yet: the old app's status
    assert rollout_state(rayservice(4, 4, "interest:v7", "RUNNING"), "interest:v7") == "done"


@pytest.mark.parametrize("status, finished", [
    ({}, False),
    ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, False),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, True),
    ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED"}, True),
    ({"jobDeploymentStatus": "ValidationFailed"}, True),
])
def test_job_state_knows_when_a_run_is_over(status, finished):
    job = {"kind": "RayJob", "metadata": {"name": "r"}, "status": status}
    assert job_state(job)[2] is finished
    assert summarize(job).startswith("RayJob/r: ")
