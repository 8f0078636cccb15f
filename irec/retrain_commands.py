"""``irec retrain run``: retrain on what happened, judge fairly, and optionally roll it out.

    irec retrain run --config configs/tiny.yaml [--cutoff 1998-04-01T00:00Z] [--rollout]

1. ingest: folds the items added at run time (``data/catalogue_log``) into the items table
   with the ids they were given (nothing to do when no item was added);
2. features build: the tables now include the logged events (``data/event_log``);
3. feast apply; the online store is not re-materialized: it is live already;
4. ``irec.pipeline.retrain``: train on the events before the held-out window, score the new
   model and the champion on it, promote on that comparison;
5. ``--rollout``: when the new model was promoted, roll the local Serve app to it
   (``irec rollout --local``: verified first, put back on failure).

On Kubernetes the retraining RayJob/RayCronJob runs ``python -m irec.pipeline --retrain`` (the
same steps; with ``retraining.rollout.enabled`` it then rolls the RayService out).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from data.schema import IngestError
from irec.console import fail, load_config, session
from irec.serve_commands import ConfigOpt, VerboseOpt


def retrain_run(
    config: ConfigOpt = Path("configs/tiny.yaml"),
    cutoff: Annotated[datetime | None, typer.Option(
        help="Ignore events from this time on (UTC; default: use them all).")] = None,
    window_days: Annotated[float | None, typer.Option(
        help="Days before the cutoff held out to judge the new model and the champion.")] = None,
    margin: Annotated[float, typer.Option(
        help="Window NDCG@10 gain over the champion needed to promote.")] = 0.0,
    epochs: Annotated[int | None, typer.Option()] = None,
    rollout: Annotated[bool, typer.Option(
        "--rollout", help="Roll the local Serve app to the new model if promoted.")] = False,
    app: Annotated[str, typer.Option(help="Serve application to roll out.")] = "irec",
    verbose: VerboseOpt = False,
) -> None:
    """Retrain on the dataset plus the logged events; promote only if the new model beats the
    champion on the same held-out recent window."""
    from irec.pipeline import refresh_features, retrain

    cfg = load_config(config, **{"training.window_days": window_days,
                                 "training.epochs": epochs})
    at = None if cutoff is None else _utc(pd.Timestamp(cutoff))
    with session("retrain", verbose) as console:
        try:
            refresh_features(cfg, console.echo)
            report = retrain(cfg, log=console.echo, margin=margin, verbose=verbose, cutoff=at)
        except (IngestError, ValueError, FileNotFoundError) as exc:
            fail(str(exc))
        if rollout and report["champion"]:
            _roll(report["model"], app, console.echo)
        elif rollout:
            console.echo("rollout: not promoted, the app keeps its version")


def _utc(at: pd.Timestamp) -> pd.Timestamp:
    return at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")


def _roll(tag: str, app: str, echo) -> None:
    from ray_apps import rollout as local

    echo(f"rollout: {app} -> {tag}")
    try:
        rolled = local.rollout(tag, app)
    except (local.RolloutRefused, local.RolloutFailed) as exc:
        fail(f"rollout: {exc}")
    echo(f"rollout: {app} runs {rolled.current} (was {rolled.previous}; {rolled.seconds:.0f}s)")
