"""``irec serve``, ``irec serve-config`` and ``irec recommend``: the Serve app from the CLI."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml

from irec.config import PlatformConfig
from irec.console import Console, fail, init_ray, load_config, session

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML preset (configs/).")]
TagOpt = Annotated[str | None, typer.Option(help="BentoML model tag, or 'champion'.")]
VerboseOpt = Annotated[bool, typer.Option(
    "--verbose", "-v", help="Show Ray's and the libraries' logs here, not only in the log file.")]


def _config(config: Path | None, model_tag: str | None) -> PlatformConfig:
    return load_config(config, **{"serving.model_tag": model_tag})


def start_serving(cfg: PlatformConfig, console: Console) -> tuple[str, str]:
    """Start Ray (if needed) and the app; returns (http url, grpc target)."""
    import bentoml

    from ray_apps.app import start
    from ray_apps.config import STAGES
    from ray_apps.models import ContractError
    from serving.auth import Authenticator, ensure_local_token

    args = cfg.app_args()
    s = cfg.serving
    created = ensure_local_token(s.auth)
    if created:
        console.echo(f"auth: created token 'local' (read, write) in {created}; clients send "
                     "'Authorization: Bearer <token>'")
    try:
        Authenticator(s.auth)  # the token file parses: fail here, not in a replica
    except (OSError, ValueError) as exc:
        fail(str(exc))
    init_ray(console.verbose)
    console.echo(f"serve: starting {s.model_tag} (HTTP :{s.http_port}, gRPC :{s.grpc_port})")
    began = time.perf_counter()
    try:
        start(args)
    except (ContractError, LookupError, bentoml.exceptions.NotFound) as exc:
        fail(str(exc))
    console.echo(f"serve: {len(STAGES)} deployments healthy in {time.perf_counter() - began:.0f}s")
    return f"http://127.0.0.1:{s.http_port}", f"127.0.0.1:{s.grpc_port}"


def wait_for_ctrl_c(log=typer.echo) -> None:
    from ray import serve

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log("serve: running; Ctrl-C stops it")
    stop.wait()
    log("serve: shutting down")
    serve.shutdown()


def serve_cmd(config: ConfigOpt = Path("configs/tiny.yaml"), model_tag: TagOpt = None,
              verbose: VerboseOpt = False) -> None:
    """Serve the recommendation pipeline over HTTP and gRPC until Ctrl-C."""
    cfg = _config(config, model_tag)
    with session("serve", verbose) as console:
        http, grpc_target = start_serving(cfg, console)
        console.echo(f"serve: POST {http}/recommend  (docs {http}/docs), gRPC {grpc_target} "
                     "irec.v1.Recommender")
        wait_for_ctrl_c(console.echo)


def serve_config_cmd(
    config: ConfigOpt = Path("configs/tiny.yaml"), model_tag: TagOpt = None,
    output: Annotated[Path | None, typer.Option("-o", help="Write here (default stdout).")] = None,
) -> None:
    """The Serve config YAML of the app (what `serve build` writes; the chart's serveConfigV2)."""
    from ray_apps.app import serve_config

    app_args = _config(config, model_tag).app_args()
    text = yaml.safe_dump(serve_config({"irec": app_args}), sort_keys=False)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text)
        typer.echo(f"serve-config: wrote {output}")


def parse_history(text: str) -> list[dict]:
    """``item:timestamp[:rating],...`` -> history events (oldest first)."""
    events = []
    for i, part in enumerate(p for p in text.split(",") if p.strip()):
        fields = part.strip().split(":")
        if len(fields) not in (2, 3) or not all(f.strip() for f in fields):
            raise ValueError(f"--history event {i} {part!r}: expected item:timestamp[:rating]")
        try:
            event = {"item_id": int(fields[0]), "timestamp": int(fields[1])}
            if len(fields) == 3:
                event["rating"] = float(fields[2])
        except ValueError as exc:
            raise ValueError(f"--history event {i} {part!r}: {exc}") from None
        events.append(event)
    return events


def print_answer(answer, log=typer.echo) -> None:
    flag = f"  COLD START ({answer.cold_start_reason})" if answer.cold_start else ""
    top = ", ".join(f"{g} {p:.2f}" for g, p in list(answer.intent.items())[:3])
    stages = ", ".join(f"{k} {v:.1f}" for k, v in answer.latency_ms.items() if k != "total")
    took = f"{answer.latency_ms.get('total', 0.0):.1f} ms ({stages})"
    log(f"intent: {top or '-'}  (model {answer.model}, {took}){flag}")
    log(f"{'#':>2}  {'item':>5}  {'score':>7}  {'title':<42} because of")
    for rank, item in enumerate(answer.items, start=1):
        because = "; ".join(item.explanation.because_of_titles) or "-"
        log(f"{rank:>2}  {item.item_id:>5}  {item.score:>7.3f}  {item.title[:42]:<42} {because}")


def recommend_cmd(
    user: Annotated[int | None, typer.Option(help="Known user id.")] = None,
    history: Annotated[str | None, typer.Option(
        help="Anonymous history: item:timestamp[:rating],... oldest first.")] = None,
    query: Annotated[str, typer.Option(help="Free text that steers intent.")] = "",
    n: Annotated[int, typer.Option(help="Number of results.")] = 10,
    exclude: Annotated[list[int], typer.Option(help="Item ids never to return.")] = (),
    url: Annotated[str, typer.Option(help="HTTP endpoint.")] = "http://127.0.0.1:8000",
    grpc_target: Annotated[str | None, typer.Option(
        "--grpc", help="Use gRPC at this host:port instead of HTTP.")] = None,
    token: Annotated[str | None, typer.Option(
        envvar="IREC_API_TOKEN", show_default=False,
        help="Bearer token (default: a read token of the local token file).")] = None,
) -> None:
    """Ask the running app for recommendations and print a table."""
    from pydantic import ValidationError

    from ray_apps.client import APIError, GRPCClient, HTTPClient
    from ray_apps.schemas import RecommendRequest, describe
    from serving.auth import AuthConfig, client_token

    try:
        request = RecommendRequest(user_id=user, query=query, n=n, exclude=list(exclude),
                                   history=parse_history(history) if history else None)
    except ValidationError as exc:
        fail(describe(exc))
    except ValueError as exc:
        fail(str(exc))
    token = token or client_token(AuthConfig())
    client = (GRPCClient(grpc_target, token=token) if grpc_target
              else HTTPClient(url, token=token))
    try:
        print_answer(client.recommend(request))
    except APIError as exc:
        fail(f"server refused the request ({exc.status}): {exc.message}")
    except OSError as exc:
        fail(f"cannot reach {grpc_target or url}: {exc}")


def token_create_cmd(
    name: Annotated[str, typer.Argument(help="Who holds the token (letters, digits, ._-).")],
    scopes: Annotated[list[str], typer.Option(
        "--scope", help="read (recommendations) and/or write (events); repeatable.")] = ("read",),
    config: ConfigOpt = Path("configs/tiny.yaml"),
) -> None:
    """Create (or replace) a bearer token in the serving token file and print it once."""
    from pydantic import ValidationError

    from serving.auth import create_token

    auth = _config(config, None).serving.auth
    try:
        secret = create_token(auth, name, sorted(set(scopes)))
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"token {name!r}: {'.'.join(map(str, first['loc']))}: {first['msg']}")
    except ValueError as exc:  # the existing token file does not parse
        fail(str(exc))
    typer.echo(f"token {name!r} ({', '.join(sorted(set(scopes)))}) in "
               f"{Path(auth.tokens_file).expanduser()}; send it as 'Authorization: Bearer "
               f"<token>':\n{secret}")


def register(app: typer.Typer) -> None:
    tokens = typer.Typer(help="API bearer tokens.", no_args_is_help=True)
    tokens.command("create")(token_create_cmd)
    app.add_typer(tokens, name="token")
    app.command("serve")(serve_cmd)
    app.command("serve-config")(serve_config_cmd)
    app.command("recommend")(recommend_cmd)
