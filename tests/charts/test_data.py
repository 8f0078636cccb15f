"""Features (Feast server, Jobs, feature_store.yaml), Redis and the network openings."""

from __future__ import annotations

import pytest
import yaml
from chart_cases import by_kind, case_values, one
from feast import FeatureStore
from feast.cli.cli import cli as feast_cli
from typer.testing import CliRunner

from features.config import FEATURE_REPO_DIR
from irec.cli import app as irec_cli
from irec.k8s.pods import containers
from irec.k8s.render import merge_values, render, validate


def named(objects: list[dict], kind: str, suffix: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix))


# The feature server is off by default (no authentication of its own); these turn it on.
SERVING_PODS = {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "serving"}}}
FEATURE_SERVER = {"features": {"server": {"enabled": True, "replicas": 3}},
                  "networkPolicy": {"featureServerClients": [SERVING_PODS]}}


@pytest.fixture(scope="module")
def with_feature_server() -> list[dict]:
    return render(merge_values(case_values("production"), FEATURE_SERVER))


def test_feature_store_yaml_is_the_production_profile(rendered):
    """The pods' feature_store.yaml (from values) is the one the irec code is tested with."""
    rendered_yaml = yaml.safe_load(one(rendered["default"], "ConfigMap")["data"][
        "feature_store.yaml"])
    packaged = yaml.safe_load((FEATURE_REPO_DIR / "feature_store.production.yaml").read_text())
    assert rendered_yaml == packaged | {"online_store": packaged["online_store"] | {
        "redis_type": "redis"}}


def test_feast_reads_the_rendered_store_config(rendered, tmp_path, monkeypatch):
    text = one(rendered["default"], "ConfigMap")["data"]["feature_store.yaml"]
    (tmp_path / "feature_store.yaml").write_text(text)
    monkeypatch.setenv("REDIS_CONNECTION_STRING", "irec-redis.irec.svc:6379,password=pw")
    store = FeatureStore(repo_path=str(tmp_path), fs_yaml_file=tmp_path / "feature_store.yaml")
    assert store.project == "irec"
    assert store.config.online_store.type == "feature_repo.online_store.BoundedRedisOnlineStore"
    assert store.config.online_store.connection_string.startswith("irec-redis.irec.svc:6379,")


def test_every_irec_container_reads_the_chart_configs(rendered):
    for where, container in (c for obj in rendered["production"] for c in containers(obj)):
        if container.get("image", "").split(":")[0] != "registry.example.com/ml/irec":
            continue
        names = [e["name"] for e in container.get("env", [])]
        if "REDIS_PASSWORD" not in names:
            continue
        env = {e["name"]: e for e in container["env"]}
        # $(REDIS_PASSWORD) expands only when the variable comes first.
        assert names.index("REDIS_PASSWORD") < names.index("REDIS_CONNECTION_STRING"), where
        assert env["IREC_FEATURE_STORE_YAML"]["value"] == "/etc/irec/feature_store.yaml", where
        assert env["REDIS_CONNECTION_STRING"]["value"] == (
            "irec-redis.irec.svc:6379,password=$(REDIS_PASSWORD)"), where
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts["/etc/irec"] == "config" and mounts["/data/features"] == "features", where


def test_feature_server_runs_feast_serve_on_the_shared_registry(with_feature_server):
    objects = with_feature_server
    assert validate(objects) == []
    deployment = named(objects, "Deployment", "-feature-server")
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = container["command"][1:]
    # feast's own parsers: the group's options, then the subcommand's (split at its name)
    at = next(i for i, token in enumerate(args) if token in feast_cli.commands)
    context = feast_cli.make_context("feast", args[:at])
    name = args[at]
    params = feast_cli.get_command(context, name).make_context(
        name, args[at + 1:], parent=context).params
    assert (name, params["host"], params["port"]) == ("serve", "0.0.0.0", 6566)
    assert context.params["chdir"] == "/data/features"
    assert context.params["feature_store_yaml"] == "/etc/irec/feature_store.yaml"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    service = named(objects, "Service", "-feature-server")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()


def test_feature_jobs_run_the_irec_cli(rendered):
    objects = rendered["default"]
    job = named(objects, "Job", "-features-apply")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install"
    pod = job["spec"]["template"]["spec"]
    steps = [c["name"] for c in pod["initContainers"]] + [c["name"] for c in pod["containers"]]
    assert steps == ["ingest", "build", "apply", "materialize"]
    cron = named(objects, "CronJob", "-materialize")["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    materialize = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert "--incremental" in materialize["args"]
    runner = CliRunner()
    for container in pod["initContainers"] + pod["containers"] + [materialize]:
        assert container["command"] == ["irec"]
        args = container["args"]
        options = [a for a in args if a.startswith("--")]
        commands = args[:args.index(options[0])]
        result = runner.invoke(irec_cli, [*commands, "--help"])
        assert result.exit_code == 0, result.output
        for option in options:
            assert option in result.output, f"irec {' '.join(commands)} has no {option}"


def test_in_chart_redis_keeps_the_password_off_the_command_line(rendered):
    redis = named(rendered["default"], "StatefulSet", "-redis")["spec"]["template"]["spec"]
    assert redis["securityContext"]["runAsUser"] == 999
    container = redis["containers"][0]
    assert "$REDIS_PASSWORD" in container["args"][0]
    assert "--requirepass" not in " ".join(container["args"])
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["REDIS_PASSWORD"] == {"name": "irec-redis", "key": "redis-password"}


def test_existing_redis_replaces_the_in_chart_one(rendered):
    objects = rendered["existing-redis"]
    assert not [o for o in objects if o["metadata"]["name"].endswith("-redis")
                and o["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"]
    for _, container in (c for obj in objects for c in containers(obj)):
        env = {e["name"]: e for e in container.get("env", [])}
        if "REDIS_CONNECTION_STRING" in env:
            assert env["REDIS_CONNECTION_STRING"]["value"].startswith(
                "redis.data.svc.cluster.local:6379,")
            assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
                "name": "shared-redis", "key": "password"}
    egress = named(objects, "NetworkPolicy", "-redis-clients")["spec"]["egress"]
    assert egress[0]["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "data"}


def test_network_openings(with_feature_server):
    objects = with_feature_server
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(objects, "NetworkPolicy")}
    serving = policies["irec-serving"]
    api = [rule for rule in serving["ingress"]
           if {"port": 8000, "protocol": "TCP"} in rule.get("ports", [])]
    assert api[0]["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}}]
    assert any({"ipBlock": {"cidr": "10.0.0.1/32"}} in rule.get("to", [])
               for rule in serving["egress"])
    redis = policies["irec-redis"]["ingress"][0]
    assert redis["ports"] == [{"port": 6379, "protocol": "TCP"}]
    assert set(redis["from"][0]["podSelector"]["matchExpressions"][0]["values"]) == {
        "serving", "retraining", "features", "feature-server"}
    assert policies["irec-feature-server"]["ingress"][0]["ports"] == [
        {"port": 6566, "protocol": "TCP"}]
    assert {"port": 8265, "protocol": "TCP"} in policies["irec-retraining"]["ingress"][1]["ports"]
