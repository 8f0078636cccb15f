"""Typed clients of the recommendation API, over HTTP and gRPC, with the same interface.

    client = HTTPClient("http://127.0.0.1:8000", token=...)   # or GRPCClient("127.0.0.1:9000")
    answer = client.recommend(RecommendRequest(user_id=42, n=5, query="something funny"))
    logged = client.log_events(EventsRequest(events=[EventIn(event_id="e1", user_id=42,
                                                             item_id=50)]))  # write scope
    added = client.add_items(ItemsRequest(items=[ItemIn(raw_item_id="m-9", title="...")]))

Both return ``RecommendResponse`` (``EventsResponse``, ``ItemsResponse``); a rejected
request raises ``APIError`` with the status (HTTP code, or the gRPC status name) and the
server's message, which names the offending field.
"""

from __future__ import annotations

import grpc
import requests
from google.protobuf.json_format import MessageToDict

from ray_apps.schemas import (
    AddedItem,
    EventsRequest,
    EventsResponse,
    Health,
    ItemsRequest,
    ItemsResponse,
    RecommendRequest,
    RecommendResponse,
)
from serving import recommend_pb2 as pb
from serving import recommend_pb2_grpc as pb_grpc


class APIError(RuntimeError):
    def __init__(self, status: str | int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class HTTPClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", timeout_s: float = 30.0,
                 token: str | None = None) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def recommend(self, request: RecommendRequest) -> RecommendResponse:
        return RecommendResponse.model_validate(self._post("/recommend", request))

    def log_events(self, request: EventsRequest) -> EventsResponse:
        return EventsResponse.model_validate(self._post("/events", request))

    def add_items(self, request: ItemsRequest) -> ItemsResponse:
        return ItemsResponse.model_validate(self._post("/items", request))

    def _post(self, path: str, request) -> dict:
        body = request.model_dump(mode="json", exclude_unset=True)
        reply = self.session.post(f"{self.url}{path}", json=body, timeout=self.timeout_s)
        if reply.status_code != 200:
            try:
                message = reply.json().get("error", reply.text)
            except ValueError:
                message = reply.text
            raise APIError(reply.status_code, message)
        return reply.json()

    def health(self) -> Health:
        reply = self.session.get(f"{self.url}/healthz", timeout=self.timeout_s)
        reply.raise_for_status()
        return Health.model_validate(reply.json())


class GRPCClient:
    def __init__(self, target: str = "127.0.0.1:9000", application: str = "irec",
                 timeout_s: float = 30.0, token: str | None = None) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.RecommenderStub(self.channel)
        self.metadata = (("application", application),
                         *((("authorization", f"Bearer {token}"),) if token else ()))
        self.timeout_s = timeout_s

    def recommend(self, request: RecommendRequest) -> RecommendResponse:
        message = pb.RecommendRequest(query=request.query, exclude=request.exclude)
        if request.user_id is not None:
            message.user_id = request.user_id
        for e in request.history or []:
            event = message.history.add(item_id=e.item_id, timestamp=e.timestamp)
            if e.rating is not None:
                event.rating = e.rating
        if "n" in request.model_fields_set:
            message.n = request.n
        reply = self._call(self.stub.Recommend, message)
        fields = MessageToDict(reply, preserving_proto_field_name=True,
                               always_print_fields_with_no_presence=True)
        for item in fields.get("items", []):
            item["item_id"] = int(item["item_id"])
            item["explanation"]["because_of"] = [int(i) for i in
                                                 item["explanation"]["because_of"]]
        return RecommendResponse.model_validate(fields)

    def log_events(self, request: EventsRequest) -> EventsResponse:
        message = pb.EventsRequest()
        for e in request.events:
            event = message.events.add(event_id=e.event_id, user_id=e.user_id,
                                       item_id=e.item_id, kind=e.kind, request_id=e.request_id)
            if e.timestamp is not None:
                event.timestamp = e.timestamp
            if e.rating is not None:
                event.rating = e.rating
        reply = self._call(self.stub.LogEvents, message)
        return EventsResponse(accepted=list(reply.accepted), duplicates=list(reply.duplicates),
                              latency_ms=dict(reply.latency_ms))

    def add_items(self, request: ItemsRequest) -> ItemsResponse:
        message = pb.ItemsRequest()
        for i in request.items:
            item = message.items.add(raw_item_id=i.raw_item_id, title=i.title, genres=i.genres,
                                     text=i.text)
            if i.year is not None:
                item.year = i.year
        reply = self._call(self.stub.AddItems, message)
        return ItemsResponse(items=[AddedItem(raw_item_id=i.raw_item_id, item_id=i.item_id,
                                              new=i.new) for i in reply.items],
                             latency_ms=dict(reply.latency_ms))

    def _call(self, method, message):
        """One unary call with the client's token and deadline; a refusal is an APIError with
        the gRPC status name."""
        try:
            return method(message, metadata=self.metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise APIError(exc.code().name, exc.details() or "") from exc

    def health(self) -> Health:
        reply = self.stub.Health(pb.HealthRequest(), metadata=self.metadata,
                                 timeout=self.timeout_s)
        return Health(status=reply.status, model=reply.model)

    def close(self) -> None:
        self.channel.close()
