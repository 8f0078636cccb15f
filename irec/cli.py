"""``irec``: the platform's command line.

    irec run --config configs/tiny.yaml      # ingest -> features -> train -> serve -> recommend
    irec serve | serve-config | recommend --user 42 --query "space adventure"
    irec ingest --config configs/ml-100k.yaml
    irec features build|apply|materialize|training-set|online ...

Every command takes ``--config`` (a YAML preset from configs/) and options that override it.
Bad input ends with one ``error:`` line naming the file, line and field, and exit status 2.
"""

from __future__ import annotations

import json
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from data.schema import IngestError
from irec.config import PlatformConfig
from irec.console import Commands, fail, load_config, session
from irec.demo import run_cmd
from irec.event_commands import register as register_event_commands
from irec.k8s_commands import register as register_k8s_commands
from irec.serve_commands import VerboseOpt
from irec.serve_commands import register as register_serve_commands

app = typer.Typer(help="Train and serve transformer models of user interest.", no_args_is_help=True,
                  cls=Commands)
features_app = typer.Typer(help="Feast feature store: build, apply, materialize, read.",
                           no_args_is_help=True)
app.add_typer(features_app, name="features")
app.command("run")(run_cmd)
register_serve_commands(app)
register_k8s_commands(app)
register_event_commands(app)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML preset (configs/).")]
RepoOpt = Annotated[Path | None, typer.Option(help="Feature-store workspace (data/ lives here).")]
OnlineOpt = Annotated[str | None, typer.Option(help="Online store profile: sqlite or redis.")]


@app.callback()
def _quiet_library_warnings() -> None:
    # ibis 12 inside Feast's DuckDB store warns about a deprecated duckdb call on every query.
    warnings.filterwarnings("ignore", message="fetch_arrow_table", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="On demand feature view is an experimental")


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        fail(f"{name} {value!r} is not an ISO-8601 time")
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).to_pydatetime()


def _store(cfg: PlatformConfig):
    from features.store import open_store

    return open_store(cfg.features)


@app.command()
def ingest(
    config: ConfigOpt = None,
    format: Annotated[str | None, typer.Option(help="movielens-100k, sasrec or generic.")] = None,
    path: Annotated[Path | None, typer.Option(help="Dataset folder or interactions file.")] = None,
    items: Annotated[Path | None, typer.Option(help="generic: items file.")] = None,
    users: Annotated[Path | None, typer.Option(help="generic: users file.")] = None,
    repo_path: RepoOpt = None,
) -> None:
    """Validate a dataset and write canonical parquet tables with a fingerprint."""
    from data.ingest import ingest as run_ingest

    cfg = load_config(config, **{"ingest.format": format, "ingest.path": path,
                           "ingest.items_path": items, "ingest.users_path": users,
                           "features.repo_path": repo_path})
    try:
        run_ingest(cfg.ingest, cfg.features.data_dir, log=typer.echo)
    except IngestError as exc:
        fail(str(exc))


@features_app.command("build")
def features_build(
    config: ConfigOpt = None, repo_path: RepoOpt = None,
    history_length: Annotated[int | None, typer.Option(help="N of the history lists.")] = None,
) -> None:
    """Compute the Feast source tables (history, stats, item text embeddings)."""
    from features.build import build

    cfg = load_config(config, **{"features.repo_path": repo_path,
                           "features.history_length": history_length})
    try:
        build(cfg.features, log=typer.echo)
    except FileNotFoundError as exc:
        fail(str(exc))


@features_app.command("apply")
def features_apply(config: ConfigOpt = None, repo_path: RepoOpt = None,
                   online_store: OnlineOpt = None) -> None:
    """Register entities, feature views and feature services; create online tables."""
    from features.store import apply

    cfg = load_config(config, **{"features.repo_path": repo_path,
                           "features.online_store": online_store})
    apply(_store(cfg), log=typer.echo)


@features_app.command("materialize")
def features_materialize(
    config: ConfigOpt = None, repo_path: RepoOpt = None, online_store: OnlineOpt = None,
    incremental: Annotated[bool, typer.Option(help="From each view's last end.")] = False,
    start: Annotated[str | None, typer.Option(help="ISO-8601 start (full mode).")] = None,
    end: Annotated[str | None, typer.Option(help="ISO-8601 end (default: now).")] = None,
) -> None:
    """Load offline feature rows into the online store (SQLite or Redis)."""
    from features.store import materialize

    cfg = load_config(config, **{"features.repo_path": repo_path,
                           "features.online_store": online_store})
    if incremental and start is not None:
        fail("--start and --incremental exclude each other: incremental starts at each "
              "view's last materialized end")
    materialize(_store(cfg), start=_parse_time(start, "--start"),
                end=_parse_time(end, "--end"), incremental=incremental, log=typer.echo)


@features_app.command("training-set")
def features_training_set(
    entities: Annotated[Path, typer.Option(help="CSV/parquet: keys + event_timestamp.")],
    out: Annotated[Path, typer.Option(help="Output parquet file.")],
    service: Annotated[str, typer.Option(help="Feature service.")] = "ranking_v1",
    config: ConfigOpt = None, repo_path: RepoOpt = None,
) -> None:
    """Point-in-time-correct training set for an entity frame."""
    from features.store import training_set

    cfg = load_config(config, **{"features.repo_path": repo_path})
    if not entities.exists():
        fail(f"{entities}: file not found")
    frame = pd.read_parquet(entities) if entities.suffix == ".parquet" else pd.read_csv(entities)
    started = time.perf_counter()
    try:
        result = training_set(_store(cfg), frame, service)
    except ValueError as exc:
        fail(f"{entities}: {exc}")
    result.to_parquet(out, index=False)
    typer.echo(f"training set: {len(result):,} rows x {result.shape[1]} columns from "
               f"{service} in {time.perf_counter() - started:.1f}s -> {out}")


@features_app.command("online")
def features_online(
    user: Annotated[list[int], typer.Option(help="User id (repeat for several).")],
    service: Annotated[str, typer.Option(help="Feature service.")] = "retrieval_v1",
    request_ts: Annotated[int | None, typer.Option(help="Epoch seconds (default now).")] = None,
    config: ConfigOpt = None, repo_path: RepoOpt = None, online_store: OnlineOpt = None,
) -> None:
    """Read online features for users and print them as JSON lines."""
    from features.store import online_features

    cfg = load_config(config, **{"features.repo_path": repo_path,
                           "features.online_store": online_store})
    result = online_features(_store(cfg), [{"user_id": u} for u in user], service, request_ts)
    for i in range(len(user)):
        typer.echo(json.dumps({k: v[i] for k, v in result.items()}, default=str))


@app.command()
def train(
    config: ConfigOpt = Path("configs/tiny.yaml"), repo_path: RepoOpt = None,
    storage_path: Annotated[str | None, typer.Option(help="Checkpoints and reports.")] = None,
    num_workers: Annotated[int | None, typer.Option(help="Ray Train workers.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    margin: Annotated[float, typer.Option(help="NDCG@10 gain to replace the champion.")] = 0.0,
    resume: Annotated[str | None, typer.Option(
        help="Continue this run (its id) from its latest checkpoint instead of a new run.")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Fine-tune the interest model with Ray Train, evaluate, package in BentoML, promote."""
    from irec.pipeline import run as run_training

    cfg = load_config(config, **{"features.repo_path": repo_path,
                           "training.storage_path": storage_path,
                           "training.num_workers": num_workers, "training.epochs": epochs,
                           "training.resume": resume})
    with session("train", verbose) as console:
        try:
            run_training(cfg, log=console.echo, margin=margin, verbose=verbose)
        except FileNotFoundError as exc:
            fail(str(exc))


@app.command()
def tune(
    config: ConfigOpt = Path("configs/tiny.yaml"), repo_path: RepoOpt = None,
    trials: Annotated[int | None, typer.Option(help="Trials to run (training.tune.trials).")]
    = None,
    time_budget: Annotated[float | None, typer.Option(
        help="Seconds after which no trial starts (training.tune.time_budget_s).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Most epochs per trial.")] = None,
    storage_path: Annotated[str | None, typer.Option(help="Searches and their trials.")] = None,
    resume: Annotated[str | None, typer.Option(
        help="Continue this search (its id) instead of a new one.")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Search training.tune.space with Ray Tune (ASHA on validation NDCG@10); write the best
    settings as a preset, with a trials table and plot."""
    from irec.tuning import run as run_search

    cfg = load_config(config, **{"features.repo_path": repo_path,
                                 "training.storage_path": storage_path,
                                 "training.epochs": epochs, "training.tune.trials": trials,
                                 "training.tune.time_budget_s": time_budget})
    with session("tune", verbose) as console:
        try:
            run_search(config, cfg, log=console.echo, resume=resume, verbose=verbose)
        except FileNotFoundError as exc:
            fail(str(exc))


@app.command()
def promote(
    tag: Annotated[str, typer.Argument(help="Model tag, e.g. interest:abc123.")],
    margin: Annotated[float, typer.Option(help="NDCG@10 gain needed over the champion.")] = 0.0,
    force: Annotated[bool, typer.Option(
        "--force", help="Promote even if it does not beat the champion (a valid score is "
                        "still required).")] = False,
) -> None:
    """Make a stored model the champion if it beats the current one (--force: regardless,
    with a warning); exit 1 if refused. A score that is not a number never promotes."""
    import bentoml

    from serving import package

    try:
        verdict = package.promote(tag, margin, force=force)
    except (bentoml.exceptions.NotFound, package.IntegrityError) as exc:
        fail(str(exc))
    if verdict.warning:
        typer.secho(f"warning: {verdict.warning}", fg="yellow")
    typer.echo(verdict.message)
    if verdict.beaten:
        typer.echo(f"(`irec promote --force {tag}` promotes it regardless of the comparison)")
    if not verdict.promoted:
        raise typer.Exit(1)
