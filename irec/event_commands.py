"""``irec events post --file events.csv``: send user events to the running app.

The file (CSV, or parquet) has columns ``event_id, user_id, item_id`` and optionally
``timestamp`` (epoch seconds; empty: when received), ``rating``, ``kind``, ``request_id``.
Rows go in batches (at most 500, the API's limit); a batch refused for bad input stops the
run and names the row; a batch the server could not take (503, a timeout, a lost connection)
is sent again, which the event ids make safe: the server applies each id once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from irec.console import fail
from irec.serve_commands import ConfigOpt, _config

RETRYABLE = {503, 408, 502, 504, "UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}


def read_events(path: Path):
    """The events of ``path`` as API models, in file order; a clear error naming the row."""
    import pandas as pd
    from pydantic import ValidationError

    from ray_apps.schemas import EventIn, describe

    frame = (pd.read_parquet(path) if path.suffix == ".parquet"
             else pd.read_csv(path, dtype={"event_id": str, "kind": str, "request_id": str}))
    missing = {"event_id", "user_id", "item_id"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; has {list(frame.columns)}")
    events = []
    for row, record in enumerate(frame.to_dict("records")):
        raw = {k: v for k, v in record.items() if not (v is None or v != v or v == "")}
        try:
            events.append(EventIn.model_validate(raw))
        except ValidationError as exc:
            raise ValueError(f"{path} row {row + 2}: {describe(exc)}") from None
    return events


def post_cmd(
    file: Annotated[Path, typer.Option("--file", "-f", exists=True, dir_okay=False,
                                       help="CSV or parquet of events.")],
    url: Annotated[str, typer.Option(help="HTTP endpoint.")] = "http://127.0.0.1:8000",
    grpc_target: Annotated[str | None, typer.Option(
        "--grpc", help="Use gRPC at this host:port instead of HTTP.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=500)] = 500,
    retries: Annotated[int, typer.Option(min=0, help="Tries again per batch on 503, "
                                                      "timeouts and lost connections.")] = 5,
    token: Annotated[str | None, typer.Option(
        envvar="IREC_API_TOKEN", show_default=False,
        help="Bearer token with the write scope (default: from the local token file).")] = None,
    config: ConfigOpt = Path("configs/tiny.yaml"),
) -> None:
    """Send events to the running app in batches; prints progress and a summary."""
    from ray_apps.client import APIError, GRPCClient, HTTPClient
    from ray_apps.schemas import EventsRequest
    from serving.auth import client_token

    try:
        events = read_events(file)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    token = token or client_token(_config(config, None).serving.auth, "write")
    client = (GRPCClient(grpc_target, token=token) if grpc_target
              else HTTPClient(url, token=token))
    accepted = duplicates = 0
    began = last = time.perf_counter()
    for start in range(0, len(events), batch_size):
        batch = EventsRequest(events=events[start:start + batch_size])
        for attempt in range(retries + 1):
            try:
                answer = client.log_events(batch)
                break
            except APIError as exc:
                if exc.status not in RETRYABLE or attempt == retries:
                    fail(f"events {start + 1}..{start + len(batch.events)} refused "
                         f"({exc.status}): {exc.message}; {accepted:,} accepted before")
            except OSError as exc:
                if attempt == retries:
                    fail(f"cannot reach {grpc_target or url}: {exc}")
            time.sleep(min(0.2 * 2 ** attempt, 5.0))
        accepted += len(answer.accepted)
        duplicates += len(answer.duplicates)
        now = time.perf_counter()
        done = start + len(batch.events)
        if now - last > 5 and done < len(events):
            rate = done / (now - began)
            typer.echo(f"events: {done:,}/{len(events):,} sent ({rate:,.0f}/s, ETA "
                       f"{(len(events) - done) / rate:.0f}s)")
            last = now
    seconds = time.perf_counter() - began
    typer.echo(f"events: {len(events):,} sent in {seconds:.1f}s: {accepted:,} accepted, "
               f"{duplicates:,} already applied before")


def register(app: typer.Typer) -> None:
    events = typer.Typer(help="Live user events: send them to the running app.",
                         no_args_is_help=True)
    events.command("post")(post_cmd)
    app.add_typer(events, name="events")
