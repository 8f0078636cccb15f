"""The packaged model as the Serve stages use it, behind a small versioned cache.

Every stage that needs the model holds a ``ModelCache``. A request carries the tag that
Retrieval used, and Intent and Ranking look that same tag up, so a request never mixes two
model versions, even while ``reconfigure`` swaps the current one (hot swap). Loading checks
the model against the feature store the app is pointed at: the feature contract (schema
hashes) and the id map (each item id the model knows names the same raw item in the store's
``items.parquet``) must agree, or the model is refused. A different dataset fingerprint with an
agreeing id map is served and logged: a live store moves past the data its model saw.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pandas as pd
import torch

from data.ingest import read_manifest
from features.store import FeatureStore, online_features, schema_hash
from ray_apps import pins
from serving import package
from training.models.interest import InterestTransformer

LOG = logging.getLogger("ray.serve")


class ModelStoreError(RuntimeError):
    """The model store cannot give the model a stage was told to serve."""


class ContractError(RuntimeError):
    """The model was trained against a different feature-service schema than the store's."""


@dataclass
class ServingModel:
    tag: str
    model: InterestTransformer
    item_vectors: torch.Tensor  # (I+1, D)
    titles: list[str]  # by item id; [0] is padding
    raw_ids: list[str]
    genres: list[list[str]]
    genre_names: list[str]
    genre_matrix: torch.Tensor  # (I+1, G) rows sum to 1 (or 0 for items without genres)
    genre_mix: torch.Tensor  # (G,) the catalogue's genre distribution (cold-start intent)
    unit_vectors: torch.Tensor  # (I+1, D) item_vectors, L2-normalised (explanations)
    # (I+1, E) the LM text embeddings of Feast ``item_text_embedding``, L2-normalised (zero
    # rows for items without text); None when the store has none
    lm_text: torch.Tensor | None = None
    # ids added after training whose features are not online yet: never recommended
    pending: set[int] = field(default_factory=set)
    # what a stage derives from this model (e.g. genre prototypes), dropped with it
    derived: dict[str, Any] = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        """Items the model was trained on: ids 1..num_items."""
        return self.model.cfg.num_items

    @property
    def num_served(self) -> int:
        """Items served: the trained ones, then those added since (``ray_apps.catalogue``)."""
        return self.item_vectors.shape[0] - 1

    async def derive(self, name: str, build: Callable[[ServingModel], Any]) -> Any:
        """``build(self)`` once per model, in a thread (it may read the feature store)."""
        if name not in self.derived:
            self.derived[name] = await asyncio.to_thread(build, self)
        return self.derived[name]


def resolve_tag(tag: str) -> str:
    """``champion`` -> the promoted tag; anything else as BentoML resolves it."""
    if tag == "champion":
        current = package.champion()
        if current is None:
            raise LookupError("model_tag 'champion': no model has been promoted yet "
                              "(run training, or `irec promote <tag>`)")
        return current
    return tag


def concrete_tag(tag: str) -> str:
    """The concrete ``name:version`` that ``tag`` names in the model store now."""
    return str(bentoml.models.get(resolve_tag(tag)).tag)


def check_contract(metadata: dict, store: FeatureStore, tag: str) -> None:
    services = metadata.get("feature_services") or {}
    if not services:
        raise ContractError(f"{tag} records no feature services; refusing to serve it")
    for service, expected in services.items():
        actual = schema_hash(store, service)
        if actual != expected:
            raise ContractError(
                f"{tag} was trained on feature service {service!r} with schema hash "
                f"{expected[:12]}..., but the feature store at {store.repo_path} has "
                f"{actual[:12]}...; refusing to start (re-train or point at the right store)")


def check_data(items: pd.DataFrame, metadata: dict, store: FeatureStore, tag: str,
               newer_data: str = "serve") -> None:
    """The model's id map against the store's items: refuse a disagreement; another dataset
    (fingerprint) is logged and served, or refused when ``newer_data`` is ``refuse``."""
    data_dir = Path(store.repo_path) / "data"
    stored = pd.read_parquet(data_dir / "items.parquet", columns=["item_id", "raw_item_id"])
    wrong = package.disagreeing_ids(items, stored)
    if len(wrong):
        first = wrong.iloc[0]
        has = ("no such item" if pd.isna(first.raw_item_id_store)
               else repr(first.raw_item_id_store))
        raise ContractError(
            f"{tag} and the feature store at {store.repo_path} disagree on {len(wrong)} of "
            f"{len(items)} item ids (item {first.item_id}: model {first.raw_item_id_model!r}, "
            f"store {has}); refusing to serve it (re-train on this data)")
    trained_on = metadata.get("dataset_fingerprint", "")
    holds = read_manifest(data_dir)["fingerprint"]
    if trained_on != holds and newer_data == "refuse":
        raise ContractError(
            f"{tag} was trained on dataset {trained_on[:12]}..., the feature store at "
            f"{store.repo_path} holds {holds[:12]}...; refusing it (serving.newer_data: refuse)")
    if trained_on != holds:
        LOG.warning("%s was trained on dataset %s...; the store holds %s... (%d newer items): "
                    "serving it, its %d item ids agree", tag, trained_on[:12], holds[:12],
                    len(stored) - len(items), len(items))


def load(tag: str, store: FeatureStore, newer_data: str = "serve") -> ServingModel:
    packaged = package.load(resolve_tag(tag))
    check_contract(packaged.metadata, store, packaged.tag)
    check_data(packaged.items, packaged.metadata, store, packaged.tag, newer_data)
    model = packaged.model
    n = model.cfg.num_items + 1
    items = packaged.items.set_index("item_id").reindex(range(n))
    titles = items["title"].fillna("").astype(str).tolist()
    raw_ids = items["raw_item_id"].fillna("").astype(str).tolist()
    genres = [list(g) if isinstance(g, list | np.ndarray) else [] for g in items["genres"]]
    names = list(packaged.metadata.get("genre_names") or [])
    matrix = torch.zeros(n, len(names))
    index = {g: j for j, g in enumerate(names)}
    for i, row in enumerate(genres):
        for g in row:
            if g in index:
                matrix[i, index[g]] = 1.0
    matrix = matrix / matrix.sum(-1, keepdim=True).clamp(min=1.0)
    mix = matrix[1:].sum(0)
    return ServingModel(tag=packaged.tag, model=model, item_vectors=packaged.item_vectors,
                        titles=titles, raw_ids=raw_ids, genres=genres, genre_names=names,
                        genre_matrix=matrix, genre_mix=mix / mix.sum().clamp(min=1e-9),
                        unit_vectors=torch.nn.functional.normalize(packaged.item_vectors, dim=-1),
                        lm_text=item_text(store, range(1, n)))


def item_trends(store: FeatureStore, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(I+1,) trailing-window and all-time event counts of every item, from Feast item_stats.

    Row 0 (padding) is 0; items without features count 0.
    """
    got = online_features(store, [{"item_id": i} for i in range(1, num_items + 1)],
                          ["item_stats:item_popularity_window", "item_stats:item_event_count"])
    window = np.nan_to_num(np.array(got["item_popularity_window"], dtype=float))
    total = np.nan_to_num(np.array(got["item_event_count"], dtype=float))
    return np.concatenate([[0.0], window]), np.concatenate([[0.0], total])


def item_text(store: FeatureStore, ids: range) -> torch.Tensor | None:
    """(len(ids)+1, E) Feast ``item_text_embedding`` of ``ids`` (row 0 zero), L2-normalised;
    zero rows for items without text, None when no item has any."""
    got = online_features(store, [{"item_id": i} for i in ids],
                          ["item_text_embedding:text_embedding"])
    vectors = got["text_embedding"]
    width = next((len(v) for v in vectors if v), 0)
    if not width:
        return None
    text = torch.zeros(len(vectors) + 1, width)
    for i, v in enumerate(vectors, start=1):
        if v:
            text[i] = torch.tensor(v)
    return torch.nn.functional.normalize(text, dim=-1)


def genre_prototypes(model: ServingModel, dim: int) -> torch.Tensor | None:
    """(G, E) the mean LM text of each genre's items, L2-normalised: what queries of the
    ``dim``-wide LM are matched to. None when the model has no genres or no text that wide."""
    text = model.lm_text
    if not model.genre_names or text is None or text.shape[1] != dim:
        return None
    members = (model.genre_matrix[: model.num_items + 1] > 0).float()  # (I+1, G)
    return torch.nn.functional.normalize(members.T @ text[: model.num_items + 1], dim=-1)


class Refreshed:
    """A value read from the feature store, re-read in the background once it is older than
    ``ttl_s`` (at a ``get``); the last value stays while the store fails."""

    def __init__(self, read: Callable[[], Any], value: Any, store_errors: tuple) -> None:
        self.read, self.value, self.store_errors = read, value, store_errors
        self.read_at = float("-inf")
        self.refreshing: asyncio.Task | None = None

    async def load(self) -> Any:
        """Read now (in a thread): the first value, or one that must be current."""
        self.value = await asyncio.to_thread(self.read)
        self.read_at = time.monotonic()
        return self.value

    def get(self, ttl_s: float) -> Any:
        stale = time.monotonic() - self.read_at > ttl_s
        if stale and (self.refreshing is None or self.refreshing.done()):
            self.refreshing = asyncio.get_running_loop().create_task(self._refresh())
        return self.value

    async def _refresh(self) -> None:
        try:
            await self.load()
        except self.store_errors:  # the store is down: keep the last value, retry later
            self.read_at = time.monotonic()


class ModelCache:
    """The current model plus the previous one (for requests in flight during a swap)."""

    def __init__(self, store: FeatureStore, keep: int = 2) -> None:
        self.store = store
        self.keep = keep
        self._models: OrderedDict[str, ServingModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.current: str | None = None
        self.newer_data = "serve"  # the stages set it from their user_config

    def load(self, tag: str) -> ServingModel:
        """Load ``tag`` fully without making it current (the caller switches ``current``).

        ``champion`` and ``name:latest`` are resolved to a concrete tag here, once per app
        (``ray_apps.pins``). A store that cannot give the model (missing, unreadable,
        unmounted) is one ``ModelStoreError`` line naming the tag and the store: what Serve
        shows as the deployment's failure.
        """
        try:
            return self.get(pins.resolve(tag, concrete_tag))
        except (bentoml.exceptions.BentoMLException, LookupError, OSError) as exc:
            home = os.environ.get("BENTOML_HOME", "~/bentoml")
            raise ModelStoreError(f"model_tag {tag!r}: the model store at {home} cannot give "
                                  f"it ({type(exc).__name__}: {exc})") from None

    def cached(self, tag: str | None = None) -> ServingModel | None:
        wanted = tag or self.current
        if wanted is None:
            raise LookupError("no model loaded yet")
        with self._lock:
            if wanted in self._models:
                self._models.move_to_end(wanted)
                return self._models[wanted]
        return None

    async def aget(self, tag: str | None = None) -> ServingModel:
        """From a request: a cached model at once, or a load that does not block the loop."""
        return self.cached(tag) or await asyncio.to_thread(self.get, tag)

    def get(self, tag: str | None = None) -> ServingModel:
        found = self.cached(tag)
        if found is not None:
            return found
        wanted = tag or self.current
        with self._lock:
            loading = self._loading.setdefault(wanted, threading.Lock())
        with loading:  # concurrent loads of one tag (reconfigure + a request) coalesce
            found = self.cached(wanted)
            if found is not None:
                return found
            model = load(wanted, self.store, self.newer_data)
        with self._lock:
            self._loading.pop(wanted, None)
            self._models[model.tag] = model
            self._models.move_to_end(model.tag)
            while len(self._models) > self.keep:
                self._models.popitem(last=False)
        return model
