"""The training pipeline: train -> evaluate -> baselines -> package -> promote -> report.

Usage::

    python -m irec.pipeline --config configs/tiny.yaml            # embedded Ray, this machine
    ray job submit --working-dir . -- python -m irec.pipeline --config configs/ml-100k.yaml
    irec train --config configs/tiny.yaml                         # the same, from the CLI
    python -m irec.pipeline --config configs/tiny.yaml --retrain  # retraining (``retrain``)

Retraining holds the newest ``training.window_days`` before a cutoff out of training, scores
the new model and the champion on that window in the same run (next event, full ranking), and
promotes only on that comparison (a fair gate: the stored scores of two runs were measured on
different data).

This is the retraining RayJob's entrypoint on Kubernetes. Each step is one function over the
platform config's sections; ``run`` composes them. Training and its evaluation come from the
training layer (``training.train``, ``training.eval``, ``training.baselines``), packaging and
promotion from the packaging layer (``serving.package``); this module sits above both.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bentoml
import pandas as pd

from data.ingest import ingest, read_manifest
from features.build import build
from features.store import apply, open_store, schema_hash
from irec.config import PlatformConfig
from irec.console import init_ray
from serving import package
from training import report as reports
from training.baselines.mf import evaluate_biased_mf, evaluate_bpr
from training.baselines.popularity import evaluate_popularity
from training.data.sequences import SequenceData
from training.data.window import Window, bounds, build_window
from training.eval.evaluate import cold_targets, evaluate_model
from training.eval.window import evaluate_window, popularity_on_window
from training.models.interest import InterestTransformer
from training.train import (
    best_checkpoint,
    epoch_history,
    fit,
    load_checkpoint,
    model_config,
    new_run_id,
    prepare_data,
    run_dir,
    training_events,
)

Log = Callable[[str], None]
FEATURE_SERVICES = ("retrieval_v1", "ranking_v1")
WINDOW_SCORE = "window_ndcg@10"


@dataclass
class Trained:
    """The outcome of the train step: the best checkpoint's model and every epoch's metrics."""

    model: InterestTransformer
    validation: dict[str, float]  # the best epoch's reported metrics
    epochs: list[dict]  # the metrics of every epoch


def train(cfg: PlatformConfig, data: SequenceData, run_id: str, log: Log) -> Trained:
    """Fine-tune with Ray Train in run ``run_id``; the best checkpoint by validation NDCG@10."""
    mcfg = model_config(cfg.training, cfg.features, data, cfg.ingest.rating_max, log)
    result = fit(cfg.training, mcfg, data, log, run_id)
    best = best_checkpoint(result)
    with best.as_directory() as directory:
        validation = json.loads((Path(directory) / "metrics.json").read_text())
    return Trained(model=load_checkpoint(best, data), validation=validation,
                   epochs=epoch_history(result))


def evaluate(trained: Trained, data: SequenceData) -> dict[str, float]:
    """The model's test metrics (leave-one-out, full ranking)."""
    return evaluate_model(trained.model, data, "test")


def baselines(cfg: PlatformConfig, data: SequenceData, run_id: str,
              log: Log) -> dict[str, dict[str, float]]:
    """Test metrics of the same-run peers: popularity, BPR-MF, biased MF and the ablations."""
    seed = cfg.training.seed
    table = {"popularity": evaluate_popularity(data, "test"),
             "BPR-MF": evaluate_bpr(data, seed=seed)}
    if data.has_ratings:
        table["biased MF"] = evaluate_biased_mf(data, seed=seed)
    for ablation in cfg.training.ablations:
        log(f"train: ablation {ablation}")
        variant = _ablation(cfg, ablation)
        table[f"transformer ({ablation.replace('_', ' ')})"] = evaluate(
            train(variant, data, run_id, log), data)
    return table


def _ablation(cfg: PlatformConfig, name: str) -> PlatformConfig:
    t = cfg.training
    change = {"ids_only": {"lm_mode": "none"}, "no_time": {"use_time": False}}[name]
    return cfg.model_copy(update={"training": t.model_copy(update={
        "model": t.model.model_copy(update=change), "run_name": f"{t.run_name}-{name}",
        "ablations": []})})


def package_model(cfg: PlatformConfig, trained: Trained, data: SequenceData,
                  test: dict[str, float], log: Log, trained_until: pd.Timestamp,
                  window: dict[str, float] | None = None) -> str:
    """Save the model (frozen LM mode) with its contract in the BentoML store; its tag."""
    features = cfg.features
    store = open_store(features)
    items = pd.read_parquet(features.data_dir / "items.parquet")
    return package.save(
        trained.model.export_frozen(), items,
        metrics={**trained.validation, **{f"test_{k}": v for k, v in test.items()},
                 **{f"window_{k}": v for k, v in (window or {}).items()}},
        dataset_fingerprint=read_manifest(features.data_dir)["fingerprint"],
        feature_services={s: schema_hash(store, s) for s in FEATURE_SERVICES},
        genre_names=data.genre_names, trained_until=trained_until.isoformat(), log=log)


def promote(tag: str, margin: float, log: Log,
            judged: package.Judged | None = None) -> package.Verdict:
    """Make ``tag`` the champion if it beats the current one by ``margin``."""
    verdict = package.promote(tag, margin, judged=judged)
    log(f"promote: {verdict.message}")
    return verdict


def write_report(cfg: PlatformConfig, summary: dict, trained: Trained, run_id: str,
                 log: Log) -> Path:
    """report.json, report.md and curves.png in the run folder; prints the table."""
    out = Path(run_dir(cfg.training, run_id))
    reports.write(out, summary, trained.epochs)
    log(reports.markdown_table(summary["test"]).rstrip())
    return out


def run(cfg: PlatformConfig, log: Log = print, margin: float = 0.0,
        verbose: bool = False) -> dict:
    """The whole pipeline; returns the report (model tag, champion verdict, tables).

    ``verbose``: Ray forwards its workers' own output here (see ``irec.console.init_ray``).
    """
    init_ray(verbose)
    started = time.perf_counter()
    run_id = cfg.training.resume or new_run_id()
    folder = run_dir(cfg.training, run_id)
    if cfg.training.resume and "://" not in folder and not Path(folder).is_dir():
        raise FileNotFoundError(f"no run {run_id} in {folder.rsplit('/', 1)[0]}: nothing to "
                                "resume (run ids are the folder names there)")
    verb = "resuming" if cfg.training.resume else "run"
    log(f"train: {verb} {run_id} in {folder}")
    events = training_events(cfg.features, log)
    data = prepare_data(cfg.features, cfg.training, log, events=events)
    trained = train(cfg, data, run_id, log)
    test = evaluate(trained, data)
    table = {"interest transformer": test, **baselines(cfg, data, run_id, log)}
    tag = package_model(cfg, trained, data, test, log, events.event_timestamp.max())
    verdict = promote(tag, margin, log)
    summary = {"model": tag, "run": run_id, "champion": verdict.promoted, "test": table,
               "test_targets": len(data.test.users),
               "cold_targets": int(cold_targets(data, data.test).sum()),
               "validation": trained.validation,
               "seconds": round(time.perf_counter() - started, 1)}
    out = write_report(cfg, summary, trained, run_id, log)
    log(f"train: done in {summary['seconds']}s; report in {out}")
    return summary


def score_champion(cfg: PlatformConfig, window: Window,
                   log: Log) -> tuple[str | None, dict[str, float] | None, str]:
    """The champion's metrics on ``window``: (tag, metrics, note). Metrics are None when there
    is no champion, or it cannot be scored here (the note says why)."""
    current = package.champion()
    if current is None:
        return None, None, "no champion yet"
    try:
        champ = package.load(current)
    except (package.IntegrityError, bentoml.exceptions.NotFound) as exc:
        return current, None, f"the champion cannot be loaded ({exc})"
    items = pd.read_parquet(cfg.features.data_dir / "items.parquet")
    wrong = package.disagreeing_ids(champ.items, items)
    if len(wrong):
        return current, None, (f"the champion's id map disagrees with this data on {len(wrong)} "
                               "items; compared on the stored validation scores instead")
    log(f"window: scoring the champion {current} on the same window")
    note = "scored on the same window"
    until = champ.metadata.get("trained_until")
    if until is None or pd.Timestamp(until) >= window.start:
        note += (f"; it trained on events up to {until or 'an unrecorded time'}, so it may have "
                 "seen the window: its score there is optimistic")
    return current, evaluate_window(champ.model, window), note


def refresh_features(cfg: PlatformConfig, log: Log) -> None:
    """Before retraining: ingest (folds in the items added at run time, ids kept), rebuild the
    features with the logged events, feast apply. The online store is live: no materialize."""
    ingest(cfg.ingest, cfg.features.data_dir, log=log)
    build(cfg.features, log=log)
    apply(open_store(cfg.features), log=log)


def roll_out_service(cfg: PlatformConfig, tag: str, service: str, namespace: str,
                     timeout_s: float, log: Log) -> None:
    """From inside the cluster (the retraining RayJob): verify ``tag`` against the feature
    store the serving pods read, then patch the RayService to it (put back on failure)."""
    from irec.k8s.cluster import connect, rollout
    from ray_apps.app import preflight

    target = preflight(cfg.app_args().model_copy(update={"serving": cfg.serving.model_copy(
        update={"model_tag": tag})}))
    log(f"rollout: RayService/{service} in {namespace} -> {target}")
    rollout(connect(), service, namespace, target, app="irec",
            timeout_s=timeout_s, poll_s=5, log=log)
    log(f"rollout: RayService/{service} runs {target}")


def retrain(cfg: PlatformConfig, log: Log = print, margin: float = 0.0, verbose: bool = False,
            cutoff: pd.Timestamp | None = None) -> dict:
    """Retraining with a fair gate (see the module docstring); returns the report.

    ``cutoff``: events from then on are ignored (default: all); the window is the
    ``training.window_days`` before it.
    """
    init_ray(verbose)
    started = time.perf_counter()
    run_id = new_run_id()
    log(f"retrain: run {run_id} in {run_dir(cfg.training, run_id)}")
    events = training_events(cfg.features, log)
    start, end = bounds(events, cfg.training.window_days, cutoff)
    before = events[events.event_timestamp < start]
    data = prepare_data(cfg.features, cfg.training, log, events=before)
    window = build_window(open_store(cfg.features), events, start, end,
                          cfg.features.history_length, data.num_items, log)
    trained = train(cfg, data, run_id, log)
    test = evaluate(trained, data)
    table = {"interest transformer": test, **baselines(cfg, data, run_id, log)}
    mine = evaluate_window(trained.model, window)
    champion_tag, champion_scores, note = score_champion(cfg, window, log)
    tag = package_model(cfg, trained, data, test, log, before.event_timestamp.max(),
                        window=mine)
    judged = None
    if champion_scores is not None or champion_tag is None:
        judged = package.Judged(WINDOW_SCORE, mine["ndcg@10"], champion_tag,
                                None if champion_scores is None else champion_scores["ndcg@10"])
    verdict = promote(tag, margin, log, judged)
    on_window = {"interest transformer (new)": mine,
                 **({f"champion {champion_tag}": champion_scores} if champion_scores else {}),
                 "popularity": popularity_on_window(before, window)}
    summary = {"model": tag, "run": run_id, "champion": verdict.promoted, "test": table,
               "test_targets": len(data.test.users),
               "cold_targets": int(cold_targets(data, data.test).sum()),
               "validation": trained.validation,
               "window": {"start": str(start), "end": str(end), "targets": len(window),
                          "cold_left_out": window.cold, "table": on_window},
               "gate": {"promoted": verdict.promoted, "message": verdict.message,
                        "margin": margin, "champion": champion_tag, "champion_scored": note},
               "seconds": round(time.perf_counter() - started, 1)}
    out = write_report(cfg, summary, trained, run_id, log)
    log(f"window {start:%Y-%m-%d} .. {end:%Y-%m-%d}, {len(window):,} next events:")
    log(reports.markdown_table(on_window).rstrip())
    log(f"gate: {verdict.message}")
    log(f"retrain: done in {summary['seconds']}s; report in {out}")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--margin", type=float, default=0.0,
                        help="NDCG@10 gain needed to replace the champion")
    parser.add_argument("--retrain", action="store_true",
                        help="ingest and build the features with the logged events first, hold "
                             "out the newest training.window_days and judge the new model and "
                             "the champion there")
    parser.add_argument("--cutoff", type=pd.Timestamp, default=None,
                        help="with --retrain: ignore events from this UTC time on")
    parser.add_argument("--rollout-service", default=None, metavar="RAYSERVICE",
                        help="with --retrain, in the cluster: roll this RayService out to the "
                             "new model when it is promoted")
    parser.add_argument("--namespace", default="default", help="of --rollout-service")
    parser.add_argument("--rollout-timeout", type=float, default=900.0,
                        help="seconds the RayService may take to run the new model")
    parser.add_argument("--verbose", action="store_true",
                        help="forward the Ray workers' own output to this log")
    args = parser.parse_args(argv)
    cfg = PlatformConfig.load(args.config)
    if not args.retrain:
        run(cfg, margin=args.margin, verbose=args.verbose)
        return
    refresh_features(cfg, print)
    report = retrain(cfg, margin=args.margin, verbose=args.verbose, cutoff=args.cutoff)
    if args.rollout_service and report["champion"]:
        roll_out_service(cfg, report["model"], args.rollout_service, args.namespace,
                         args.rollout_timeout, print)


if __name__ == "__main__":
    main()
