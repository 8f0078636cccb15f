"""The recommendation application: Retrieval -> Intent -> Ranking behind an HTTP/gRPC Ingress.

    serve run ray_apps.app:build_app feature_repo=/path/to/workspace model_tag=champion
    irec serve --config configs/tiny.yaml            # the same, from the platform config

``build_app`` is a typed Ray Serve app builder: Serve validates its arguments into ``AppArgs``
(from the command line or the ``args`` block of a Serve config). Each stage's runtime knobs go
in as ``user_config`` so that a config update (``irec rollout``, the chart's
``serveConfigV2``) reconfigures running replicas in place. ``serve_config`` writes the Serve
config file (what ``serve build`` writes) from the same builder: the file the Helm chart embeds.

(No ``from __future__ import annotations``: Serve reads ``build_app``'s annotation to validate
the args into ``AppArgs``.)
"""

import time
from typing import Any

import bentoml
import pandas as pd
from ray import serve
from ray.serve._private.build_app import build_app as build_deployments
from ray.serve.config import gRPCOptions
from ray.serve.deployment import Application, Deployment, deployment_to_schema
from ray.serve.schema import LoggingConfig, ServeApplicationSchema, ServeDeploySchema

from features.store import open_store
from irec.config import FeatureConfig, PlatformConfig, ServingConfig, StageConfig
from ray_apps.config import STAGES, AppArgs, DeploymentKnobs, RetrievalKnobs
from ray_apps.ingress import Ingress
from ray_apps.intent import Intent
from ray_apps.models import check_contract, resolve_tag
from ray_apps.ranking import Ranking
from ray_apps.retrieval import Retrieval
from training.data.ingest import read_manifest

IMPORT_PATH = "ray_apps.app:build_app"
GRPC_SERVICER = "serving.recommend_pb2_grpc.add_RecommenderServicer_to_server"
# Serve's latency switches, measured with benchmarks/serve_latency.py (one client, p50):
# - in every replica of the app (its runtime env): run the deployment's code and its outgoing
#   router on the replica's own event loop, not on extra threads (74 -> 37 ms on a slower box:
#   each thread handoff costs milliseconds on 2 cores; stage code that blocks, model and index
#   loads, already runs in ``asyncio.to_thread``); and call the next stage over Serve's gRPC
#   channel between replicas, by value, instead of as a Ray actor task (13.2 -> 9.0 ms gRPC);
# - in Serve's controller, whose proxies inherit its env: the proxy forwards to the Ingress
#   over that same channel, its router on its own loop (9.0 -> 6.2 ms gRPC).
# These are the switches of Serve's documented RAY_SERVE_THROUGHPUT_OPTIMIZED mode, without its
# direct ingress (replicas on their own ports behind HAProxy), which needs an HAProxy binary.
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
               "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
               "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"}
CONTROLLER_ENV = {"RAY_SERVE_PROXY_USE_GRPC": "1", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}


def _placed(deployment: Deployment, knobs: DeploymentKnobs, user_config: dict | None) -> Deployment:
    actor: dict[str, float] = {"num_cpus": knobs.num_cpus}
    if knobs.num_gpus:
        actor["num_gpus"] = knobs.num_gpus
    options: dict[str, Any] = {
        "max_ongoing_requests": knobs.max_ongoing_requests,
        "max_queued_requests": knobs.max_queued_requests,
        "max_constructor_retry_count": knobs.max_constructor_retry_count,
        "ray_actor_options": actor,
    }
    if knobs.autoscaling is None:
        options["num_replicas"] = knobs.num_replicas
    else:
        options["autoscaling_config"] = knobs.autoscaling.model_dump()
    if user_config is not None:
        options["user_config"] = user_config
    return deployment.options(**options)


def grpc_options(port: int = 9000, request_timeout_s: float | None = None) -> gRPCOptions:
    return gRPCOptions(port=port, grpc_servicer_functions=[GRPC_SERVICER],
                       request_timeout_s=request_timeout_s)


def build_app(args: AppArgs) -> Application:
    """The composed application; every knob comes from ``args``."""
    retrieval_knobs, intent_knobs, ranking_knobs = args.knobs()
    store = {"feature_repo": args.feature_repo, "online_store": args.online_store}
    retrieval = _placed(Retrieval, args.placement("Retrieval"),
                        retrieval_knobs.model_dump()).bind(
        **store, threads=args.placement("Retrieval").threads)
    intent = _placed(Intent, args.placement("Intent"), intent_knobs.model_dump()).bind(
        **store, lm_model=args.lm_model, threads=args.placement("Intent").threads)
    ranking = _placed(Ranking, args.placement("Ranking"), ranking_knobs.model_dump()).bind(
        **store, threads=args.placement("Ranking").threads)
    return _placed(Ingress, args.placement("Ingress"), None).bind(
        retrieval, intent, ranking, default_n=args.default_n)


def serve_config(apps: dict[str, AppArgs], *, http_port: int = 8000, grpc_port: int = 9000,
                 request_timeout_s: float = 10.0) -> dict:
    """The Serve config (``serve build``'s format) of ``build_app`` for each named app, validated.

    The first app is routed at ``/``, any other at ``/<name>``; gRPC clients pick an app with
    the ``application`` metadata key.
    """
    applications = []
    for position, (name, args) in enumerate(apps.items()):
        built = build_deployments(build_app(args), name=name)
        applications.append(ServeApplicationSchema(
            name=name, route_prefix="/" if position == 0 else f"/{name}",
            import_path=IMPORT_PATH, runtime_env={"env_vars": dict(REPLICA_ENV)},
            args=args.model_dump(mode="json", exclude_defaults=True),
            deployments=[deployment_to_schema(d) for d in built.deployments],
        ).model_dump(mode="json", exclude_unset=True))
    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": http_port,
                         "request_timeout_s": request_timeout_s},
        "grpc_options": {"port": grpc_port, "grpc_servicer_functions": [GRPC_SERVICER],
                         "request_timeout_s": request_timeout_s},
        "controller_options": {"runtime_env": {"env_vars": dict(CONTROLLER_ENV)}},
        "logging_config": LoggingConfig(enable_access_log=False).model_dump(mode="json"),
        "applications": applications,
    }
    ServeDeploySchema.model_validate(config)
    return config


def preflight(args: AppArgs) -> str:
    """Fail fast, before any replica starts: the model exists and matches the feature store.

    Returns the concrete model tag. The replicas run the same check when they load a model.
    """
    store = open_store(FeatureConfig(repo_path=args.feature_repo,
                                     online_store=args.online_store))
    tags = {k.model_tag for k in args.knobs()}
    for tag in tags:
        stored = bentoml.models.get(resolve_tag(tag))
        check_contract(dict(stored.info.metadata), store, str(stored.tag))
    return str(bentoml.models.get(resolve_tag(args.model_tag)).tag)


def args_from_config(cfg: PlatformConfig) -> AppArgs:
    """The app's arguments from the platform config (``serving`` and ``features`` sections)."""
    s = cfg.serving
    as_of = None
    if s.clock == "dataset_end":
        manifest = read_manifest(cfg.features.data_dir)
        as_of = int(pd.Timestamp(manifest["time_range"][1]).timestamp()) + 1
    return AppArgs(
        model_tag=s.model_tag, feature_repo=str(cfg.features.repo_path.resolve()),
        online_store=cfg.features.online_store, lm_model=cfg.features.lm.model,
        default_n=s.default_n,
        retrieval=RetrievalKnobs(model_tag=s.model_tag, k=s.k, as_of=as_of,
                                 ann_min_items=s.ann_min_items, ann_nprobe=s.ann_nprobe),
        deployments={stage: _placement(s, stage) for stage in STAGES})


def _placement(s: ServingConfig, stage: str) -> DeploymentKnobs:
    given = s.deployments.get(stage, StageConfig())
    return DeploymentKnobs(num_replicas=given.num_replicas,
                           num_cpus=given.num_cpus or s.num_cpus_per_deployment,
                           num_gpus=given.num_gpus, threads=given.threads,
                           autoscaling=given.autoscaling)


def platform_serve_config(cfg: PlatformConfig) -> dict:
    """The Serve config of the platform config: ``irec serve-config``, the chart's file."""
    s = cfg.serving
    return serve_config({"irec": args_from_config(cfg)}, http_port=s.http_port,
                        grpc_port=s.grpc_port, request_timeout_s=s.request_timeout_s)


def deploy(apps: dict[str, AppArgs], *, check: bool = True, timeout_s: float = 600.0) -> dict:
    """Build the Serve config of ``apps`` and apply it (see ``apply``); returns the config."""
    from ray.serve.context import _get_global_client

    if check:
        for args in apps.values():
            preflight(args)
    http = _get_global_client().http_config
    config = serve_config(apps, http_port=http.port,
                          request_timeout_s=http.request_timeout_s or 10.0)
    apply(config, timeout_s=timeout_s)
    return config


def apply(config: dict, *, timeout_s: float = 600.0) -> None:
    """Apply a Serve config to the running Serve instance, as ``serve deploy`` and KubeRay do.

    Apps not in the config are removed. Waits until every app runs; raises with Serve's
    message if one fails to deploy.
    """
    from ray.serve.context import _get_global_client

    schema = ServeDeploySchema.model_validate(config)
    names = [a.name for a in schema.applications]
    before = {name: _deployed_at(name) for name in names}
    _get_global_client().deploy_apps(schema)
    deadline = time.monotonic() + timeout_s
    for name in names:
        while True:
            app = serve.status().applications.get(name)
            fresh = app is not None and app.last_deployed_time_s != before[name]
            if fresh and app.status == "DEPLOY_FAILED":
                reasons = "; ".join(f"{d}: {info.message}" for d, info in
                                    app.deployments.items() if info.status != "HEALTHY")
                raise RuntimeError(f"Deploying application {name} failed: {app.message} "
                                   f"{reasons}")
            if fresh and app.status == "RUNNING" and all(
                    d.status == "HEALTHY" for d in app.deployments.values()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"application {name} not running after {timeout_s:.0f}s")
            time.sleep(0.2)


def _deployed_at(name: str) -> float | None:
    app = serve.status().applications.get(name)
    return None if app is None else app.last_deployed_time_s


def start_serve(*, http_port: int = 8000, grpc_port: int = 9000,
                request_timeout_s: float = 10.0, access_log: bool = False) -> None:
    """Start Serve's controller and its HTTP and gRPC proxies on this Ray cluster."""
    serve.start(http_options={"host": "127.0.0.1", "port": http_port,
                              "request_timeout_s": request_timeout_s},
                grpc_options=grpc_options(grpc_port, request_timeout_s),
                logging_config=LoggingConfig(enable_access_log=access_log),
                controller_options={"runtime_env": {"env_vars": dict(CONTROLLER_ENV)}})


def start(args: AppArgs, *, http_port: int = 8000, grpc_port: int = 9000,
          request_timeout_s: float = 10.0, access_log: bool = False, name: str = "irec") -> None:
    """Start Serve (``start_serve``) and deploy the application."""
    preflight(args)
    start_serve(http_port=http_port, grpc_port=grpc_port, request_timeout_s=request_timeout_s,
                access_log=access_log)
    deploy({name: args}, check=False)
