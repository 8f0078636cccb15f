"""The serving section of the platform config: every knob of the Serve application, once.

``ServingConfig`` is what a preset's ``serving:`` block holds and what ``build_app`` takes
(inside ``AppArgs``, with the feature store and LM it reads). Per stage it has two parts:

- runtime knobs (``ingress``, ``retrieval``, ``intent``, ``ranking``, ``events``): each stage's
  ``user_config``, applied in ``reconfigure`` without a restart, so changing them in the
  chart's values (``serving.app``), in ``serveConfigV2`` or with ``irec rollout`` updates the
  running replicas in place;
- placement and admission (``deployments``): Serve's own deployment options, under Serve's
  own names (``num_replicas``, ``autoscaling_config``, ``ray_actor_options``,
  ``max_ongoing_requests``, ...), passed to ``Deployment.options`` as they are.
"""

from __future__ import annotations

import copy
from typing import Literal, get_args

from pydantic import Field, model_validator

from data.config import StrictModel
from features.config import FeatureConfig
from ray_apps.schemas import MAX_N
from serving.auth import AuthConfig

Stage = Literal["Retrieval", "Intent", "Ranking", "Events", "Ingress"]
STAGES: tuple[str, ...] = get_args(Stage)
# wall: decay and feature TTL against the current time; dataset_end: against one second after
# the data's last event (replays of historical data: MovieLens-100K ends in April 1998);
# an integer: that epoch second.
Clock = Literal["wall", "dataset_end"] | int


class AutoscalingConfig(StrictModel):
    """Ray Serve autoscaling of one deployment: replaces its fixed replica count.

    On KubeRay the Ray autoscaler then adds or removes worker pods (within the worker
    groups' min/max) to fit the replicas Serve asks for.
    """

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    # Ongoing requests per replica that Serve aims for when it scales.
    target_ongoing_requests: float = Field(8.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} must not exceed "
                             f"max_replicas={self.max_replicas}")
        return self


class ActorOptions(StrictModel):
    """Resources each replica reserves (Serve's ``ray_actor_options``)."""

    # Fractions let the four deployments share a small machine; 1+ on a cluster.
    num_cpus: float = Field(0.25, gt=0)
    # GPUs per replica (places the replicas on a GPU worker group on KubeRay).
    num_gpus: float = Field(0.0, ge=0)


class DeploymentConfig(StrictModel):
    """Placement and admission control of one deployment, as Serve's deployment options."""

    # Fixed replica count (None: one, or Serve autoscaling when autoscaling_config is set).
    num_replicas: int | None = Field(None, ge=1)
    autoscaling_config: AutoscalingConfig | None = None
    ray_actor_options: ActorOptions = ActorOptions()
    # Requests a replica works on at once; beyond it they wait in the caller's queue...
    max_ongoing_requests: int = Field(16, ge=1)
    # ...which holds at most this many before callers get 503 / RESOURCE_EXHAUSTED.
    max_queued_requests: int = Field(64, ge=1)
    # A replica that cannot start (missing model, contract mismatch) is retried this often
    # before the deployment is marked failed.
    max_constructor_retry_count: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> DeploymentConfig:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError(f"num_replicas={self.num_replicas} and autoscaling_config exclude "
                             "each other: set one")
        return self

    def options(self) -> dict:
        """The keyword arguments of ``Deployment.options``."""
        return self.model_dump(exclude_none=True)


class IngressKnobs(StrictModel):
    """The HTTP/gRPC front."""

    # Results returned when a request gives no n.
    default_n: int = Field(10, ge=1, le=MAX_N)


class StageKnobs(StrictModel):
    """Knobs every model stage has."""

    # torch/BLAS threads of each replica.
    threads: int = Field(1, ge=1)


class RetrievalKnobs(StageKnobs):
    """Retrieval: user state -> top-K candidates."""

    k: int = Field(100, ge=1, le=5000)  # candidates handed to ranking
    # items added since training (POST /items) that join the K, best-scoring (or, on cold
    # start, newest) first: with no interactions they rarely make the top K themselves
    fresh_candidates: int = Field(10, ge=0, le=1000)
    max_batch_size: int = Field(8, ge=1, le=256)
    # How long a batch waits for more requests after its first. 0: take what is queued; under
    # load requests queue while a batch runs, so batches still form, and light load pays no wait.
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1)
    # Catalogues of at least this many items are searched with a FAISS inverted-file index
    # (ray_apps.ann) instead of exact scoring, which stays under 1 ms on one core below it.
    ann_min_items: int = Field(100_000, ge=1)
    # Index cells scanned per query: more is slower and closer to exact.
    ann_nprobe: int = Field(64, ge=1, le=65_536)
    # An online-store read slower than this (or failing) answers known users with the
    # popularity fallback, flagged in cold_start_reason and counted; keep it well under
    # serving.request_timeout_s.
    feature_timeout_s: float = Field(1.0, gt=0, le=60)
    # After a failed read, requests take the fallback at once for this long, without waiting
    # on the store (a hung Redis would otherwise cost every request feature_timeout_s).
    feature_retry_s: float = Field(0.5, ge=0, le=60)
    # the cold-start popularity (Feast item_stats, moved by live events) is re-read at most
    # this often, in the background
    item_features_ttl_s: float = Field(60.0, ge=0)


class IntentKnobs(StageKnobs):
    """Intent: free-text query -> genre distribution."""

    query_weight: float = Field(0.6, ge=0, le=1)  # share of the query in the intent blend
    temperature: float = Field(0.05, gt=0)  # sharpness of query -> genre similarities
    max_batch_size: int = Field(8, ge=1, le=256)  # LM encoder batch
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1)  # as RetrievalKnobs


class FusionWeights(StrictModel):
    """How Ranking fuses the model's heads and features into one score (z-scored terms)."""

    retrieval: float = 1.0  # evolution head: next-item score
    rating: float = 0.3  # intensity head: predicted rating
    like: float = 0.3  # decay head: P(like) with decayed history
    intent: float = 0.5  # intent distribution . item genres
    query: float = 0.5  # query text . item text (when a query is given)
    popularity: float = 0.1  # trailing-window popularity from Feast item_stats
    fresh: float = 1.0  # bonus of items added since the model was trained (explore them)


class RankingKnobs(StageKnobs):
    """Ranking: the K candidates -> the top N, fused and explained."""

    weights: FusionWeights = FusionWeights()
    explain_top: int = Field(2, ge=0, le=10)  # history items named per recommendation
    # Item trend features (Feast item_stats) are re-read for the whole catalogue at most this
    # often; materialization moves them daily, a per-request read costs ~10 ms for K=100.
    item_features_ttl_s: float = Field(60.0, ge=0)
    # items closest to a query's text that join the candidates (0: the query only re-ranks)
    query_candidates: int = Field(20, ge=0, le=1000)


class EventsKnobs(StrictModel):
    """Events: accepted batches -> the offline event log and the online features."""

    # Events stamped later than now plus this many seconds are refused: a wrong clock or unit.
    max_future_skew_s: float = Field(300.0, ge=0)
    # How long an event id is remembered online, so that a retry of it changes nothing.
    dedup_ttl_s: float = Field(7 * 86_400.0, gt=0)
    # Redis: tries of a batch whose users' or items' rows other writers keep changing.
    max_attempts: int = Field(50, ge=1)
    # SQLite: how long a batch waits for another writer's transaction.
    busy_timeout_s: float = Field(5.0, gt=0)
    # Exposures (what each /recommend showed) are buffered this long, then written as one file
    # (a replica killed in between loses at most this much of the exposure log, never events).
    exposure_flush_s: float = Field(1.0, gt=0, le=300)


NewerData = Literal["serve", "refuse"]


class Tagged(StrictModel):
    """The model every stage's ``user_config`` names: ``irec rollout`` changes only the tag."""

    # BentoML tag (``interest:<version>``, ``interest:latest``) or ``champion``.
    model_tag: str
    # See ServingConfig.newer_data.
    newer_data: NewerData


class IngressUserConfig(IngressKnobs):
    """What an Ingress replica reconfigures with: its knobs and the request deadline.

    The Ingress answers within ``request_timeout_s`` itself: Serve's proxy timeout is the same
    figure, but a client can lift that one with the ``x-request-timeout-seconds`` header.
    """

    request_timeout_s: float = Field(gt=0)


class RetrievalUserConfig(RetrievalKnobs, Tagged):
    """What a Retrieval replica reconfigures with: its knobs, the model and the clock."""

    clock: Clock


class IntentUserConfig(IntentKnobs, Tagged):
    """What an Intent replica reconfigures with."""


class RankingUserConfig(RankingKnobs, Tagged):
    """What a Ranking replica reconfigures with."""


class EventsUserConfig(EventsKnobs):
    """What an Events replica reconfigures with."""


class ServingConfig(StrictModel):
    """The Ray Serve application as ``irec serve`` and ``irec run`` start it (ray_apps/)."""

    # BentoML tag every stage serves: ``champion`` (the promoted model), ``interest:latest``
    # or a version.
    model_tag: str = "champion"
    # A model trained on another dataset than the store holds (another fingerprint, every item
    # id still naming the same item): serve it, logged (a live store moves past its model), or
    # refuse it. A model whose id map disagrees with the store is always refused.
    newer_data: NewerData = "serve"
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(9000, ge=1, le=65535)
    # Requests slower than this end with 408 / DEADLINE_EXCEEDED instead of waiting forever
    # (Serve's proxies, and the Ingress itself, which a client header cannot change).
    request_timeout_s: float = Field(10.0, gt=0)
    # The serving clock of decay and the feature TTL (see Clock).
    clock: Clock = "wall"
    # Bearer tokens of the HTTP and gRPC API (serving/auth.py); health stays open.
    auth: AuthConfig = AuthConfig()
    ingress: IngressKnobs = IngressKnobs()
    retrieval: RetrievalKnobs = RetrievalKnobs()
    intent: IntentKnobs = IntentKnobs()
    ranking: RankingKnobs = RankingKnobs()
    events: EventsKnobs = EventsKnobs()
    # Per-deployment placement and admission; a stage not named here gets the defaults.
    deployments: dict[Stage, DeploymentConfig] = {}

    def deployment(self, stage: str) -> DeploymentConfig:
        return self.deployments.get(stage, DeploymentConfig())

    def user_config(self, stage: str) -> dict:
        """The ``user_config`` of ``stage``, validated as its replicas will validate it."""
        tag = {"model_tag": self.model_tag, "newer_data": self.newer_data}
        config = {
            "Ingress": IngressUserConfig(**self.ingress.model_dump(),
                                         request_timeout_s=self.request_timeout_s),
            "Retrieval": RetrievalUserConfig(**self.retrieval.model_dump(), **tag,
                                             clock=self.clock),
            "Intent": IntentUserConfig(**self.intent.model_dump(), **tag),
            "Ranking": RankingUserConfig(**self.ranking.model_dump(), **tag),
            "Events": EventsUserConfig(**self.events.model_dump()),
        }[stage]
        return config.model_dump(mode="json")


class AppArgs(StrictModel):
    """Everything ``build_app`` takes: the serving section and the feature store it reads.

    ``features`` gives the Feast workspace and online store every stage reads, and the LM
    (``features.lm``) that Intent encodes queries with: the one that embedded the item text.
    """

    features: FeatureConfig = FeatureConfig()
    serving: ServingConfig = ServingConfig()


def with_model_tag(config: dict, tag: str, app: str = "irec") -> dict:
    """A copy of a Serve config whose stages load ``tag``: only their ``user_config`` changes.

    Serve versions a declarative app by its import path, runtime env and args; leaving those
    alone makes the change a ``reconfigure`` of the running replicas (no restart, no lost
    request). This is what ``irec rollout`` writes into the RayService's serveConfigV2.
    """
    return with_user_config(config, {"model_tag": tag}, app)


def with_user_config(config: dict, changes: dict, app: str = "irec") -> dict:
    """A copy of a Serve config where every stage of ``app`` whose ``user_config`` has one of
    the keys of ``changes`` gets its value (a reconfigure, see ``with_model_tag``)."""
    updated = copy.deepcopy(config)
    apps = {a["name"]: a for a in updated["applications"]}
    if app not in apps:
        raise KeyError(f"no application {app!r} in the config; it has {sorted(apps)}")
    for deployment in apps[app]["deployments"]:
        knobs = deployment.get("user_config") or {}
        knobs.update({k: v for k, v in changes.items() if k in knobs})
    return updated
