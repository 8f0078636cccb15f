"""Standalone Bento: the packaged interest model behind a typed HTTP API.

    export BENTOML_HOME=~/bentoml IREC_MODEL_TAG=interest:latest
    bentoml serve serving.service:InterestRecommender     # from the repository root
    bentoml build -f serving/bentofile.yaml .              # a Bento: model, code, requirements

POST /recommend {"history": [{"item_id": 50, "timestamp": 893286638, "rating": 5}], "n": 10}
returns the top-n unseen items with titles and scores. Unknown item ids are a 400 that names
the offending ``history[i].item_id``; malformed bodies are pydantic 400s.

Authentication as the Ray Serve app (serving/auth.py): ``Authorization: Bearer <token>`` with
the read scope, from the token file ``$IREC_TOKENS_FILE`` (default ``~/.config/irec/tokens.yaml``)
or ``$IREC_API_TOKENS``; ``IREC_AUTH=off`` serves without tokens (a closed network only).
BentoML's health and metrics endpoints stay open.
"""

from __future__ import annotations

import functools
import os

import bentoml
import torch
from pydantic import BaseModel, Field

from serving import package
from serving.auth import AuthConfig, Authenticator, TokenGuard

MODEL_TAG = os.environ.get("IREC_MODEL_TAG", f"{package.MODEL_NAME}:latest")
AUTH = AuthConfig(enabled=os.environ.get("IREC_AUTH", "on") != "off",
                  **({"tokens_file": os.environ["IREC_TOKENS_FILE"]}
                     if "IREC_TOKENS_FILE" in os.environ else {}))
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/"})


class HistoryEvent(BaseModel):
    item_id: int = Field(..., ge=1, description="Normalised item id (items.json)")
    timestamp: int = Field(0, ge=0, description="Epoch seconds of the event")
    rating: float | None = Field(None, ge=0, description="Rating, if the data has ratings")


class RecommendRequest(BaseModel):
    history: list[HistoryEvent] = Field(..., min_length=1, max_length=1000,
                                        description="Events, oldest first")
    n: int = Field(10, ge=1, le=100)
    exclude: list[int] = Field(default_factory=list, max_length=1000)


class Recommendation(BaseModel):
    item_id: int
    raw_item_id: str
    title: str
    score: float


class RecommendResponse(BaseModel):
    model: str
    items: list[Recommendation]


@bentoml.service(name="irec-interest", traffic={"timeout": 10})
class InterestRecommender:
    stored = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        authenticator()  # a missing or malformed token file stops the server here, named
        self.packaged = package.load(str(self.stored.tag))
        self.items = self.packaged.items.set_index("item_id")
        self.max_len = self.packaged.model.cfg.max_len

    @bentoml.api
    def recommend(self, request: RecommendRequest) -> RecommendResponse:
        num_items = self.packaged.model.cfg.num_items
        for i, event in enumerate(request.history):
            if event.item_id > num_items:
                raise bentoml.exceptions.InvalidArgument(
                    f"history[{i}].item_id: unknown item {event.item_id} "
                    f"(ids run 1..{num_items})")
        history = request.history[-self.max_len:]
        pad = self.max_len - len(history)
        items = torch.tensor([[0] * pad + [e.item_id for e in history]])  # (1, L)
        ratings = torch.tensor([[float("nan")] * pad + [
            float("nan") if e.rating is None else e.rating for e in history]])
        stamps = torch.tensor([[0] * pad + [e.timestamp for e in history]])
        model = self.packaged.model
        scores = model.score_items(model.user_state(items, ratings, stamps))[0]  # (I+1,)
        drop = {e.item_id for e in request.history} | set(request.exclude)
        scores[[i for i in drop if 0 < i <= num_items]] = -torch.inf
        top = torch.topk(scores, min(request.n, num_items - len(drop)))
        return RecommendResponse(model=self.packaged.tag, items=[
            Recommendation(item_id=int(i), raw_item_id=str(self.items.raw_item_id[int(i)]),
                           title=str(self.items.title[int(i)]), score=float(s))
            for s, i in zip(top.values, top.indices, strict=True)])


@functools.cache
def authenticator() -> Authenticator:
    """The worker process's token checker (the file is re-read when it changes)."""
    return Authenticator(AUTH)


InterestRecommender.add_asgi_middleware(TokenGuard, authenticator=authenticator,
                                        scopes={"/recommend": "read"}, open_paths=OPEN_PATHS)
