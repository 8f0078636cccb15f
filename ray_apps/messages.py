"""The messages the stages pass each other: Ingress -> Retrieval and Intent -> Ranking -> Ingress,
and Ingress -> Events -> Ingress.

Plain pydantic models, with no model, store or Serve import. A reply is unpickled in the
caller, which imports the module that defines its class: defined in a stage's module, the
Ingress's first request would import torch, Transformers and Feast on its event loop (more
than Serve's 10 s request timeout on 2 cores). Here, the Ingress starts in a few seconds and
never loads them.
"""

from __future__ import annotations

from pydantic import BaseModel


class Query(BaseModel):
    user_id: int | None = None
    items: list[int] = []  # explicit history of an anonymous user, oldest first
    stamps: list[int] = []
    ratings: list[float | None] = []
    exclude: list[int] = []


class Candidates(BaseModel):
    model: str
    error: dict | None = None  # {"status", "field", "message"} for a bad request
    cold_start: bool = False
    cold_start_reason: str = ""
    state: list[float] | None = None  # (D,) user state; None on cold start
    items: list[int] = []  # history used, oldest first
    stamps: list[int] = []
    ratings: list[float | None] = []
    as_of: int = 0
    candidates: list[int] = []
    scores: list[float] = []
    intent: list[float] = []  # (G,) the intent head on the state; [] for a model without genres
    exclude: list[int] = []  # the request's, and added items of the history (never returned)
    catalogue_size: int = 0  # items Retrieval served: ids 1..catalogue_size
    latency_ms: dict[str, float] = {}


def bad(model: str, field: str, message: str, status: int = 422) -> Candidates:
    return Candidates(model=model, error={"status": status, "field": field, "message": message})


class QueryIntent(BaseModel):
    model: str = ""  # tag of the model whose genres the distribution is over
    error: dict | None = None  # {"status", "field", "message"} for a bad request
    genres: list[str] = []
    intent: list[float] = []  # (G,) the query's distribution over genres
    vector: list[float] = []  # (E,) the query's LM embedding, unit length
    weight: float = 0.0  # share of the query in the blend with the model's intent head
    latency_ms: dict[str, float] = {}


class Ranked(BaseModel):
    items: list[dict] = []  # ScoredItem fields
    genres: list[str] = []
    intent: list[float] = []  # (G,) the blended intent distribution
    latency_ms: dict[str, float] = {}


class Logged(BaseModel):
    """Events -> Ingress: what a batch of events did."""

    error: dict | None = None  # {"status", "field", "message"}: the batch was refused whole
    accepted: list[str] = []  # event ids applied by this call
    duplicates: list[str] = []  # event ids applied before
    latency_ms: dict[str, float] = {}


class Shown(BaseModel):
    """Ingress -> Events: one answered recommendation, for the exposure log."""

    request_id: str
    user_id: int | None = None  # None: an anonymous history
    model: str
    items: list[int]  # best first
    scores: list[float]
    cold_start: bool
    timestamp: float  # epoch seconds


class Catalogued(BaseModel):
    """Events -> Ingress: what a batch of added items got."""

    error: dict | None = None  # {"status", "field", "message"}: nothing acknowledged
    items: list[dict] = []  # AddedItem fields, in request order
    latency_ms: dict[str, float] = {}
