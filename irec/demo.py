"""``irec run``: the whole product on one machine, ending in a demo that fits the data.

    ingest -> features build -> feast apply -> materialize -> train + package -> serve -> recommend

The demo asks the running app for a few users' recommendations and, when the data supports
it, for one free-text query. What a dataset cannot support is skipped with the reason
(``plan``), and a serving clock that would make every user a cold start is named at the start
with its fix, before minutes of training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from data.schema import IngestError
from irec.config import PlatformConfig
from irec.console import Console, fail, load_config, session
from irec.serve_commands import ConfigOpt, VerboseOpt, print_answer, start_serving, wait_for_ctrl_c
from serving.auth import client_token

STEPS = ("ingest", "features build", "feast apply", "materialize",
         "train + package (Ray Train, BentoML)", "serve (Ray Serve)", "recommend")
QUERY = "a funny comedy"


@dataclass
class DemoPlan:
    """What the demo shows for a dataset, and what it says about the rest."""

    users: list[int]
    query: str | None  # None: the data cannot steer intent with text
    notes: list[str] = field(default_factory=list)  # skipped parts, with the reason
    warnings: list[str] = field(default_factory=list)  # settings that defeat the demo


def plan(manifest: dict, cfg: PlatformConfig, users: list[int], history_ttl_s: float,
         now: datetime | None = None) -> DemoPlan:
    """The demo for a dataset's ``manifest`` under ``cfg``'s serving clock."""
    result = DemoPlan(users=[u for u in users if 1 <= u <= manifest["counts"]["users"]],
                      query=QUERY)
    left_out = sorted(set(users) - set(result.users))
    if left_out:
        result.notes.append(f"demo: users {left_out} are not in the data "
                            f"({manifest['counts']['users']:,} users); left out")
    if not manifest["has_genres"] or not manifest["has_text"]:
        missing = " and ".join(n for n, has in (("genres", manifest["has_genres"]),
                                                ("item text", manifest["has_text"])) if not has)
        result.query = None
        result.notes.append(f"demo: no free-text query: the items carry no {missing}, so the "
                            "model has no intent a query could steer")
    clock = cfg.serving.clock
    if clock != "dataset_end":
        last = pd.Timestamp(manifest["time_range"][1]).to_pydatetime()
        as_of = (now or datetime.now(UTC)) if clock == "wall" else datetime.fromtimestamp(
            clock, UTC)
        age_s = (as_of - last).total_seconds()
        if age_s > history_ttl_s:
            age_days = age_s / 86_400
            when = "now" if clock == "wall" else f"at serving.clock {clock}"
            result.warnings.append(
                f"the data's last event ({last:%Y-%m-%d}) is {age_days:,.0f} days before "
                f"{when}, past the {history_ttl_s / 86_400:.0f}-day history TTL: every user "
                "will be served as a cold start. To replay historical data as of its end, set "
                "`serving: {clock: dataset_end}` in the preset.")
    return result


def run_cmd(
    config: ConfigOpt = Path("configs/tiny.yaml"),
    repo_path: Annotated[Path | None, typer.Option(
        help="Feature-store workspace (data/ lives here).")] = None,
    users: Annotated[list[int], typer.Option("--user", help="Users to show.")] = (1, 2, 3),
    model_tag: Annotated[str | None, typer.Option(
        help="Serve this stored model instead of training one.")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port of the app.")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port of the app.")] = None,
    exit_after_demo: Annotated[bool, typer.Option(
        help="Stop after printing the demo instead of serving until Ctrl-C.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """The whole product: ingest -> features -> train -> package -> serve -> recommend."""
    cfg = load_config(config, **{"features.repo_path": repo_path, "serving.model_tag": model_tag,
                                 "serving.http_port": http_port,
                                 "serving.grpc_port": grpc_port})
    with session("run", verbose) as console:
        _run(cfg, console, list(users), train_model=model_tag is None,
             exit_after_demo=exit_after_demo)


def _run(cfg: PlatformConfig, console: Console, users: list[int], *, train_model: bool,
         exit_after_demo: bool) -> None:
    from data.ingest import ingest
    from feature_repo.definitions import BEHAVIOUR_TTL
    from features.build import build
    from features.store import apply, materialize, open_store
    from irec.pipeline import run as run_training

    started = time.perf_counter()
    echo = console.echo

    def step(i: int) -> None:
        echo(f"[{i + 1}/{len(STEPS)}] {STEPS[i]}  ({time.perf_counter() - started:.0f}s)",
             bold=True)

    step(0)
    try:
        manifest = ingest(cfg.ingest, cfg.features.data_dir, log=echo).manifest
    except IngestError as exc:
        fail(str(exc))
    demo = plan(manifest, cfg, users, BEHAVIOUR_TTL.total_seconds())
    for warning in demo.warnings:
        echo(f"warning: {warning}", fg="yellow")
    for note in demo.notes:
        echo(note)
    if not demo.users:
        fail(f"none of the users {users} is in the data "
             f"({manifest['counts']['users']:,} users): pick them with --user")
    step(1)
    build(cfg.features, log=echo)
    step(2)
    store = open_store(cfg.features)
    apply(store, log=echo)
    step(3)
    materialize(store, log=echo)
    step(4)
    if train_model:
        report = run_training(cfg, log=echo, verbose=console.verbose)
        cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(
            update={"model_tag": report["model"]})})
    else:
        echo(f"train: skipped, serving {cfg.serving.model_tag}")
    step(5)
    http, grpc_target = start_serving(cfg, console)
    step(6)
    _recommend(http, demo, console, client_token(cfg.serving.auth))
    echo(f"done in {time.perf_counter() - started:.0f}s: {manifest['counts']['events']:,} "
         f"events, model {cfg.serving.model_tag}; POST {http}/recommend, gRPC "
         f"{grpc_target} (try `irec recommend --user {demo.users[0]}`)", fg="green")
    if not exit_after_demo:
        wait_for_ctrl_c(echo)


def _recommend(http: str, demo: DemoPlan, console: Console, token: str | None) -> None:
    from ray_apps.client import APIError, HTTPClient
    from ray_apps.schemas import RecommendRequest

    client = HTTPClient(http, token=token)
    asks = [(f"user {u}:", RecommendRequest(user_id=u, n=5)) for u in demo.users]
    if demo.query is not None:
        asks.append((f"user {demo.users[0]} asking for '{demo.query}':",
                     RecommendRequest(user_id=demo.users[0], n=5, query=demo.query)))
    for title, request in asks:
        console.echo(title, fg="cyan")
        try:
            print_answer(client.recommend(request), console.echo)
        except APIError as exc:
            fail(f"{title.rstrip(':')}: the app refused the request ({exc.status}): "
                 f"{exc.message}", exit_code=1)
