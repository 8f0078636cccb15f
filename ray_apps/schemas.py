"""The request and response of the recommendation API, shared by HTTP and gRPC.

HTTP bodies are validated by these pydantic models (FastAPI turns a failure into a 422 that
names the field); gRPC messages are converted into the same models by ``from_proto``, so both
protocols accept and reject exactly the same requests.
"""

from __future__ import annotations

from typing import Annotated

from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serving import recommend_pb2 as pb

ItemId = Annotated[int, Field(ge=1, le=2**62)]

# Hard upper bounds of the API; the app's own limits (history length, n) are at most these.
MAX_HISTORY = 1000
MAX_N = 100
MAX_EXCLUDE = 1000
MAX_QUERY_CHARS = 500
MAX_BODY_BYTES = 256 * 1024
MAX_EVENTS = 500  # events per POST /events (or LogEvents) batch
MAX_ITEMS = 100  # items per POST /items batch
EVENT_ID = r"^[A-Za-z0-9_.:@/-]{1,128}$"


class HistoryEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: ItemId = Field(..., description="Normalised item id (1..num_items)")
    timestamp: int = Field(..., ge=0, le=2**40, description="Epoch seconds of the event")
    rating: float | None = Field(None, ge=0, le=100, description="Rating, if the data has any")


class RecommendRequest(BaseModel):
    """Exactly one of ``user_id`` (history from the Feast online store) or ``history``."""

    model_config = ConfigDict(extra="forbid")

    user_id: int | None = Field(None, ge=1, le=2**62, description="Known user, by normalised id")
    history: list[HistoryEvent] | None = Field(
        None, min_length=1, max_length=MAX_HISTORY,
        description="Recent events of an anonymous user, oldest first")
    query: str = Field("", max_length=MAX_QUERY_CHARS,
                       description="Free text that steers intent, e.g. 'something funny'")
    n: int = Field(10, ge=1, le=MAX_N, description="Number of results")
    exclude: list[ItemId] = Field(default_factory=list, max_length=MAX_EXCLUDE,
                                  description="Item ids never to return")

    @model_validator(mode="after")
    def _one_source(self) -> RecommendRequest:
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of user_id or history")
        if self.history is not None:
            stamps = [e.timestamp for e in self.history]
            if any(b < a for a, b in zip(stamps, stamps[1:], strict=False)):
                raise ValueError("history: events must be oldest first (timestamps ascending)")
        return self


class Explanation(BaseModel):
    intent_match: float = Field(..., description="Intent distribution . the item's genres")
    intent_genres: list[str] = Field(..., description="The item's genres the intent favours")
    because_of: list[int] = Field(..., description="History items most like this one")
    because_of_titles: list[str]
    new: bool = Field(False, description="Added after the model was trained (POST /items): "
                                         "placed by its text, before any retraining")


class ScoredItem(BaseModel):
    item_id: int
    raw_item_id: str
    title: str
    genres: list[str]
    score: float
    explanation: Explanation


class RecommendResponse(BaseModel):
    request_id: str = Field("", description="Names this answer in the exposure log; events "
                                             "that follow it may name it")
    items: list[ScoredItem]
    intent: dict[str, float] = Field(..., description="Genre -> probability, best first")
    model: str = Field(..., description="Tag of the model that answered")
    cold_start: bool = Field(..., description="True: popularity-within-intent fallback")
    cold_start_reason: str = ""
    latency_ms: dict[str, float] = Field(..., description="Per stage, and total")


class EventIn(BaseModel):
    """One thing a user did, as a client reports it."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(..., pattern=EVENT_ID,
                          description="The client's idempotency key: a retried id counts once")
    user_id: int = Field(..., ge=1, le=2**62,
                         description="Normalised user id; a new id starts a new user")
    item_id: ItemId = Field(..., description="Normalised item id of the catalogue")
    timestamp: int | None = Field(None, ge=0, le=2**40,
                                  description="Epoch seconds (default: when it is received)")
    rating: float | None = Field(None, ge=0, le=100,
                                 description="Rating on the dataset's scale, if it has one")
    kind: str = Field("interaction", pattern=r"^[a-z][a-z0-9_]{0,31}$",
                      description="What happened: interaction, click, purchase, rating...")
    request_id: str = Field("", max_length=64,
                            description="The recommendation (its request_id) this followed")


class EventsRequest(BaseModel):
    """A batch of events, accepted whole or refused whole."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(..., min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    accepted: list[str] = Field(..., description="Event ids applied by this call")
    duplicates: list[str] = Field(..., description="Event ids applied before (nothing done)")
    latency_ms: dict[str, float] = Field(default_factory=dict)


class ItemIn(BaseModel):
    """A catalogue item to add: the client's id, and what the LM reads of it."""

    model_config = ConfigDict(extra="forbid")

    raw_item_id: str = Field(..., pattern=EVENT_ID,
                             description="Your id of the item; adding it again is the same item")
    title: str = Field(..., min_length=1, max_length=500)
    genres: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=32, description="Genres (the dataset's names count)")
    year: int | None = Field(None, ge=0, le=9999)
    text: str = Field("", max_length=5000, description="Free text: plot, description...")


class ItemsRequest(BaseModel):
    """Items to add, all or none."""

    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(..., min_length=1, max_length=MAX_ITEMS)


class AddedItem(BaseModel):
    raw_item_id: str
    item_id: int = Field(..., description="The normalised id: events and requests use it")
    new: bool = Field(..., description="True: added by this call; False: known before")


class ItemsResponse(BaseModel):
    items: list[AddedItem]
    latency_ms: dict[str, float] = Field(default_factory=dict)


class Health(BaseModel):
    status: str  # ok, or degraded: answering, with a fallback where the feature store fails
    model: str
    detail: str = ""  # why degraded


def from_proto(message: Message) -> RecommendRequest:
    """The pydantic request of a gRPC ``RecommendRequest``; raises ValidationError."""
    raw: dict = {"query": message.query, "exclude": list(message.exclude)}
    if message.HasField("user_id"):
        raw["user_id"] = message.user_id
    if message.history:
        raw["history"] = [
            {"item_id": e.item_id, "timestamp": e.timestamp,
             **({"rating": e.rating} if e.HasField("rating") else {})}
            for e in message.history]
    if message.HasField("n"):
        raw["n"] = message.n
    return RecommendRequest.model_validate(raw)


def events_from_proto(message: Message) -> EventsRequest:
    """The pydantic batch of a gRPC ``EventsRequest``; raises ValidationError."""
    events = []
    for e in message.events:
        raw: dict = {"event_id": e.event_id, "user_id": e.user_id, "item_id": e.item_id,
                     "request_id": e.request_id}
        if e.kind:
            raw["kind"] = e.kind
        for name in ("timestamp", "rating"):
            if e.HasField(name):
                raw[name] = getattr(e, name)
        events.append(raw)
    return EventsRequest.model_validate({"events": events})


def items_from_proto(message: Message) -> ItemsRequest:
    """The pydantic batch of a gRPC ``ItemsRequest``; raises ValidationError."""
    items = []
    for i in message.items:
        raw: dict = {"raw_item_id": i.raw_item_id, "title": i.title, "genres": list(i.genres),
                     "text": i.text}
        if i.HasField("year"):
            raw["year"] = i.year
        items.append(raw)
    return ItemsRequest.model_validate({"items": items})


def to_proto(response: RecommendResponse) -> pb.RecommendResponse:
    return pb.RecommendResponse(
        items=[pb.ScoredItem(
            item_id=i.item_id, raw_item_id=i.raw_item_id, title=i.title, genres=i.genres,
            score=i.score, explanation=pb.Explanation(**i.explanation.model_dump()))
            for i in response.items],
        intent=response.intent, model=response.model, cold_start=response.cold_start,
        cold_start_reason=response.cold_start_reason, latency_ms=response.latency_ms,
        request_id=response.request_id)


def describe(error: ValidationError) -> str:
    """One line naming every offending field: ``history.0.item_id: Input should be ...``."""
    parts = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "request"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)
