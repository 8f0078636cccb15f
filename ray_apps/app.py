"""The recommendation application: Retrieval -> Intent -> Ranking behind an HTTP/gRPC Ingress,
and Events (live user events: the event log and the online features) beside them.

    irec serve --config configs/tiny.yaml            # from the platform config
    irec serve-config --config configs/tiny.yaml -o app.yaml && serve run app.yaml

``build_app`` is a typed Ray Serve app builder: Serve validates its arguments into ``AppArgs``
(the ``args`` block of a Serve config: the platform config's ``features`` and ``serving``
sections, as they are). Each stage's runtime knobs go in as ``user_config`` so that a config
update (``irec rollout``, the chart's ``serving.app`` values) reconfigures running replicas in
place; ``serving.deployments`` are Serve's deployment options, passed as they are.
``serve_config`` writes the Serve config file (what ``serve build`` writes) from the same
builder: the file the Helm chart embeds.

(No ``from __future__ import annotations``: Serve reads ``build_app``'s annotation to validate
the args into ``AppArgs``.)
"""

import time

from ray import serve
from ray.serve._private.build_app import build_app as build_deployments
from ray.serve.config import gRPCOptions
from ray.serve.deployment import Application, Deployment, deployment_to_schema
from ray.serve.schema import LoggingConfig, ServeApplicationSchema, ServeDeploySchema

from features.store import open_store
from ray_apps.config import AppArgs, ServingConfig
from ray_apps.events import Events
from ray_apps.ingress import Ingress
from ray_apps.intent import Intent
from ray_apps.models import check_contract, check_data, concrete_tag, resolve_tag
from ray_apps.ranking import Ranking
from ray_apps.retrieval import Retrieval
from ray_apps.schemas import MAX_BODY_BYTES
from serving import package

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
# - also in the proxies: gRPC messages up to the HTTP body limit (Serve's default is 2 GiB,
#   and a 1.6 MB message cost 0.6 s of proxy and Ingress time before validation refused it).
CONTROLLER_ENV = {"RAY_SERVE_PROXY_USE_GRPC": "1", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
                  "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(MAX_BODY_BYTES)}


def _placed(deployment: Deployment, args: AppArgs, name: str) -> Deployment:
    """``deployment`` with its Serve options and ``user_config`` from ``args.serving``."""
    serving = args.serving
    return deployment.options(**serving.deployment(name).options(),
                              user_config=serving.user_config(name))


def grpc_options(port: int = 9000, request_timeout_s: float | None = None) -> gRPCOptions:
    return gRPCOptions(port=port, grpc_servicer_functions=[GRPC_SERVICER],
                       request_timeout_s=request_timeout_s)


def build_app(args: AppArgs) -> Application:
    """The composed application; every knob comes from ``args``."""
    features = args.features
    retrieval = _placed(Retrieval, args, "Retrieval").bind(features)
    intent = _placed(Intent, args, "Intent").bind(features)
    ranking = _placed(Ranking, args, "Ranking").bind(features)
    events = _placed(Events, args, "Events").bind(features, intent)
    return _placed(Ingress, args, "Ingress").bind(retrieval, intent, ranking, events,
                                                  args.serving.auth)


def serve_config(apps: dict[str, AppArgs]) -> dict:
    """The Serve config (``serve build``'s format) of ``build_app`` for each named app, validated.

    The first app is routed at ``/``, any other at ``/<name>``; gRPC clients pick an app with
    the ``application`` metadata key. Ports and the request timeout are the first app's.
    """
    first = next(iter(apps.values())).serving
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
        "http_options": {"host": "0.0.0.0", "port": first.http_port,
                         "request_timeout_s": first.request_timeout_s},
        "grpc_options": {"port": first.grpc_port, "grpc_servicer_functions": [GRPC_SERVICER],
                         "request_timeout_s": first.request_timeout_s},
        "controller_options": {"runtime_env": {"env_vars": dict(CONTROLLER_ENV)}},
        "logging_config": LoggingConfig(enable_access_log=False).model_dump(mode="json"),
        "applications": applications,
    }
    ServeDeploySchema.model_validate(config)
    return config


def preflight(args: AppArgs) -> str:
    """Fail fast, before any replica starts: the model exists and agrees with the feature
    store (contract and id map, ``serving.newer_data``).

    Returns the concrete model tag. The replicas run the same checks when they load a model.
    """
    store = open_store(args.features)
    packaged = package.load(resolve_tag(args.serving.model_tag))
    check_contract(packaged.metadata, store, packaged.tag)
    check_data(packaged.items, packaged.metadata, store, packaged.tag, args.serving.newer_data)
    return packaged.tag


def pinned(args: AppArgs) -> AppArgs:
    """``args`` with its model tag resolved (``champion``, ``name:latest``) to a concrete one:
    a replica restarted after a later promote must load the version its peers serve."""
    return args.model_copy(update={"serving": args.serving.model_copy(
        update={"model_tag": concrete_tag(args.serving.model_tag)})})


def deploy(apps: dict[str, AppArgs], *, check: bool = True, timeout_s: float = 600.0) -> dict:
    """Build the Serve config of ``apps`` (model tags pinned) and apply it (see ``apply``);
    returns the config."""
    if check:
        for args in apps.values():
            preflight(args)
    config = serve_config({name: pinned(args) for name, args in apps.items()})
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


def start_serve(serving: ServingConfig, *, access_log: bool = False) -> None:
    """Start Serve's controller and its HTTP and gRPC proxies on this Ray cluster."""
    serve.start(http_options={"host": "127.0.0.1", "port": serving.http_port,
                              "request_timeout_s": serving.request_timeout_s},
                grpc_options=grpc_options(serving.grpc_port, serving.request_timeout_s),
                logging_config=LoggingConfig(enable_access_log=access_log),
                controller_options={"runtime_env": {"env_vars": dict(CONTROLLER_ENV)}})


def start(args: AppArgs, *, access_log: bool = False, name: str = "irec") -> None:
    """Start Serve (``start_serve``) on the app's ports and deploy the application."""
    preflight(args)
    start_serve(args.serving, access_log=access_log)
    deploy({name: args}, check=False)
