"""Faults on the real thing: the app on its own redis-server, which the tests stop and SIGSTOP;
a model volume that is not there.

A down or hung online store must end every request within the deadline, with the popularity
fallback flagged in ``cold_start_reason`` (never a 5xx, never a hang), health saying
"degraded", and the app recovering by itself when Redis is back.
"""

from __future__ import annotations

import os
import time

import pytest
import requests

from features.store import apply, materialize, open_store
from ray_apps.app import apply as apply_config
from ray_apps.app import deploy, serve_config
from ray_apps.config import STAGES, DeploymentConfig
from tests.helpers import RedisProcess, wait_until

QUIET = {"log": lambda _: None}


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    server = RedisProcess(tmp_path_factory.mktemp("faulty-redis"))
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def redis_app(served, app_args, own_redis) -> str:
    """The app again, as application ``onredis``, reading features from ``own_redis``."""
    features = app_args.features.model_copy(update={"online_store": "redis"})
    previous = os.environ.get("REDIS_CONNECTION_STRING")
    os.environ["REDIS_CONNECTION_STRING"] = own_redis.connection
    try:
        store = open_store(features)
        apply(store, **QUIET)
        materialize(store, **QUIET)
    finally:
        os.environ.pop("REDIS_CONNECTION_STRING")
        if previous is not None:
            os.environ["REDIS_CONNECTION_STRING"] = previous
    on_redis = app_args.model_copy(update={"features": features})
    config = serve_config({"irec": app_args, "onredis": on_redis})
    config["applications"][1]["runtime_env"]["env_vars"]["REDIS_CONNECTION_STRING"] = (
        own_redis.connection)
    apply_config(config)
    yield f"{served.http}/onredis"
    deploy({"irec": app_args}, check=False)


def _ask(url: str, served) -> tuple[requests.Response, float]:
    began = time.perf_counter()
    reply = requests.post(f"{url}/recommend", json={"user_id": 42, "n": 5}, timeout=60,
                          headers=served.headers())
    return reply, time.perf_counter() - began


@pytest.mark.parametrize("fault", ["SIGSTOP", "stopped"])
def test_a_redis_fault_gets_a_flagged_fallback_in_time_and_recovers(
        served, app_args, redis_app, own_redis, fault):
    healthy, _ = _ask(redis_app, served)
    assert healthy.status_code == 200 and not healthy.json()["cold_start"], healthy.text
    bound = app_args.serving.retrieval.feature_timeout_s + 2.0  # + the pipeline on 2 cores
    own_redis.pause() if fault == "SIGSTOP" else own_redis.stop()
    try:
        for _ in range(3):
            reply, took = _ask(redis_app, served)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["cold_start"] and "feature store unavailable" in body[
                "cold_start_reason"], body
            assert len(body["items"]) == 5
            assert took < bound, f"{took:.2f}s with Redis {fault} (bound {bound}s)"
        health = requests.get(f"{redis_app}/healthz", timeout=30).json()
        assert health["status"] == "degraded" and "feature store" in health["detail"], health
    finally:
        own_redis.resume() if fault == "SIGSTOP" else own_redis.start()
    wait_until(lambda: not _ask(redis_app, served)[0].json()["cold_start"], 30,
               f"the app to serve from Redis again after {fault}")
    assert requests.get(f"{redis_app}/healthz", timeout=30).json()["status"] == "ok"
    # the other app, on SQLite, never noticed
    assert requests.get(f"{served.http}/healthz", timeout=30).json()["status"] == "ok"


def test_a_model_store_that_cannot_give_the_model_fails_the_deploy_in_one_line(
        served, app_args, tmp_path):
    once = DeploymentConfig(ray_actor_options={"num_cpus": 0.1}, max_constructor_retry_count=1)
    args = app_args.model_copy(update={"serving": app_args.serving.model_copy(
        update={"deployments": {s: once for s in STAGES}})})
    config = serve_config({"irec": app_args, "nostore": args})
    unmounted = tmp_path / "unmounted-model-volume"
    config["applications"][1]["runtime_env"]["env_vars"]["BENTOML_HOME"] = str(unmounted)
    try:
        with pytest.raises(RuntimeError, match="Deploying application nostore failed") as failed:
            apply_config(config, timeout_s=300)
        assert (f"ModelStoreError: model_tag '{app_args.serving.model_tag}': the model store at "
                f"{unmounted} cannot give it") in str(failed.value), str(failed.value)[-2000:]
    finally:
        deploy({"irec": app_args}, check=False)
