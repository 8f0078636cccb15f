"""``irec events post --file events.csv`` and ``irec items add --file items.csv``: the live
writes, sent to the running app.

An events file (CSV, or parquet) has columns ``event_id, user_id, item_id`` and optionally
``timestamp`` (epoch seconds; empty: when received), ``rating``, ``kind``, ``request_id``.
An items file has ``raw_item_id, title`` and optionally ``genres`` (``|``-separated), ``year``,
``text``. Rows go in batches (at most the API's limit); a batch refused for bad input stops
the run and names the row; a batch the server could not take (503, a timeout, a lost
connection) is sent again, which the ids make safe: the server applies each event id once and
gives a raw item id one item id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from irec.console import fail
from irec.serve_commands import ConfigOpt, _config

RETRYABLE = {503, 408, 502, 504, "UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}


def read_rows(path: Path, model, required: set[str], text_columns: dict[str, type],
              prepare: Callable[[dict], dict] = dict) -> list:
    """The rows of ``path`` (CSV or parquet) as ``model`` instances, in file order; a clear
    error naming the row (its CSV line) and the field."""
    import pandas as pd
    from pydantic import ValidationError

    from ray_apps.schemas import describe

    frame = (pd.read_parquet(path) if path.suffix == ".parquet"
             else pd.read_csv(path, dtype=text_columns))
    missing = required - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; has {list(frame.columns)}")
    rows = []
    for row, record in enumerate(frame.to_dict("records")):
        raw = {k: v for k, v in record.items() if not (v is None or v != v or v == "")}
        try:
            rows.append(model.model_validate(prepare(raw)))
        except ValidationError as exc:
            raise ValueError(f"{path} row {row + 2}: {describe(exc)}") from None
    return rows


def read_events(path: Path) -> list:
    from ray_apps.schemas import EventIn

    return read_rows(path, EventIn, {"event_id", "user_id", "item_id"},
                     {"event_id": str, "kind": str, "request_id": str})


def _item_record(raw: dict) -> dict:
    genres = raw.get("genres")
    if isinstance(genres, str):
        raw["genres"] = [g.strip() for g in genres.split("|") if g.strip()]
    elif genres is not None:
        raw["genres"] = list(genres)
    return raw


def read_items(path: Path) -> list:
    from ray_apps.schemas import ItemIn

    return read_rows(path, ItemIn, {"raw_item_id", "title"},
                     {"raw_item_id": str, "title": str, "genres": str, "text": str},
                     _item_record)


def send_batches(rows: list, batch_size: int, retries: int, send: Callable[[list], object],
                 what: str, target: str) -> list:
    """``send(batch)`` for each batch of ``rows``, retrying what may be retried, with progress
    lines; the answers. Fails (exit 1) on a refused batch, naming its rows."""
    from ray_apps.client import APIError

    answers = []
    began = last = time.perf_counter()
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        for attempt in range(retries + 1):
            try:
                answers.append(send(batch))
                break
            except APIError as exc:
                if exc.status not in RETRYABLE or attempt == retries:
                    fail(f"{what} {start + 1}..{start + len(batch)} refused ({exc.status}): "
                         f"{exc.message}; {start:,} sent before")
            except OSError as exc:
                if attempt == retries:
                    fail(f"cannot reach {target}: {exc}")
            time.sleep(min(0.2 * 2 ** attempt, 5.0))
        now = time.perf_counter()
        done = start + len(batch)
        if now - last > 5 and done < len(rows):
            rate = done / (now - began)
            typer.echo(f"{what}: {done:,}/{len(rows):,} sent ({rate:,.0f}/s, ETA "
                       f"{(len(rows) - done) / rate:.0f}s)")
            last = now
    return answers


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
    from ray_apps.client import GRPCClient, HTTPClient
    from ray_apps.schemas import EventsRequest
    from serving.auth import client_token

    try:
        events = read_events(file)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    token = token or client_token(_config(config, None).serving.auth, "write")
    client = (GRPCClient(grpc_target, token=token) if grpc_target
              else HTTPClient(url, token=token))
    began = time.perf_counter()
    answers = send_batches(events, batch_size, retries,
                           lambda batch: client.log_events(EventsRequest(events=batch)),
                           "events", grpc_target or url)
    accepted = sum(len(a.accepted) for a in answers)
    duplicates = sum(len(a.duplicates) for a in answers)
    typer.echo(f"events: {len(events):,} sent in {time.perf_counter() - began:.1f}s: "
               f"{accepted:,} accepted, {duplicates:,} already applied before")


def add_cmd(
    file: Annotated[Path, typer.Option("--file", "-f", exists=True, dir_okay=False,
                                       help="CSV or parquet of items.")],
    url: Annotated[str, typer.Option(help="HTTP endpoint.")] = "http://127.0.0.1:8000",
    grpc_target: Annotated[str | None, typer.Option(
        "--grpc", help="Use gRPC at this host:port instead of HTTP.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=100)] = 100,
    retries: Annotated[int, typer.Option(min=0, help="Tries again per batch on 503, "
                                                      "timeouts and lost connections.")] = 5,
    token: Annotated[str | None, typer.Option(
        envvar="IREC_API_TOKEN", show_default=False,
        help="Bearer token with the write scope (default: from the local token file).")] = None,
    config: ConfigOpt = Path("configs/tiny.yaml"),
) -> None:
    """Add catalogue items to the running app (served from their text at once); prints the
    id each got."""
    from ray_apps.client import GRPCClient, HTTPClient
    from ray_apps.schemas import ItemsRequest
    from serving.auth import client_token

    try:
        items = read_items(file)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    token = token or client_token(_config(config, None).serving.auth, "write")
    client = (GRPCClient(grpc_target, token=token) if grpc_target
              else HTTPClient(url, token=token))
    began = time.perf_counter()
    answers = send_batches(items, batch_size, retries,
                           lambda batch: client.add_items(ItemsRequest(items=batch)),
                           "items", grpc_target or url)
    added = [i for a in answers for i in a.items]
    for item in added:
        typer.echo(f"{item.raw_item_id}\t{item.item_id}\t{'new' if item.new else 'known'}")
    fresh = sum(i.new for i in added)
    typer.echo(f"items: {len(items):,} sent in {time.perf_counter() - began:.1f}s: "
               f"{fresh:,} new, {len(added) - fresh:,} known before")


def register(app: typer.Typer) -> None:
    events = typer.Typer(help="Live user events: send them to the running app.",
                         no_args_is_help=True)
    events.command("post")(post_cmd)
    app.add_typer(events, name="events")
    items = typer.Typer(help="The catalogue: add items to the running app.",
                        no_args_is_help=True)
    items.command("add")(add_cmd)
    app.add_typer(items, name="items")
