"""Typed arguments of the Serve application, and the knobs each deployment reconfigures.

``AppArgs`` is what ``build_app`` takes (from ``serve run ray_apps.app:build_app key=value``,
from the ``args`` block of a Serve config file, or from ``irec serve``). Per-deployment
runtime knobs travel as ``user_config`` and are applied in ``reconfigure`` without a restart:
changing them in the chart's ``serveConfigV2`` (or with ``irec rollout``) updates running
replicas in place.
"""

from __future__ import annotations

import copy
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from irec.config import AutoscalingConfig, Stage
from ray_apps.schemas import MAX_N

STAGES: tuple[str, ...] = get_args(Stage)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeploymentKnobs(Strict):
    """Placement and admission control of one deployment."""

    num_replicas: int = Field(1, ge=1)
    # Fractional CPUs: four deployments must fit on a 2-core machine.
    num_cpus: float = Field(0.25, gt=0)
    # GPUs per replica (0: CPU only).
    num_gpus: float = Field(0.0, ge=0)
    # Serve autoscaling between min and max replicas; replaces num_replicas when set.
    autoscaling: AutoscalingConfig | None = None
    # torch/BLAS threads per replica (pinned at start).
    threads: int = Field(1, ge=1)
    # Requests a replica works on at once; beyond it they wait in the caller's queue...
    max_ongoing_requests: int = Field(16, ge=1)
    # ...which holds at most this many before callers get 503 / RESOURCE_EXHAUSTED.
    max_queued_requests: int = Field(64, ge=1)
    # A replica that cannot start (missing model, contract mismatch) is retried this often
    # before the deployment is marked failed.
    max_constructor_retry_count: int = Field(3, ge=1)


class FusionWeights(Strict):
    """How Ranking fuses the model's heads and features into one score (z-scored terms)."""

    retrieval: float = 1.0  # evolution head: next-item score
    rating: float = 0.3  # intensity head: predicted rating
    like: float = 0.3  # decay head: P(like) with decayed history
    intent: float = 0.5  # intent distribution . item genres
    query: float = 0.5  # query text . item text (when a query is given)
    popularity: float = 0.1  # trailing-window popularity from Feast item_stats


class RetrievalKnobs(Strict):
    model_tag: str
    k: int = Field(100, ge=1, le=5000)  # candidates handed to ranking
    # Serving clock (epoch seconds) for decay and TTL; None = wall clock. Replays of
    # historical data (MovieLens ends in 1998) pin it to the data's end.
    as_of: int | None = None
    max_batch_size: int = Field(8, ge=1, le=256)
    # How long a batch waits for more requests after its first. 0: take what is queued; under
    # load requests queue while a batch runs, so batches still form, and light load pays no wait.
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1)
    # Catalogues of at least this many items are searched with a FAISS inverted-file index
    # (ray_apps.ann) instead of exact scoring, which stays under 1 ms on one core below it.
    ann_min_items: int = Field(100_000, ge=1)
    # Index cells scanned per query: more is slower and closer to exact.
    ann_nprobe: int = Field(64, ge=1, le=65_536)


class IntentKnobs(Strict):
    model_tag: str
    query_weight: float = Field(0.6, ge=0, le=1)  # share of the query in the intent blend
    temperature: float = Field(0.05, gt=0)  # sharpness of query -> genre similarities
    max_batch_size: int = Field(8, ge=1, le=256)  # LM encoder batch
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1)  # as RetrievalKnobs


class RankingKnobs(Strict):
    model_tag: str
    weights: FusionWeights = FusionWeights()
    explain_top: int = Field(2, ge=0, le=10)  # history items named per recommendation
    # Item trend features (Feast item_stats) are re-read for the whole catalogue at most this
    # often; materialization moves them daily, a per-request read costs ~10 ms for K=100.
    item_features_ttl_s: float = Field(60.0, ge=0)


class AppArgs(Strict):
    """Everything ``build_app`` needs; the Serve config YAML carries exactly this."""

    # BentoML tag (``interest:<version>``, ``interest:latest``) or ``champion``.
    model_tag: str = "champion"
    # Feast workspace (data/, registry, SQLite file) and which online store to read.
    feature_repo: str
    online_store: Literal["sqlite", "redis"] = "sqlite"
    # Hugging Face directory of the LM that encodes queries; must be the one that embedded
    # the item text in Feast. None: the offline all-MiniLM-L6-v2 weights.
    lm_model: str | None = None
    default_n: int = Field(10, ge=1, le=MAX_N)
    retrieval: RetrievalKnobs | None = None
    intent: IntentKnobs | None = None
    ranking: RankingKnobs | None = None
    deployments: dict[Stage, DeploymentKnobs] = {}

    def knobs(self) -> tuple[RetrievalKnobs, IntentKnobs, RankingKnobs]:
        """Each stage's user_config, with the app's model tag where none is given."""
        tag = {"model_tag": self.model_tag}
        return (self.retrieval or RetrievalKnobs(**tag), self.intent or IntentKnobs(**tag),
                self.ranking or RankingKnobs(**tag))

    def placement(self, stage: str) -> DeploymentKnobs:
        return self.deployments.get(stage, DeploymentKnobs())


def with_model_tag(config: dict, tag: str, app: str = "irec") -> dict:
    """A copy of a Serve config whose stages load ``tag``: only their ``user_config`` changes.

    Serve versions a declarative app by its import path, runtime env and args; leaving those
    alone makes the change a ``reconfigure`` of the running replicas (no restart, no lost
    request). This is what ``irec rollout`` writes into the RayService's serveConfigV2.
    """
    updated = copy.deepcopy(config)
    apps = {a["name"]: a for a in updated["applications"]}
    if app not in apps:
        raise KeyError(f"no application {app!r} in the config; it has {sorted(apps)}")
    for deployment in apps[app]["deployments"]:
        if "model_tag" in (deployment.get("user_config") or {}):
            deployment["user_config"]["model_tag"] = tag
    return updated
