"""Operations: cold start, hot swap under load, contract refusal, backpressure, fuzzing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from ray_apps.app import CONTROLLER_ENV, REPLICA_ENV, apply, deploy, preflight, serve_config
from ray_apps.client import GRPCClient
from ray_apps.config import STAGES, AppArgs, Clock, DeploymentConfig, with_model_tag
from ray_apps.models import ContractError
from ray_apps.schemas import RecommendRequest
from serving import recommend_pb2 as pb
from serving import recommend_pb2_grpc as pb_grpc
from tests.helpers import RequestStream
from tests.ray_apps.conftest import save_model


def _redeploy(args: AppArgs) -> None:
    deploy({"irec": args})


def _with(args: AppArgs, tag: str | None = None, clock: Clock | None = None,
          deployments: dict | None = None) -> AppArgs:
    """``args`` serving another model, clock or placement."""
    change = {"model_tag": tag, "clock": clock, "deployments": deployments}
    serving = args.serving.model_copy(update={k: v for k, v in change.items() if v is not None})
    return args.model_copy(update={"serving": serving})


def test_expired_features_fall_back_to_popularity_within_intent(served, app_args, dataset_end):
    """Past the 365-day TTL of user_history, a known user is served the cold-start path."""
    _redeploy(_with(app_args, clock=dataset_end + 400 * 86_400))
    try:
        client = served.client()
        cold = client.recommend(RecommendRequest(user_id=42, n=10))
        assert cold.cold_start and "TTL" in cold.cold_start_reason
        assert len(cold.items) == 10
        comedy = client.recommend(RecommendRequest(user_id=42, n=10, query="a comedy, funny"))
        assert comedy.cold_start and max(comedy.intent, key=comedy.intent.get) == "Comedy"
        in_genre = sum("Comedy" in i.genres for i in comedy.items)
        assert in_genre > sum("Comedy" in i.genres for i in cold.items)
        assert in_genre >= 8
    finally:
        _redeploy(app_args)
    assert not served.client().recommend(RecommendRequest(user_id=42)).cold_start


def test_hot_swap_under_a_stream_of_requests_loses_none(served, app_args, untrained):
    new_tag = save_model(untrained, seed_offset=0.01)
    config = serve_config({"irec": app_args})
    try:
        with RequestStream(served.client()) as stream:
            stream.wait_for(5, 120, f"5 answers from {app_args.serving.model_tag} before the swap")
            apply(with_model_tag(config, new_tag))
            stream.wait_for(20, 300, f"20 answers after the swap to {new_tag}")
    finally:
        apply(config)
    assert not stream.worker.is_alive(), "the request stream did not stop within 60 s"
    seen, failures = stream.seen, stream.failures
    assert not failures, failures[:3]
    assert seen[0] == app_args.serving.model_tag and set(seen[-10:]) == {new_tag}
    swaps = sum(a != b for a, b in zip(seen, seen[1:], strict=False))
    assert swaps == 1, "a request mixed or flapped between model versions"


def test_contract_mismatch_refuses_to_start(served, app_args, untrained):
    _, _, _, hashes = untrained
    wrong = {name: "0" * 64 for name in hashes}
    bad_tag = save_model(untrained, services=wrong)
    bad = _with(app_args, tag=bad_tag, deployments={s: DeploymentConfig(
        ray_actor_options={"num_cpus": 0.1}, max_constructor_retry_count=1) for s in STAGES})
    with pytest.raises(ContractError, match="refusing to start"):
        preflight(bad)
    with pytest.raises(RuntimeError, match="refusing to start"):
        deploy({"irec": app_args, "bad": bad}, check=False)
    _redeploy(app_args)


def test_overload_gets_503_and_resource_exhausted(served, app_args):
    ingress = DeploymentConfig(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=1,
                               max_queued_requests=1)
    tight = _with(app_args, deployments={**app_args.serving.deployments, "Ingress": ingress})
    deploy({"irec": app_args, "tight": tight})
    body = {"user_id": 42, "n": 10, "query": "an adventure in space"}
    try:
        with ThreadPoolExecutor(24) as pool:
            codes = list(pool.map(lambda _: requests.post(
                f"{served.http}/tight/recommend", json=body, timeout=60,
                headers=served.headers()).status_code, range(48)))
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0
        stub = pb_grpc.RecommenderStub(grpc.insecure_channel(served.grpc))
        message = pb.RecommendRequest(user_id=42, n=10, query="an adventure in space")
        calls = [stub.Recommend.future(message, metadata=served.metadata("tight"),
                                       timeout=60) for _ in range(48)]
        outcomes = []
        for call in calls:
            try:
                call.result()
                outcomes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                outcomes.append(exc.code())
        assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in outcomes
    finally:
        _redeploy(app_args)
    assert GRPCClient(served.grpc, token=served.token).health().status == "ok"


def test_serve_config_is_the_builders_output(app_args):
    config = serve_config({"irec": app_args})
    application = config["applications"][0]
    assert application["import_path"] == "ray_apps.app:build_app"
    assert AppArgs.model_validate(application["args"]) == app_args
    by_name = {d["name"]: d for d in application["deployments"]}
    for stage in STAGES:
        assert by_name[stage]["user_config"] == app_args.serving.user_config(stage), stage
        assert by_name[stage]["ray_actor_options"]["num_cpus"] == 0.1
    assert by_name["Ingress"]["max_queued_requests"] == 64
    assert config["grpc_options"]["grpc_servicer_functions"] == [
        "serving.recommend_pb2_grpc.add_RecommenderServicer_to_server"]
    assert application["runtime_env"] == {"env_vars": REPLICA_ENV}
    assert config["controller_options"] == {"runtime_env": {"env_vars": CONTROLLER_ENV}}


def _ray_processes() -> dict[str, list[dict[str, str]]]:
    """The environment of each local Ray worker process, by its title (``ray::<Actor>``)."""
    found: dict[str, list[dict[str, str]]] = {}
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
            environ = (proc / "environ").read_bytes()
        except OSError:  # not a process, or it exited meanwhile
            continue
        if title.startswith("ray::"):
            pairs = [p.split(b"=", 1) for p in environ.split(b"\0") if b"=" in p]
            found.setdefault(title.strip()[5:], []).append(
                {k.decode(): v.decode() for k, v in pairs})
    return found


def test_serve_switches_reach_the_live_proxy_and_replicas(served):
    """Serve's latency switches are in the env of the running proxy and of every replica."""
    processes = _ray_processes()
    for stage in STAGES:
        (env,) = processes[f"ServeReplica:irec:{stage}"]
        assert {k: env.get(k) for k in REPLICA_ENV} == REPLICA_ENV, stage
    (env,) = processes["ProxyActor"]
    assert {k: env.get(k) for k in CONTROLLER_ENV} == CONTROLLER_ENV


def test_fuzzed_requests_never_get_a_server_error(served):
    """Schemathesis generates requests from the live OpenAPI schema; none may get a 5xx."""
    schema = schemathesis.openapi.from_url(f"{served.http}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {o.path for o in operations} >= {"/recommend", "/healthz"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:
            response = case.call(timeout=60, headers=served.headers())
            assert response.status_code < 500, (case.body, response.text)

        no_server_error()


def test_a_grpc_message_over_the_body_limit_is_refused_by_the_proxy(served):
    """Like HTTP's 413, a gRPC message over 256 KiB never reaches the app (Serve's default
    limit is 2 GiB: a 1.6 MB message used to be read, routed and validated)."""
    stub = pb_grpc.RecommenderStub(grpc.insecure_channel(served.grpc))
    metadata = served.metadata()
    big = pb.RecommendRequest(user_id=42, n=5, query="space " * 270_000)  # 1.6 MB
    with pytest.raises(grpc.RpcError) as refused:
        stub.Recommend(big, metadata=metadata, timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
    assert "larger than max" in refused.value.details(), refused.value.details()
    fine = stub.Recommend(pb.RecommendRequest(user_id=42, n=5), metadata=metadata, timeout=30)
    assert len(fine.items) == 5


def test_a_client_header_cannot_lift_the_request_deadline(served, app_args):
    """``x-request-timeout-seconds: 0`` turns Serve's proxy timeout off; the Ingress still
    answers within the app's request_timeout_s (here 5 ms, under any real request)."""
    quick = app_args.model_copy(update={"serving": app_args.serving.model_copy(
        update={"request_timeout_s": 0.005})})
    deploy({"irec": app_args, "quick": quick})
    try:
        url = f"{served.http}/quick/recommend"
        lifted = requests.post(url, json={"user_id": 42, "n": 5}, timeout=60,
                               headers={"x-request-timeout-seconds": "0", **served.headers()})
        assert lifted.status_code == 408, lifted.text
        assert lifted.json() == {"error": "request: not answered within "
                                          "request_timeout_s=0.005s", "field": "request"}
        stub = pb_grpc.RecommenderStub(grpc.insecure_channel(served.grpc))
        with pytest.raises(grpc.RpcError) as late:
            stub.Recommend(pb.RecommendRequest(user_id=42, n=5), timeout=60,
                           metadata=served.metadata("quick"))
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, late.value
    finally:
        _redeploy(app_args)
    assert served.client().recommend(RecommendRequest(user_id=42, n=5)).items
