"""Bearer tokens on the live app: HTTP and gRPC, scopes, open health, rotation."""

from __future__ import annotations

import grpc
import pytest
import requests

from serving import recommend_pb2 as pb
from serving import recommend_pb2_grpc as pb_grpc
from serving.auth import create_token

BODY = {"user_id": 42, "n": 3}


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not-a-known-token-0123456789abcdef",
                                    "Basic dXNlcjpwYXNz"])
def test_http_without_a_known_token_is_401(served, header):
    headers = {"Authorization": header} if header else {}
    reply = requests.post(f"{served.http}/recommend", json=BODY, headers=headers, timeout=30)
    assert reply.status_code == 401, reply.text
    assert reply.json()["field"] == "authorization"
    assert reply.headers["WWW-Authenticate"] == "Bearer"


def test_a_refused_caller_never_gets_its_body_read(served):
    """The token is checked first: an unauthenticated oversized or malformed body is a 401."""
    url = f"{served.http}/recommend"
    huge = requests.post(url, data=b"[" + b"1," * 200_000 + b"1]", timeout=30,
                         headers={"Content-Type": "application/json"})
    broken = requests.post(url, data="{not json", timeout=30,
                           headers={"Content-Type": "application/json"})
    assert (huge.status_code, broken.status_code) == (401, 401)


def test_scopes_read_recommends_and_unknown_routes_need_write(served, tokens):
    ok = requests.post(f"{served.http}/recommend", json=BODY, headers=served.headers(),
                       timeout=30)
    assert ok.status_code == 200 and len(ok.json()["items"]) == 3
    writer = {"Authorization": f"Bearer {tokens['write']}"}
    assert requests.post(f"{served.http}/recommend", json=BODY, headers=writer,
                         timeout=30).status_code == 200  # write implies read
    denied = requests.post(f"{served.http}/events", json={}, headers=served.headers(),
                           timeout=30)
    assert denied.status_code == 403 and "'write'" in denied.json()["error"]
    empty = requests.post(f"{served.http}/events", json={}, headers=writer, timeout=30)
    assert (empty.status_code, empty.json()["field"]) == (422, "events")  # past auth
    assert requests.post(f"{served.http}/nowhere", json={}, headers=writer,
                         timeout=30).status_code == 404
    assert requests.post(f"{served.http}/nowhere", json={}, headers=served.headers(),
                         timeout=30).status_code == 403  # unknown routes need write


def test_health_and_api_docs_are_open(served):
    for path in ("/healthz", "/openapi.json", "/docs"):
        assert requests.get(f"{served.http}{path}", timeout=30).status_code == 200, path


@pytest.mark.parametrize(("metadata", "code"), [
    ((), grpc.StatusCode.UNAUTHENTICATED),
    ((("authorization", "Bearer wrong-token-wrong-token-wrong-token"),),
     grpc.StatusCode.UNAUTHENTICATED),
])
def test_grpc_without_a_known_token_is_unauthenticated(served, metadata, code):
    stub = pb_grpc.RecommenderStub(grpc.insecure_channel(served.grpc))
    with pytest.raises(grpc.RpcError) as refused:
        stub.Recommend(pb.RecommendRequest(user_id=42, n=3),
                       metadata=(("application", "irec"), *metadata), timeout=30)
    assert refused.value.code() == code
    assert "authorization" in refused.value.details()
    health = stub.Health(pb.HealthRequest(), metadata=(("application", "irec"),), timeout=30)
    assert health.status in ("ok", "degraded")
    answer = stub.Recommend(pb.RecommendRequest(user_id=42, n=3), metadata=served.metadata(),
                            timeout=30)
    assert len(answer.items) == 3


def test_a_token_added_to_the_file_works_without_a_restart(served, auth):
    fresh = create_token(auth, "rotated-in", ["read"])
    reply = requests.post(f"{served.http}/recommend", json=BODY, timeout=30,
                          headers={"Authorization": f"Bearer {fresh}"})
    assert reply.status_code == 200, reply.text
