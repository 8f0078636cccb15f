"""Fine-tune the interest transformer with Ray Train (CPU or GPU workers, DDP).

This is the training step of the pipeline (``irec.pipeline``: train -> evaluate -> package ->
promote -> report), which is what ``irec train`` and the retraining RayJob run::

    python -m irec.pipeline --config configs/tiny.yaml            # embedded Ray, this machine
    ray job submit --working-dir . -- python -m irec.pipeline --config configs/ml-100k.yaml

The driver builds point-in-time-correct sequences from the Feast offline store, then a
``TorchTrainer`` runs ``train_func`` on ``training.num_workers`` workers. Every epoch reports
validation metrics and a checkpoint (model, optimizer, epoch, early-stopping state, config);
after a worker failure Ray restarts the group (``training.max_failures`` times) and training
resumes from the latest checkpoint. Each epoch's randomness is seeded from (seed, epoch), so a
resumed run reproduces the uninterrupted one exactly on CPU.

In the ``finetune`` and ``lora`` LM modes the LM's trained layers (or LoRA adapters) train at
``training.lm_lr``, are part of every checkpoint, and the workers load the LM from the path
in the model config (None: the packaged all-MiniLM-L6-v2). The packaged model is the tuned
one exported to ``frozen`` mode, so serving never loads the LM.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import ray.train
import ray.train.torch
import torch
from pydantic import BaseModel, ConfigDict
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.queue import Empty, Queue

from data.event_log import dataset_events, logged_events
from data.ingest import read_manifest
from features.config import FeatureConfig
from features.store import open_store
from training.config import TrainingConfig
from training.data import sequences
from training.data.sequences import SequenceData
from training.eval.evaluate import evaluate_model
from training.models.config import InterestModelConfig
from training.models.interest import InterestTransformer
from training.models.text_tower import describe

SCORE = "val_ndcg@10"
HISTORY = "history.json"  # in every checkpoint: the metrics of every epoch up to it


class WorkerJob(BaseModel):
    """What every Ray Train worker runs, validated again on the worker (``train_func``)."""

    model_config = ConfigDict(extra="forbid")

    training: TrainingConfig
    model: InterestModelConfig
    # Written by the first attempt of training.inject_failure_at_epoch (chaos tests).
    failure_marker: Path


def training_events(features: FeatureConfig, log: Callable[[str], None] = print) -> pd.DataFrame:
    """The ingested events plus the logged ones the last features build used, by user and
    time."""
    logged = logged_events(features.data_dir)
    if len(logged):
        log(f"data: {len(logged):,} logged live events included")
    return dataset_events(pd.read_parquet(features.data_dir / "events.parquet"), logged)


def prepare_data(features: FeatureConfig, training: TrainingConfig,
                 log: Callable[[str], None] = print,
                 events: pd.DataFrame | None = None) -> SequenceData:
    """Leave-one-out sequences from the Feast offline store (point-in-time correct), over
    ``events`` (default: ``training_events``; retraining passes those before its window),
    with the earlier training windows of ``training.window_stride``."""
    manifest = read_manifest(features.data_dir)
    events = training_events(features, log) if events is None else events
    items = pd.read_parquet(features.data_dir / "items.parquet")
    return sequences.build(open_store(features), events, manifest, features.history_length, log,
                           items=items, stride=training.window_stride)


def model_config(training: TrainingConfig, features: FeatureConfig, data: SequenceData,
                 rating_max: float, log: Callable[[str], None] = print) -> InterestModelConfig:
    """The preset's model resolved against ``data``: heads it cannot support switched off."""
    m = training.model
    mode = m.resolved_lm_mode(training.use_gpu)
    if m.lm_mode == "auto":
        log(f"model: lm_mode auto -> {mode} (training.use_gpu={training.use_gpu})")
    text_dim = 0
    if mode == "frozen":
        if data.text_embeddings is None:
            log("model: items carry no text embeddings; LM item tower off (ids only)")
            mode = "none"
        else:
            text_dim = data.text_embeddings.shape[1]
    elif mode in ("finetune", "lora"):
        if not data.item_texts or not any(data.item_texts):
            log(f"model: items carry no text; lm_mode {mode} off (ids only)")
            mode = "none"
        else:
            text_dim, depth = describe(features.lm.model)
            if m.lm_layers > depth:
                raise ValueError(f"lm_layers={m.lm_layers} > the LM's {depth} layers "
                                 f"({features.lm.model or 'all-MiniLM-L6-v2'})")
            log(f"model: lm_mode {mode}: top {m.lm_layers} of {depth} LM layers train "
                f"(lr {training.lm_lr}), up to {m.lm_items_per_step or 'all'} item texts "
                "per step")
    if not data.has_ratings:
        log("model: dataset has no ratings; intensity and like (decay) heads off")
    if m.use_time and not data.has_timestamps:
        log("model: dataset has no real timestamps; time-gap features and decay off")
    if not data.genre_names:
        log("model: items carry no genres; intent head off")
    return InterestModelConfig(
        **m.model_dump(exclude={"lm_mode", "use_time"}), lm_mode=mode,
        use_time=m.use_time and data.has_timestamps,
        num_items=data.num_items, num_genres=len(data.genre_names), max_len=data.max_len,
        text_dim=text_dim, lm_path=features.lm.model, lm_max_length=features.lm.max_length,
        use_ratings=data.has_ratings, rating_max=rating_max)


def build_model(mcfg: InterestModelConfig, data: SequenceData) -> InterestTransformer:
    # frozen: the text buffer; finetune/lora: the starting value of the tower's text cache
    has = mcfg.text_dim and data.text_embeddings is not None
    # copies: arrays that came through Ray's object store are read-only views
    text = torch.tensor(data.text_embeddings) if has else None
    genres = torch.tensor(data.item_genres) if mcfg.num_genres else None
    texts = data.item_texts if mcfg.tuned else None
    return InterestTransformer(mcfg, text, genres, texts)


def make_optimizer(model: InterestTransformer, lr: float, lm_lr: float,
                   weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; the LM's (finetune/lora) at ``lm_lr``."""
    lm = {id(p) for p in model.lm_parameters()}
    groups = [{"params": [p for p in model.parameters()
                          if p.requires_grad and id(p) not in lm], "lr": lr}]
    if lm:
        groups.append({"params": model.lm_parameters(), "lr": lm_lr})
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def _unwrap(model: torch.nn.Module) -> InterestTransformer:
    return model.module if hasattr(model, "module") else model


def train_func(config: dict) -> None:
    """One Ray Train worker: data shard, model, resume, epochs, report.

    ``config`` is Ray's train_loop_config: {"job": WorkerJob fields, "data": SequenceData,
    "progress": the driver's Queue of progress lines (``fit`` prints them, once)}.
    """
    # 1. data and model
    job = WorkerJob.model_validate(config["job"])
    progress: Queue = config["progress"]
    t, mcfg = job.training, job.model
    data = SequenceData.from_dict(config["data"])
    torch.manual_seed(t.seed)
    model = ray.train.torch.prepare_model(build_model(mcfg, data))
    optimizer = make_optimizer(_unwrap(model), t.lr, t.lm_lr, t.weight_decay)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()

    # 2. resume from the latest checkpoint, if Ray restarted us
    start, best, stale, history = 0, -1.0, 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / "train_state.pt", weights_only=True)
            history = json.loads((Path(directory) / HISTORY).read_text())
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, best, stale = state["epoch"] + 1, state["best"], state["stale"]
        if rank == 0:
            progress.put(f"train: resumed from the checkpoint of epoch {state['epoch'] + 1}")

    # 3. epochs
    train = data.train
    users = len(train.users)
    began = time.perf_counter()
    for epoch in range(start, t.epochs):
        _maybe_fail(job, epoch)
        generator = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
        torch.manual_seed(t.seed * 100_003 + epoch)
        order = torch.randperm(users, generator=generator)[rank::world].numpy()
        model.train()
        tick, total = time.perf_counter(), 0.0
        for s in range(0, len(order), t.batch_size):
            rows = order[s:s + t.batch_size]
            batch = [torch.from_numpy(a[rows]).to(device)
                     for a in (train.items, train.ratings, train.stamps)]
            losses = model(*batch)  # forward = losses; DDP all-reduces gradients
            optimizer.zero_grad()
            losses["total"].backward()
            optimizer.step()
            total += float(losses["total"].detach()) * len(rows)
        seconds = time.perf_counter() - tick

        # 4. validate, checkpoint, report
        metrics = {f"val_{k}": v for k, v in
                   evaluate_model(_unwrap(model), data, "valid").items()}
        if metrics[SCORE] > best:
            best, stale = metrics[SCORE], 0
        else:
            stale += 1
        metrics.update(epoch=epoch, train_loss=total / max(len(order), 1),
                       sequences_per_s=len(order) / seconds, best_val_ndcg10=best)
        if rank == 0:
            done = epoch + 1 - start
            eta = (time.perf_counter() - began) / done * (t.epochs - epoch - 1)
            progress.put(f"train: epoch {epoch + 1}/{t.epochs} loss {metrics['train_loss']:.4f} "
                  f"{SCORE} {metrics[SCORE]:.4f} ({metrics['sequences_per_s']:.0f} seq/s, "
                  f"ETA {eta:.0f}s if no early stop)")
        history.append(metrics)
        _report(model, optimizer, mcfg, history, epoch, best, stale, rank)
        if stale >= t.patience:
            if rank == 0:
                progress.put(f"train: early stop at epoch {epoch + 1}: no gain for {stale} epochs")
            break


def _maybe_fail(job: WorkerJob, epoch: int) -> None:
    if job.training.inject_failure_at_epoch != epoch:
        return
    marker = job.failure_marker
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"failed once at epoch {epoch}\n")
        raise RuntimeError(f"injected worker failure at epoch {epoch}")


def _report(model, optimizer, mcfg, history, epoch, best, stale, rank) -> None:
    metrics = history[-1]
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            torch.save({"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                        "epoch": epoch, "best": best, "stale": stale},
                       Path(directory) / "train_state.pt")
            mcfg.save(Path(directory))
            (Path(directory) / "metrics.json").write_text(json.dumps(metrics, indent=2))
            (Path(directory) / HISTORY).write_text(json.dumps(history))
            checkpoint = Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)


def new_run_id() -> str:
    """A fresh run id: the UTC start time and 4 random hex digits (``20261202-153001-9f3a``)."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def run_dir(training: TrainingConfig, run_id: str) -> str:
    """Where a run keeps its checkpoints and report (a local path or a URI)."""
    return f"{training.storage_path.rstrip('/')}/{training.run_name}/{run_id}"


def fit(training: TrainingConfig, mcfg: InterestModelConfig, data: SequenceData,
        log: Callable[[str], None] = print, run_id: str | None = None,
        callbacks: list | None = None):
    """Run the TorchTrainer on ``training.num_workers`` workers; returns the Ray Train result.
    ``callbacks``: Ray Train run callbacks (a Tune trial passes ``TuneReportCallback``).

    The run lives in ``run_dir(training, run_id)``: ``run_id`` None is a new run (trained from
    scratch), an existing run's id continues it from its latest checkpoint.

    Rank 0's progress lines (one per epoch, with rate and ETA) come back through a Ray queue
    and are passed to ``log`` here, in the driver, as they happen: the driver does not need
    Ray to forward its workers' output (``log_to_driver``), which would also bring Ray Train's
    own per-report lines.
    """
    t = training
    run_id = run_id or new_run_id()
    folder = run_dir(t, run_id)
    job = WorkerJob(training=t, model=mcfg, failure_marker=Path(folder) / "injected_failure.txt")
    progress = Queue(actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"job": job.model_dump(mode="json"), "data": data.to_dict(),
                           "progress": progress},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker}),
        run_config=RunConfig(
            name=run_id, storage_path=folder.rsplit("/", 1)[0],
            failure_config=FailureConfig(max_failures=t.max_failures), callbacks=callbacks,
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints,
                                               checkpoint_score_attribute=SCORE,
                                               checkpoint_score_order="max"),
        ),
    )
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="ray-train-fit") as pool:
            running = pool.submit(trainer.fit)
            while not running.done():
                _relay(progress, log, timeout_s=0.5)
            _relay(progress, log, timeout_s=0)  # what came in with the last epoch
            return running.result()
    finally:
        progress.shutdown()


def _relay(progress: Queue, log: Callable[[str], None], timeout_s: float) -> None:
    """Pass every queued progress line to ``log``; waits up to ``timeout_s`` for the first."""
    try:
        lines = [progress.get(timeout=timeout_s)] if timeout_s else []
    except Empty:
        return
    lines += progress.get_nowait_batch(progress.qsize())
    for line in lines:
        log(line)


def load_checkpoint(checkpoint: Checkpoint, data: SequenceData) -> InterestTransformer:
    with checkpoint.as_directory() as directory:
        mcfg = InterestModelConfig.load(Path(directory))
        state = torch.load(Path(directory) / "train_state.pt", weights_only=True)
    model = build_model(mcfg, data)
    model.load_state_dict(state["model"])
    return model.eval()


def epoch_history(result) -> list[dict]:
    """Every epoch's reported metrics, from the run's latest checkpoint (kept for resuming)."""
    with result.checkpoint.as_directory() as directory:
        return json.loads((Path(directory) / HISTORY).read_text())


def best_checkpoint(result) -> Checkpoint:
    return max(result.best_checkpoints, key=lambda pair: pair[1][SCORE])[0]
