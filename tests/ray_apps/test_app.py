"""The application over HTTP and gRPC: same answers, clear 4xx for every bad input."""

from __future__ import annotations

import grpc
import pytest
import requests

from ray_apps.client import APIError, GRPCClient, HTTPClient
from ray_apps.schemas import RecommendRequest
from serving import recommend_pb2 as pb
from serving import recommend_pb2_grpc as pb_grpc

REQUESTS = [
    RecommendRequest(user_id=42, n=5),
    RecommendRequest(user_id=7, n=10, query="a funny, light-hearted comedy", exclude=[50]),
    RecommendRequest(history=[{"item_id": 50, "timestamp": 880_000_000, "rating": 5},
                              {"item_id": 181, "timestamp": 880_000_600}], n=8),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=["user", "user+query", "history"])
def test_http_and_grpc_return_the_same_top_n(served, request_):
    over_http = served.client().recommend(request_)
    over_grpc = GRPCClient(served.grpc, token=served.token).recommend(request_)
    assert len(over_http.items) == request_.n
    assert [i.item_id for i in over_http.items] == [i.item_id for i in over_grpc.items]
    assert [i.score for i in over_http.items] == pytest.approx([i.score for i in over_grpc.items])
    assert over_http.model == over_grpc.model and not over_http.cold_start
    seen = {e.item_id for e in request_.history or []} | set(request_.exclude)
    assert not seen & {i.item_id for i in over_http.items}
    assert over_http.intent and sum(over_http.intent.values()) == pytest.approx(1.0, abs=1e-4)
    assert {"retrieval", "ranking", "total"} <= set(over_http.latency_ms)
    # Intent runs (beside Retrieval) only for a request with text to understand
    assert ("intent" in over_http.latency_ms) == bool(request_.query)
    for item in over_http.items:
        assert item.title and item.explanation.intent_genres == sorted(
            item.explanation.intent_genres, key=lambda g: -over_http.intent.get(g, 0))


def test_user_history_comes_from_the_feature_store(served, ml100k_workspace):
    """Items the user rated (per the online store) are never recommended back."""
    import pandas as pd

    events = pd.read_parquet(ml100k_workspace.data_dir / "events.parquet")
    rated = set(events.loc[events.user_id == 42, "item_id"].tail(50))
    answer = served.client().recommend(RecommendRequest(user_id=42, n=50))
    assert not rated & {i.item_id for i in answer.items}
    explained = {h for i in answer.items for h in i.explanation.because_of}
    assert explained and explained <= rated


def test_a_query_steers_intent_towards_its_genre(served):
    client = served.client()
    plain = client.recommend(RecommendRequest(user_id=42, n=10))
    steered = client.recommend(RecommendRequest(user_id=42, n=10, query="a horror movie"))
    assert steered.intent["Horror"] > plain.intent["Horror"]
    assert max(steered.intent, key=steered.intent.get) == "Horror"


BAD_HTTP = [
    ({"user_id": 99999}, 404, "user_id"),
    ({"history": []}, 422, "history"),
    ({"history": [{"item_id": 50}]}, 422, "history.0.timestamp"),
    ({"history": [{"item_id": 99999, "timestamp": 1}]}, 422, "history.0.item_id"),
    ({"history": [{"item_id": 1, "timestamp": 5}, {"item_id": 2, "timestamp": 1}]}, 422, "history"),
    ({"user_id": 42, "exclude": [99999]}, 422, "exclude.0"),
    ({"history": [{"item_id": 50, "timestamp": 1, "rating": 6.0}]}, 422, "history.0.rating"),
    ({"user_id": 42, "n": 0}, 422, "n"),
    ({"user_id": 42, "n": 101}, 422, "n"),
    ({"user_id": "forty-two"}, 422, "user_id"),
    ({"user_id": 42, "n": "ten"}, 422, "n"),
    ({"user_id": 42, "query": 7}, 422, "query"),
    ({"user_id": 42, "colour": "red"}, 422, "colour"),
    ({}, 422, "exactly one of user_id or history"),
    ({"user_id": 42, "history": [{"item_id": 1, "timestamp": 1}]}, 422, "exactly one"),
]


@pytest.mark.parametrize(("body", "status", "names"), BAD_HTTP)
def test_bad_http_input_is_a_4xx_naming_the_field(served, body, status, names):
    reply = requests.post(f"{served.http}/recommend", json=body, timeout=30,
                          headers=served.headers())
    assert reply.status_code == status, reply.text
    assert names in reply.json()["error"]


def test_malformed_body_wrong_type_and_oversized_are_rejected(served):
    url = f"{served.http}/recommend"
    broken = requests.post(url, data="{not json",
                           headers={"Content-Type": "application/json", **served.headers()})
    assert broken.status_code == 422
    text = requests.post(url, data="user_id=42",
                         headers={"Content-Type": "text/plain", **served.headers()})
    assert text.status_code == 415 and "Content-Type" in text.json()["error"]
    huge = requests.post(url, data=b"[" + b"1," * 200_000 + b"1]",
                         headers={"Content-Type": "application/json", **served.headers()})
    assert huge.status_code == 413 and "body" in huge.json()["error"]
    listed = requests.post(url, json=[1, 2, 3], headers=served.headers())
    assert listed.status_code == 422


BAD_GRPC = [
    (pb.RecommendRequest(user_id=99999), grpc.StatusCode.NOT_FOUND, "user_id"),
    (pb.RecommendRequest(user_id=42, n=-1), grpc.StatusCode.INVALID_ARGUMENT, "n"),
    (pb.RecommendRequest(), grpc.StatusCode.INVALID_ARGUMENT, "exactly one"),
    (pb.RecommendRequest(history=[pb.HistoryEvent(item_id=99999, timestamp=1)]),
     grpc.StatusCode.INVALID_ARGUMENT, "history.0.item_id"),
    (pb.RecommendRequest(history=[pb.HistoryEvent(item_id=0, timestamp=1)]),
     grpc.StatusCode.INVALID_ARGUMENT, "history.0.item_id"),
    (pb.RecommendRequest(user_id=42, query="x" * 501), grpc.StatusCode.INVALID_ARGUMENT,
     "query"),
    (pb.RecommendRequest(history=[pb.HistoryEvent(item_id=50, timestamp=1, rating=6.0)]),
     grpc.StatusCode.INVALID_ARGUMENT, "history.0.rating"),
]


@pytest.mark.parametrize(("message", "code", "names"), BAD_GRPC)
def test_bad_grpc_input_is_invalid_argument_naming_the_field(served, message, code, names):
    stub = pb_grpc.RecommenderStub(grpc.insecure_channel(served.grpc))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Recommend(message, metadata=served.metadata(), timeout=30)
    assert caught.value.code() == code
    assert names in caught.value.details()


def test_health_over_both_protocols_needs_no_token(served, model_tag):
    assert HTTPClient(served.http).health().model == model_tag
    assert GRPCClient(served.grpc).health().model == model_tag


def test_client_raises_a_typed_error(served):
    with pytest.raises(APIError) as caught:
        served.client().recommend(RecommendRequest(user_id=99999))
    assert caught.value.status == 404 and "user_id" in caught.value.message
