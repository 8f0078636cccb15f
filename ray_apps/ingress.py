"""Ingress: the HTTP (FastAPI) and gRPC front of the pipeline.

    POST /recommend   RecommendRequest -> RecommendResponse      (OpenAPI at /docs)
    POST /events      EventsRequest -> EventsResponse            (write scope; ray_apps/events.py)
    POST /items       ItemsRequest -> ItemsResponse              (write scope; ray_apps/events.py)
    GET  /healthz     {"status": "ok", "model": <tag>}
    gRPC irec.v1.Recommender/Recommend, /LogEvents, /AddItems and /Health (recommend.proto)

Every call but health and the API docs needs a bearer token with its scope (serving/auth.py):
401 / UNAUTHENTICATED without a known token, 403 / PERMISSION_DENIED without the scope, checked
before the body is read.

Both protocols validate into the same pydantic request and run the same ``recommend``. Bad
input is a 4xx naming the field (gRPC: INVALID_ARGUMENT / NOT_FOUND with the same message):
wrong types and ranges 422 (an unknown item in events too), unknown user 404, oversized body
413, wrong content type 415. Overload is Serve's own admission control: 503 /
RESOURCE_EXHAUSTED; a batch of events the feature store could not take is a 503 / UNAVAILABLE
(nothing acknowledged: retry it).

(No ``from __future__ import annotations`` here: FastAPI must see the real body type.)
"""

import asyncio
import time
import uuid

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)
from ray.serve.grpc_util import RayServegRPCContext
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter

from ray_apps.config import IngressUserConfig
from ray_apps.messages import Query, Shown
from ray_apps.schemas import (
    MAX_BODY_BYTES,
    EventsRequest,
    EventsResponse,
    Health,
    ItemsRequest,
    ItemsResponse,
    RecommendRequest,
    RecommendResponse,
    describe,
    events_from_proto,
    from_proto,
    items_from_proto,
    to_proto,
)
from serving import recommend_pb2 as pb
from serving.auth import AuthConfig, Authenticator, AuthError, Scope, TokenGuard, refuse

GRPC_CODES = {401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED,
              404: grpc.StatusCode.NOT_FOUND, 408: grpc.StatusCode.DEADLINE_EXCEEDED,
              422: grpc.StatusCode.INVALID_ARGUMENT, 503: grpc.StatusCode.UNAVAILABLE}
# Open without a token: liveness/readiness probes and the API's own description.
OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
# A stage replica lost or unreachable mid-call: the events were not acknowledged (retry).
LOST = (RayActorError, ActorUnavailableError, ReplicaUnavailableError,
        DeploymentUnavailableError, BackPressureError, grpc.aio.AioRpcError)
# The scope each route needs; any other path needs ``write`` (deny by default).
SCOPES: dict[str, Scope] = {"/recommend": "read"}


class RequestError(Exception):
    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message


class BodyGuard:
    """ASGI middleware: JSON only (415), bodies up to ``max_bytes`` (413), before parsing."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if kind != b"application/json":
            await refuse(send, 415, "Content-Type",
                         f"expected application/json, got {kind.decode() or 'nothing'!r}")
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await refuse(send, 413, "body", f"{int(declared)} bytes > limit {self.max_bytes}")
            return
        body = b""
        while True:  # also bounds chunked bodies that declare no length
            message = await receive()
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await refuse(send, 413, "body", f"more than {self.max_bytes} bytes")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def create_api(max_body_bytes: int) -> FastAPI:
    api = FastAPI(title="irec recommendations",
                  description="Retrieval -> intent -> ranking over the user interest model. "
                              "Send 'Authorization: Bearer <token>'.")
    api.add_middleware(BodyGuard, max_bytes=max_body_bytes)
    # added last: runs first; the Ingress replica sets api.state.authenticator
    api.add_middleware(TokenGuard, authenticator=lambda: api.state.authenticator,
                       scopes=SCOPES, open_paths=OPEN_PATHS)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0])
                  for e in exc.errors()]  # loc[0] is "body", "query" or "path"
        message = "; ".join(f"{f}: {e['msg']}" for f, e in zip(fields, exc.errors(),
                                                                strict=True))
        return JSONResponse({"error": message, "field": fields[0]}, status_code=422)

    @api.exception_handler(RequestError)
    async def _bad(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "field": exc.field}, status_code=exc.status)

    return api


API = create_api(MAX_BODY_BYTES)


@serve.deployment
@serve.ingress(API)
class Ingress:
    def __init__(self, retrieval: DeploymentHandle, intent: DeploymentHandle,
                 ranking: DeploymentHandle, events: DeploymentHandle, auth: AuthConfig) -> None:
        self.retrieval, self.intent, self.ranking = retrieval, intent, ranking
        self.events = events
        # reads the token file now: a missing or malformed one fails the deployment, named
        self.auth = Authenticator(auth)
        API.state.authenticator = self.auth
        self.knobs: IngressUserConfig | None = None
        self.requests = Counter("irec_requests_total", description="Answered requests",
                                tag_keys=("protocol",))
        self.cold_starts = Counter("irec_cold_start_total",
                                   description="Requests answered by the cold-start fallback")

    def reconfigure(self, config: dict) -> None:
        self.knobs = IngressUserConfig.model_validate(config)

    async def recommend(self, request: RecommendRequest, protocol: str) -> RecommendResponse:
        began = time.perf_counter()
        query = Query(user_id=request.user_id, exclude=request.exclude)
        if request.history is not None:
            query.items = [e.item_id for e in request.history]
            query.stamps = [e.timestamp for e in request.history]
            query.ratings = [e.rating for e in request.history]
        n = request.n if "n" in request.model_fields_set else self.knobs.default_n
        deadline = self.knobs.request_timeout_s
        try:
            async with asyncio.timeout(deadline):  # cancels the stage calls still running
                return await self._pipeline(request, query, n, protocol, began)
        except TimeoutError:
            raise RequestError(408, "request", f"not answered within request_timeout_s="
                                               f"{deadline}s") from None

    async def _pipeline(self, request: RecommendRequest, query: Query, n: int, protocol: str,
                        began: float) -> RecommendResponse:
        # Retrieval and Intent need nothing from each other: both run at once, and Intent only
        # when there is text to understand. Ranking then needs both.
        retrieving = self.retrieval.remote(query)
        understanding = self.intent.remote(request.query) if request.query else None
        retrieved = await retrieving
        understood = await understanding if understanding is not None else None
        if understood is not None and understood.model != retrieved.model and not (
                retrieved.error or understood.error):
            # a hot swap landed between the two: ask again under Retrieval's model, so that
            # one model version answers the whole request
            understood = await self.intent.remote(request.query, retrieved.model)
        for error in (retrieved.error, understood and understood.error):
            if error:
                raise RequestError(error["status"], error["field"], error["message"])
        ranked = await self.ranking.remote(retrieved, understood, n)
        if retrieved.cold_start:
            self.cold_starts.inc()
        self.requests.inc(tags={"protocol": protocol})
        dist = dict(sorted(zip(ranked.genres, ranked.intent, strict=True), key=lambda kv: -kv[1]))
        latency = {**retrieved.latency_ms, **(understood.latency_ms if understood else {}),
                   **ranked.latency_ms, "total": round((time.perf_counter() - began) * 1000, 3)}
        request_id = uuid.uuid4().hex
        # the exposure log: sent, not awaited (the answer never waits on it)
        self.events.expose.remote(Shown(
            request_id=request_id, user_id=request.user_id, model=retrieved.model,
            items=[i["item_id"] for i in ranked.items], scores=[i["score"] for i in ranked.items],
            cold_start=retrieved.cold_start, timestamp=time.time()))
        return RecommendResponse(request_id=request_id, items=ranked.items, intent=dist,
                                 model=retrieved.model,
                                 cold_start=retrieved.cold_start,
                                 cold_start_reason=retrieved.cold_start_reason,
                                 latency_ms=latency)

    @API.post("/recommend", response_model=RecommendResponse)
    async def recommend_http(self, body: RecommendRequest) -> RecommendResponse:
        return await self.recommend(body, "http")

    async def _write(self, call, field: str):
        """``await call()`` on the Events stage, within the request deadline; a refusal, a
        timeout or a lost replica is a ``RequestError`` (retry: nothing was acknowledged)."""
        deadline = self.knobs.request_timeout_s
        try:
            async with asyncio.timeout(deadline):
                answer = await call()
        except TimeoutError:
            raise RequestError(408, "request", f"not answered within request_timeout_s="
                                               f"{deadline}s; retry the batch") from None
        except LOST as exc:
            raise RequestError(503, field, f"not acknowledged, retry the batch: the Events "
                                           f"stage failed ({type(exc).__name__})") from None
        if answer.error:
            raise RequestError(answer.error["status"], answer.error["field"],
                               answer.error["message"])
        return answer

    async def log_events(self, batch: EventsRequest) -> EventsResponse:
        logged = await self._write(lambda: self.events.remote(batch), "events")
        return EventsResponse(accepted=logged.accepted, duplicates=logged.duplicates,
                              latency_ms=logged.latency_ms)

    async def add_items(self, batch: ItemsRequest) -> ItemsResponse:
        added = await self._write(lambda: self.events.add_items.remote(batch), "items")
        return ItemsResponse(items=added.items, latency_ms=added.latency_ms)

    @API.post("/items", response_model=ItemsResponse)
    async def items_http(self, body: ItemsRequest) -> ItemsResponse:
        """Add catalogue items (write scope): an id each, served from their text at once."""
        return await self.add_items(body)

    @API.post("/events", response_model=EventsResponse)
    async def events_http(self, body: EventsRequest) -> EventsResponse:
        """Log a batch of user events (write scope): durable, then live online."""
        return await self.log_events(body)

    async def _health(self) -> Health:
        model, store = await asyncio.gather(self.retrieval.model_tag.remote(),
                                            self.retrieval.store_health.remote())
        return Health(status="degraded" if store else "ok", model=model,
                      detail=f"feature store: {store}" if store else "")

    @API.get("/healthz", response_model=Health)
    async def healthz(self) -> Health:
        """200 while the app answers: ``degraded`` when it answers with a fallback."""
        return await self._health()

    async def _over_grpc(self, grpc_context: RayServegRPCContext, scope: Scope, answer,
                         empty):
        """``await answer()`` for a gRPC caller holding ``scope``. A refusal (token, scope,
        validation, request error) sets the status and details and returns ``empty``."""
        try:
            metadata = dict(grpc_context.invocation_metadata())
            self.auth.check(metadata.get("authorization"), scope)
            return await answer()
        except AuthError as exc:
            grpc_context.set_code(GRPC_CODES[exc.status])
            grpc_context.set_details(f"{exc.field}: {exc.message}")
        except ValidationError as exc:
            grpc_context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            grpc_context.set_details(describe(exc))
        except RequestError as exc:
            grpc_context.set_code(GRPC_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT))
            grpc_context.set_details(str(exc))
        return empty

    async def Recommend(self, message: pb.RecommendRequest,  # noqa: N802 (gRPC method name)
                        grpc_context: RayServegRPCContext) -> pb.RecommendResponse:
        async def answer() -> pb.RecommendResponse:
            return to_proto(await self.recommend(from_proto(message), "grpc"))

        return await self._over_grpc(grpc_context, "read", answer, pb.RecommendResponse())

    async def LogEvents(self, message: pb.EventsRequest,  # noqa: N802 (gRPC method name)
                        grpc_context: RayServegRPCContext) -> pb.EventsResponse:
        async def answer() -> pb.EventsResponse:
            logged = await self.log_events(events_from_proto(message))
            return pb.EventsResponse(accepted=logged.accepted, duplicates=logged.duplicates,
                                     latency_ms=logged.latency_ms)

        return await self._over_grpc(grpc_context, "write", answer, pb.EventsResponse())

    async def AddItems(self, message: pb.ItemsRequest,  # noqa: N802 (gRPC method name)
                       grpc_context: RayServegRPCContext) -> pb.ItemsResponse:
        async def answer() -> pb.ItemsResponse:
            added = await self.add_items(items_from_proto(message))
            return pb.ItemsResponse(
                items=[pb.AddedItem(**i.model_dump()) for i in added.items],
                latency_ms=added.latency_ms)

        return await self._over_grpc(grpc_context, "write", answer, pb.ItemsResponse())

    async def Health(self, message: pb.HealthRequest) -> pb.HealthResponse:  # noqa: N802
        health = await self._health()
        return pb.HealthResponse(status=health.status, model=health.model)
