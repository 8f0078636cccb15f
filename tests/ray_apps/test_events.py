"""The events API on the live app: validated whole, durable, live for the next request.

These tests write into the session's ML-100K workspace: only for new users (ids from 900,000),
so the stored users other tests read keep their histories; items' live counts move.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import pytest
import requests

from data.event_log import EventLog, ExposureLog
from features.store import online_features, open_store
from ray_apps.client import APIError, GRPCClient, HTTPClient
from ray_apps.schemas import MAX_EVENTS, EventIn, EventsRequest, RecommendRequest
from serving import recommend_pb2 as pb
from serving import recommend_pb2_grpc as pb_grpc
from tests.helpers import replica_pids, wait_until


@pytest.fixture(scope="module")
def writer(served, tokens) -> HTTPClient:
    return HTTPClient(served.http, token=tokens["write"])


def _event(event_id: str, user: int, item: int, at: int, **extra) -> EventIn:
    return EventIn(event_id=event_id, user_id=user, item_id=item, timestamp=at, **extra)


def test_an_event_shapes_the_very_next_recommendation(served, writer, dataset_end):
    user = 900_001
    reader = served.client()
    with pytest.raises(APIError) as unknown:
        reader.recommend(RecommendRequest(user_id=user, n=5))
    assert unknown.value.status == 404  # no events yet: an unknown user

    first = [_event(f"shape-{k}", user, item, dataset_end - 600 + k, rating=5.0)
             for k, item in enumerate((50, 172, 181))]  # Star Wars, Empire, Return of the Jedi
    logged = writer.log_events(EventsRequest(events=first))
    assert logged.accepted == [e.event_id for e in first] and not logged.duplicates

    answer = reader.recommend(RecommendRequest(user_id=user, n=10))
    assert not answer.cold_start and answer.request_id
    shown = [i.item_id for i in answer.items]
    assert not {50, 172, 181} & set(shown)  # seen items are excluded at once
    assert any(i.explanation.because_of for i in answer.items)

    took = shown[0]
    writer.log_events(EventsRequest(events=[_event("shape-next", user, took, dataset_end - 1,
                                                   request_id=answer.request_id)]))
    after = reader.recommend(RecommendRequest(user_id=user, n=10))
    assert took not in [i.item_id for i in after.items]  # the very next request knows it


def test_a_retried_batch_counts_once_online_and_in_the_log(served, writer, dataset_end,
                                                            ml100k_workspace):
    user = 900_002
    batch = EventsRequest(events=[_event(f"retry-{k}", user, 10 + k, dataset_end - 100 + k)
                                  for k in range(4)])
    first = writer.log_events(batch)
    again = writer.log_events(batch)
    assert len(first.accepted) == 4 and not again.accepted
    assert again.duplicates == [e.event_id for e in batch.events]
    logged = EventLog.of(ml100k_workspace.data_dir).read()
    mine = logged[logged.user_id == user]
    assert sorted(mine.event_id) == sorted(e.event_id for e in batch.events)
    assert mine.item_id.tolist() == [10, 11, 12, 13]


def _post(served, token: str, body: dict) -> requests.Response:
    return requests.post(f"{served.http}/events", json=body, timeout=30,
                         headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize(("event", "status", "field"), [
    ({"item_id": 99_999}, 422, "events.1.item_id"),
    ({"timestamp": 2**39}, 422, "events.1.timestamp"),
    ({"rating": 7.0}, 422, "events.1.rating"),
    ({"rating": -1.0}, 422, "events.1.rating"),
    ({"event_id": "has space"}, 422, "events.1.event_id"),
    ({"user_id": 0}, 422, "events.1.user_id"),
    ({"kind": "Bad Kind"}, 422, "events.1.kind"),
    ({"colour": "red"}, 422, "events.1.colour"),
])
def test_a_bad_event_refuses_the_whole_batch_naming_the_field(served, tokens, event, status,
                                                              field, ml100k_workspace):
    user = 900_003
    good = {"event_id": f"whole-{field}-{status}", "user_id": user, "item_id": 1,
            "timestamp": 880_000_000}
    bad = {"event_id": f"bad-{field}", "user_id": user, "item_id": 2, "timestamp": 880_000_001,
           **event}
    reply = _post(served, tokens["write"], {"events": [good, bad]})
    assert reply.status_code == status, reply.text
    assert reply.json()["field"] == field, reply.json()
    logged = EventLog.of(ml100k_workspace.data_dir).read()
    assert good["event_id"] not in set(logged.event_id)  # the good event was not taken either


def test_an_oversized_or_empty_batch_is_refused(served, tokens):
    many = [{"event_id": f"many-{k}", "user_id": 900_004, "item_id": 1}
            for k in range(MAX_EVENTS + 1)]
    for body in ({"events": many}, {"events": []}):
        reply = _post(served, tokens["write"], body)
        assert (reply.status_code, reply.json()["field"]) == (422, "events")


def test_events_need_the_write_scope(served, tokens):
    body = {"events": [{"event_id": "scoped", "user_id": 900_005, "item_id": 1}]}
    assert _post(served, tokens["read"], body).status_code == 403
    stub = pb_grpc.RecommenderStub(grpc.insecure_channel(served.grpc))
    message = pb.EventsRequest(events=[pb.Event(event_id="scoped", user_id=900_005, item_id=1)])
    with pytest.raises(grpc.RpcError) as denied:
        stub.LogEvents(message, metadata=served.metadata(), timeout=30)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_grpc_log_events_applies_and_validates_like_http(served, tokens, dataset_end):
    client = GRPCClient(served.grpc, token=tokens["write"])
    user = 900_006
    answer = client.log_events(EventsRequest(events=[
        _event("grpc-1", user, 1, dataset_end - 10), _event("grpc-2", user, 2, dataset_end - 5,
                                                             rating=3.0, kind="rating")]))
    assert answer.accepted == ["grpc-1", "grpc-2"]
    with pytest.raises(APIError) as refused:
        client.log_events(EventsRequest(events=[_event("grpc-3", user, 99_999, dataset_end)]))
    assert refused.value.status == "INVALID_ARGUMENT"
    assert "events.0.item_id" in refused.value.message
    stub = pb_grpc.RecommenderStub(grpc.insecure_channel(served.grpc))
    metadata = (("application", "irec"), ("authorization", f"Bearer {tokens['write']}"))
    with pytest.raises(grpc.RpcError) as invalid:
        stub.LogEvents(pb.EventsRequest(events=[pb.Event(event_id="", user_id=user,
                                                         item_id=1)]),
                       metadata=metadata, timeout=30)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events.0.event_id" in invalid.value.details()
    history = served.client().recommend(RecommendRequest(user_id=user, n=3))
    assert not history.cold_start
    client.close()


def test_an_event_without_a_timestamp_is_stamped_when_received(served, writer,
                                                               ml100k_workspace):
    before = int(time.time())
    writer.log_events(EventsRequest(events=[EventIn(event_id="now-1", user_id=900_007,
                                                    item_id=3)]))
    logged = EventLog.of(ml100k_workspace.data_dir).read()
    stamp = logged.set_index("event_id").loc["now-1", "event_timestamp"].timestamp()
    assert before <= stamp <= time.time() + 1


def test_every_answer_is_logged_as_exposures(served, ml100k_workspace):
    client = served.client()
    answers = {user: client.recommend(RecommendRequest(user_id=user, n=5)) for user in (1, 2, 3)}
    log = ExposureLog.of(ml100k_workspace.data_dir)
    wanted = {a.request_id for a in answers.values()}
    wait_until(lambda: wanted <= set(log.read().request_id), 30,
               "the exposures of three answers in the exposure log")
    shown = log.read()
    for user, answer in answers.items():
        rows = shown[shown.request_id == answer.request_id]
        assert rows.position.tolist() == [1, 2, 3, 4, 5]
        assert rows.item_id.tolist() == [i.item_id for i in answer.items]
        assert rows.score.tolist() == pytest.approx([i.score for i in answer.items])
        assert set(rows.user_id) == {user} and set(rows.model) == {answer.model}


def test_a_killed_events_replica_loses_nothing_acknowledged(served, tokens, dataset_end,
                                                            ml100k_workspace):
    """kill -9 the Events replica while two clients post batches back to back, each retrying
    a batch until it is acknowledged: every acknowledged event is in the log once and counted
    online once, retried batches included, and the lost calls were 503 or 408 (never a 500)."""
    users = [900_100 + k for k in range(5)]
    acked: set[str] = set()
    statuses: list = []
    stop = threading.Event()

    def client(c: int) -> None:
        api = HTTPClient(served.http, token=tokens["write"], timeout_s=60)
        k = 0
        while not stop.is_set():
            batch = EventsRequest(events=[
                _event(f"kill-{c}-{k}-{j}", users[(k + j) % 5], 1 + (7 * k + j) % 1600,
                       dataset_end - 50_000 + 10 * k + c) for j in range(20)])
            k += 1
            for _ in range(240):
                try:
                    answer = api.log_events(batch)
                except APIError as exc:
                    statuses.append(exc.status)
                    time.sleep(0.25)
                    continue
                except OSError as exc:
                    statuses.append(type(exc).__name__)
                    time.sleep(0.25)
                    continue
                acked.update(answer.accepted + answer.duplicates)
                break

    threads = [threading.Thread(target=client, args=(c,)) for c in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 200, 60, "200 events acknowledged before the kill")
    (victim,) = replica_pids("irec", "Events")
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: replica_pids("irec", "Events") not in ([], [victim]), 120,
               "Serve to start a new Events replica")
    count = len(acked)
    wait_until(lambda: len(acked) >= count + 200, 120, "events acknowledged after the kill")
    stop.set()
    for t in threads:
        t.join(timeout=300)

    assert set(statuses) <= {503, 408}, statuses  # calls lost to the kill: never a 500
    logged = EventLog.of(ml100k_workspace.data_dir).read()
    mine = logged[logged.event_id.str.startswith("kill-")]
    assert set(mine.event_id) == acked  # every batch was retried until acknowledged
    counts = online_features(open_store(ml100k_workspace), [{"user_id": u} for u in users],
                             ["user_stats:user_event_count"])["user_event_count"]
    per_user = mine[mine.event_id.isin(acked)].groupby("user_id").size()
    assert counts == [int(per_user.get(u, 0)) for u in users]


def test_irec_events_post_sends_a_file_in_batches_and_names_a_bad_row(served, tokens, tmp_path,
                                                                      ml100k_workspace):
    from typer.testing import CliRunner

    from irec.cli import app

    good = tmp_path / "events.csv"
    good.write_text("event_id,user_id,item_id,timestamp,rating,kind\n" + "".join(
        f"cli-{k},900200,{1 + k},{880_000_000 + k},{1 + k % 5},rating\n" for k in range(7)))
    args = ["events", "post", "--file", str(good), "--url", served.http, "--batch-size", "3",
            "--token", tokens["write"]]
    runner = CliRunner()
    sent = runner.invoke(app, args)
    assert sent.exit_code == 0, sent.output
    assert "7 sent" in sent.output and "7 accepted, 0 already applied" in sent.output
    again = runner.invoke(app, args)
    assert "0 accepted, 7 already applied" in again.output, again.output
    logged = EventLog.of(ml100k_workspace.data_dir).read()
    assert {f"cli-{k}" for k in range(7)} <= set(logged.event_id)

    bad = tmp_path / "bad.csv"
    bad.write_text("event_id,user_id,item_id\ncli-x,900200,1\ncli-y,900200,0\n")
    refused = runner.invoke(app, ["events", "post", "--file", str(bad), "--url", served.http,
                                  "--token", tokens["write"]])
    assert refused.exit_code != 0
    assert "row 3" in refused.output and "item_id" in refused.output, refused.output
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("event_id,user_id,item_id\ncli-z,900200,99999\n")
    server_refused = runner.invoke(app, ["events", "post", "--file", str(unknown), "--url",
                                         served.http, "--token", tokens["write"]])
    assert server_refused.exit_code != 0
    assert "events.0.item_id" in server_refused.output, server_refused.output
