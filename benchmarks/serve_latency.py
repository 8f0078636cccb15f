"""Closed-loop latency of the Serve app over HTTP and gRPC, against its floor and Serve's cost.

    python benchmarks/serve_latency.py --config configs/tiny.yaml     # after `make run`

In one run, on one machine, under the app's own Serve switches (``ray_apps.app``):
1. no-op: what Serve itself costs, at one client, over HTTP and gRPC:
   - one deployment that answers at once (over HTTP it reads the JSON body, as any POST
     endpoint must: Serve fetches a body from the proxy in a second round trip);
   - the app's topology with stages that do nothing: an ingress and two stage hops;
2. floor: the stages called in-process, no Serve, in the app's order (Retrieval, Intent when
   there is a query, Ranking);
3. the app under closed-loop load at 1, 4 and 16 concurrent clients, HTTP and gRPC:
   requests/s, p50/p95/p99 end to end, and the per-stage medians the app reports.
Access logs are off. Targets on the 2-core box: p99 <= 50 ms at 1 client; end-to-end p99
<= 2 x floor p99 + no-op p99. The second compares a pipeline of three Serve hops with a
one-hop no-op, so it holds only while the two extra hops cost less than the floor; the run
also prints the bound against the no-op pipeline, which has the app's hops.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import requests
from ray import serve

from irec.config import PlatformConfig
from serving import recommend_pb2 as pb
from serving import recommend_pb2_grpc as pb_grpc
from serving.auth import client_token, ensure_local_token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.array(ms)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99))}


def closed_loop(call, clients: int, total: int) -> tuple[float, list[float], list[dict]]:
    """``clients`` threads send ``total`` requests back to back; (req/s, latencies, stages)."""
    latencies: list[float] = []
    stages: list[dict] = []
    errors: list[str] = []
    left = iter(range(total))
    lock = threading.Lock()

    def worker() -> None:
        session = call.new_session()
        while True:
            with lock:
                if next(left, None) is None:
                    return
            tick = time.perf_counter()
            try:
                stage = call(session)
            except Exception as exc:  # noqa: BLE001 (a benchmark counts, never hides, errors)
                errors.append(repr(exc))
                continue
            with lock:
                latencies.append((time.perf_counter() - tick) * 1000)
                stages.append(stage)

    began = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print(f"  {len(errors)} errors, e.g. {errors[0]}")
    return len(latencies) / (time.perf_counter() - began), latencies, stages


class HTTPCaller:
    def __init__(self, url: str, users: list[int], path: str = "/recommend",
                 query: str = "", token: str | None = None) -> None:
        self.url, self.users, self.path, self.query = url, users, path, query
        self.token = token

    def new_session(self) -> requests.Session:
        session = requests.Session()
        if self.token:
            session.headers["Authorization"] = f"Bearer {self.token}"
        return session

    def __call__(self, session: requests.Session) -> dict:
        body = {"user_id": random.choice(self.users), "n": 10, "query": self.query}
        reply = session.post(f"{self.url}{self.path}", json=body, timeout=60)
        reply.raise_for_status()
        return reply.json().get("latency_ms", {})


class GRPCCaller:
    def __init__(self, target: str, users: list[int], application: str,
                 query: str = "", token: str | None = None) -> None:
        self.target, self.users, self.application = target, users, application
        self.query = query
        self.metadata = (("application", application),
                         *((("authorization", f"Bearer {token}"),) if token else ()))

    def new_session(self):
        return pb_grpc.RecommenderStub(grpc.insecure_channel(self.target))

    def __call__(self, stub) -> dict:
        message = pb.RecommendRequest(user_id=random.choice(self.users), n=10, query=self.query)
        reply = stub.Recommend(message, metadata=self.metadata, timeout=60)
        return dict(reply.latency_ms)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class NoOp:
    """Answers at once; over HTTP it reads the JSON body first, as any POST endpoint must."""

    async def __call__(self, request) -> dict:
        await request.json()
        return {}

    async def Recommend(self, message: pb.RecommendRequest) -> pb.RecommendResponse:  # noqa: N802
        return pb.RecommendResponse()


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class NoOpStage:
    async def __call__(self, *args) -> dict:
        return {}


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class NoOpPipeline:
    """The app's topology with stages that do nothing: Serve's cost of the pipeline itself."""

    def __init__(self, first, then) -> None:
        self.first, self.then = first, then

    async def _hops(self) -> None:
        await self.then.remote(await self.first.remote())

    async def __call__(self, request) -> dict:
        await request.json()
        await self._hops()
        return {}

    async def Recommend(self, message: pb.RecommendRequest) -> pb.RecommendResponse:  # noqa: N802
        await self._hops()
        return pb.RecommendResponse()


def measure_noop(app, label: str, url: str, target: str, users: list[int], total: int,
                 logging_config) -> dict[str, dict[str, float]]:
    """p50/p99 of a no-op app at one client, per protocol; the app is removed afterwards."""
    serve.run(app, name="noop", route_prefix="/noop", logging_config=logging_config)
    out = {}
    for name, caller in (("http", HTTPCaller(url, users, "/noop")),
                         ("grpc", GRPCCaller(target, users, "noop"))):
        closed_loop(caller, 1, 30)
        out[name] = percentiles(closed_loop(caller, 1, total)[1])
        print(f"  {label}, {name}: p50 {out[name]['p50']:.1f} ms, p99 {out[name]['p99']:.1f} ms")
    serve.delete("noop")
    return out


def in_process_floor(args, users: list[int], total: int, query: str) -> list[float]:
    """The stages' own code, constructed and called in this process (no Serve)."""
    from ray_apps.intent import Intent
    from ray_apps.messages import Query
    from ray_apps.ranking import Ranking
    from ray_apps.retrieval import Retrieval

    r = Retrieval.func_or_class(args.features)
    i = Intent.func_or_class(args.features)
    k = Ranking.func_or_class(args.features)
    unbatched = Retrieval.func_or_class.retrieve.__wrapped__

    async def encode_one(text: str):
        return i.encoder.encode([text])[0]

    async def go() -> list[float]:
        await r.reconfigure(args.serving.user_config("Retrieval"))
        await i.reconfigure(args.serving.user_config("Intent"))
        await k.reconfigure(args.serving.user_config("Ranking"))
        i.encode = encode_one  # the batched encoder's own code, a batch of one
        out = []
        for _ in range(total):
            tick = time.perf_counter()
            # the batched method's own code, a batch of one (batching needs a replica)
            got = (await unbatched(r, [Query(user_id=random.choice(users))]))[0]
            understood = await i(query) if query else None
            await k(got, understood, 10)
            out.append((time.perf_counter() - tick) * 1000)
        return out

    return asyncio.run(go())


def main() -> None:
    import ray

    from ray_apps.app import REPLICA_ENV, deploy, start_serve

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/tiny.yaml"))
    parser.add_argument("--repo-path", type=Path, default=None, help="feature workspace")
    parser.add_argument("--requests", type=int, default=1000, help="per load level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--query", default="", help="free text sent with every request")
    options = parser.parse_args()
    cfg = PlatformConfig.load(options.config, {"features.repo_path": options.repo_path and
                                               str(options.repo_path)})
    http_port, grpc_port = free_port(), free_port()
    cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(
        update={"http_port": http_port, "grpc_port": grpc_port})})
    args = cfg.app_args()
    users = list(range(1, 944))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    from ray.serve.schema import LoggingConfig

    quiet = LoggingConfig(enable_access_log=False, log_level="WARNING")
    start_serve(args.serving)
    url, target = f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"

    print("1/3 no-op Serve deployments (Serve's own cost), 1 client")
    # the no-op deployments run under the app's own Serve switches (its replicas' runtime env)
    placed = {"ray_actor_options": {"num_cpus": 0.1, "runtime_env": {"env_vars": REPLICA_ENV}}}
    hops = (NoOpStage.options(**placed).bind(),
            NoOpStage.options(name="NoOpStage2", **placed).bind())
    noop = measure_noop(NoOp.options(**placed).bind(), "one deployment", url, target, users,
                        options.requests, quiet)
    pipeline = measure_noop(NoOpPipeline.options(**placed).bind(*hops), "pipeline", url,
                            target, users, options.requests, quiet)

    print(f"2/3 floor: the stages in-process (query {options.query!r})")
    in_process_floor(args, users, 30, options.query)
    floor = percentiles(in_process_floor(args, users, options.requests, options.query))
    print(f"  p50 {floor['p50']:.1f} ms, p99 {floor['p99']:.1f} ms")

    print("3/3 the app under closed-loop load")
    deploy({"irec": args})
    rows = []
    ensure_local_token(args.serving.auth)
    token = client_token(args.serving.auth)
    for protocol, caller in (("http", HTTPCaller(url, users, query=options.query, token=token)),
                             ("grpc", GRPCCaller(target, users, "irec", options.query, token))):
        closed_loop(caller, 1, 30)
        for clients in options.clients:
            rate, latencies, stages = closed_loop(caller, clients, options.requests)
            p = percentiles(latencies)
            stage = {k: statistics.median([s[k] for s in stages if k in s] or [float("nan")])
                     for k in ("feast", "retrieval", "intent", "ranking", "total")}
            rows.append((protocol, clients, rate, p, stage))
            print(f"  {protocol} x{clients}: {rate:.0f} req/s, p50 {p['p50']:.1f} "
                  f"p95 {p['p95']:.1f} p99 {p['p99']:.1f} ms")
    print("\n| protocol | clients | req/s | p50 ms | p95 ms | p99 ms | stage medians ms "
          "(feast / retrieval / intent / ranking) | in ingress ms |\n"
          + "|---" * 8 + "|")
    for protocol, clients, rate, p, s in rows:
        print(f"| {protocol} | {clients} | {rate:.0f} | {p['p50']:.1f} | {p['p95']:.1f} | "
              f"{p['p99']:.1f} | {s['feast']:.1f} / {s['retrieval']:.1f} / {s['intent']:.1f} / "
              f"{s['ranking']:.1f} | {s['total']:.1f} |")
    print(f"\nfloor (in-process stages): p50 {floor['p50']:.1f} ms, p99 {floor['p99']:.1f} ms")
    for name in ("http", "grpc"):
        print(f"no-op Serve p99 {name}: one deployment {noop[name]['p99']:.1f} ms, the app's "
              f"topology (ingress + two stage hops) {pipeline[name]['p99']:.1f} ms")
    for protocol, clients, _, p, _ in rows:
        if clients != 1:
            continue
        bound = 2 * floor["p99"] + noop[protocol]["p99"]
        topology = 2 * floor["p99"] + pipeline[protocol]["p99"]
        print(f"{protocol} at 1 client: p99 {p['p99']:.1f} ms vs 50 ms target "
              f"({'PASS' if p['p99'] <= 50 else 'MISS'}); vs 2 x floor + no-op = {bound:.1f} ms "
              f"({'PASS' if p['p99'] <= bound else 'MISS'}); vs 2 x floor + no-op pipeline = "
              f"{topology:.1f} ms ({'PASS' if p['p99'] <= topology else 'MISS'})")
    serve.shutdown()


if __name__ == "__main__":
    main()
