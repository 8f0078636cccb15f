"""Fine-tune the interest transformer with Ray Train (CPU or GPU workers, DDP).

Usage::

    python -m training.train --config configs/tiny.yaml            # embedded Ray, this machine
    ray job submit --working-dir . -- python -m training.train --config configs/ml-100k.yaml

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
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from features.store import open_store
from irec.config import PlatformConfig, resolve_lm_mode
from training.data import sequences
from training.data.ingest import read_manifest
from training.data.sequences import SequenceData
from training.eval.evaluate import evaluate_model
from training.models.interest import InterestModelConfig, InterestTransformer
from training.models.text_tower import TextTowerConfig, describe

SCORE = "val_ndcg@10"


def prepare_data(cfg: PlatformConfig, log: Callable[[str], None] = print) -> SequenceData:
    """Leave-one-out sequences from the Feast offline store (point-in-time correct)."""
    manifest = read_manifest(cfg.features.data_dir)
    events = pd.read_parquet(cfg.features.data_dir / "events.parquet")
    items = pd.read_parquet(cfg.features.data_dir / "items.parquet")
    return sequences.build(open_store(cfg.features), events, manifest,
                           cfg.features.history_length, log, items=items)


def model_config(cfg: PlatformConfig, data: SequenceData,
                 log: Callable[[str], None] = print) -> InterestModelConfig:
    """The model's config, with the heads this dataset cannot support switched off."""
    m = cfg.training.model
    mode = resolve_lm_mode(m.lm_mode, cfg.training.use_gpu)
    if m.lm_mode == "auto":
        log(f"model: lm_mode auto -> {mode} (training.use_gpu={cfg.training.use_gpu})")
    text_dim, tower = 0, None
    if mode == "frozen":
        if data.text_embeddings is None:
            log("model: items carry no text embeddings; LM item tower off (ids only)")
        else:
            text_dim = data.text_embeddings.shape[1]
    elif mode in ("finetune", "lora"):
        if not data.item_texts or not any(data.item_texts):
            log(f"model: items carry no text; lm_mode {mode} off (ids only)")
        else:
            text_dim, depth = describe(cfg.features.lm.model)
            if m.lm_layers > depth:
                raise ValueError(f"lm_layers={m.lm_layers} > the LM's {depth} layers "
                                 f"({cfg.features.lm.model or 'all-MiniLM-L6-v2'})")
            tower = TextTowerConfig(
                mode=mode, path=cfg.features.lm.model, layers=m.lm_layers,
                max_length=cfg.features.lm.max_length, items_per_step=m.lm_items_per_step,
                lora_rank=m.lora_rank, lora_alpha=m.lora_alpha)
            log(f"model: lm_mode {mode}: top {m.lm_layers} of {depth} LM layers train "
                f"(lr {cfg.training.lm_lr}), up to {m.lm_items_per_step or 'all'} item texts "
                "per step")
    if not data.has_ratings:
        log("model: dataset has no ratings; intensity and like (decay) heads off")
    if m.use_time and not data.has_timestamps:
        log("model: dataset has no real timestamps; time-gap features and decay off")
    if not data.genre_names:
        log("model: items carry no genres; intent head off")
    return InterestModelConfig(
        num_items=data.num_items, num_genres=len(data.genre_names), max_len=data.max_len,
        hidden=m.hidden, layers=m.layers, heads=m.heads, dropout=m.dropout,
        text_dim=text_dim, text_tower=tower,
        use_ratings=data.has_ratings, use_time=m.use_time and data.has_timestamps,
        rating_max=cfg.ingest.rating_max, softmax=m.softmax, num_negatives=m.num_negatives,
        loss_weights=dict(m.loss_weights),
    )


def build_model(mcfg: InterestModelConfig, data: SequenceData) -> InterestTransformer:
    # frozen: the text buffer; finetune/lora: the starting value of the tower's text cache
    has = mcfg.text_dim and data.text_embeddings is not None
    # copies: arrays that came through Ray's object store are read-only views
    text = torch.tensor(data.text_embeddings) if has else None
    genres = torch.tensor(data.item_genres) if mcfg.num_genres else None
    texts = data.item_texts if mcfg.text_tower is not None else None
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
    """One Ray Train worker: data shard, model, resume, epochs, report."""
    # 1. data and model
    data = SequenceData.from_dict(config["data"])
    mcfg = InterestModelConfig(**config["model"])
    torch.manual_seed(config["seed"])
    model = ray.train.torch.prepare_model(build_model(mcfg, data))
    optimizer = make_optimizer(_unwrap(model), config["lr"], config.get("lm_lr", config["lr"]),
                               config["weight_decay"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()

    # 2. resume from the latest checkpoint, if Ray restarted us
    start, best, stale = 0, -1.0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / "train_state.pt", weights_only=False)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, best, stale = state["epoch"] + 1, state["best"], state["stale"]
        if rank == 0:
            print(f"train: resumed from checkpoint of epoch {state['epoch']}")

    # 3. epochs
    train = data.train
    users = len(train.users)
    began = time.perf_counter()
    for epoch in range(start, config["epochs"]):
        _maybe_fail(config, epoch)
        generator = torch.Generator().manual_seed(config["seed"] * 100_003 + epoch)
        torch.manual_seed(config["seed"] * 100_003 + epoch)
        order = torch.randperm(users, generator=generator)[rank::world].numpy()
        model.train()
        tick, total = time.perf_counter(), 0.0
        for s in range(0, len(order), config["batch_size"]):
            rows = order[s:s + config["batch_size"]]
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
            eta = (time.perf_counter() - began) / done * (config["epochs"] - epoch - 1)
            print(f"train: epoch {epoch + 1}/{config['epochs']} loss {metrics['train_loss']:.4f} "
                  f"{SCORE} {metrics[SCORE]:.4f} ({metrics['sequences_per_s']:.0f} seq/s, "
                  f"ETA {eta:.0f}s if no early stop)")
        _report(model, optimizer, mcfg, metrics, epoch, best, stale, rank)
        if stale >= config["patience"]:
            if rank == 0:
                print(f"train: early stop at epoch {epoch + 1}: no gain for {stale} epochs")
            break


def _maybe_fail(config: dict, epoch: int) -> None:
    if config.get("inject_failure_at_epoch") != epoch:
        return
    marker = Path(config["failure_marker"])
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"failed once at epoch {epoch}\n")
        raise RuntimeError(f"injected worker failure at epoch {epoch}")


def _report(model, optimizer, mcfg, metrics, epoch, best, stale, rank) -> None:
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            torch.save({"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                        "epoch": epoch, "best": best, "stale": stale},
                       Path(directory) / "train_state.pt")
            mcfg.save(Path(directory))
            (Path(directory) / "metrics.json").write_text(json.dumps(metrics, indent=2))
            checkpoint = Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)


def fit(cfg: PlatformConfig, data: SequenceData, log: Callable[[str], None] = print):
    """Run the TorchTrainer; returns the Ray Train result."""
    t = cfg.training
    mcfg = model_config(cfg, data, log)
    run_dir = Path(t.storage_path) / t.run_name
    trainer = TorchTrainer(
        train_func,
        train_loop_config={
            "data": data.to_dict(), "model": asdict(mcfg), "epochs": t.epochs,
            "batch_size": t.batch_size, "lr": t.lr, "lm_lr": t.lm_lr,
            "weight_decay": t.weight_decay,
            "patience": t.patience, "seed": t.seed,
            "inject_failure_at_epoch": t.inject_failure_at_epoch,
            "failure_marker": str(run_dir / "injected_failure.txt"),
        },
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker}),
        run_config=RunConfig(
            name=t.run_name, storage_path=t.storage_path,
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(checkpoint_score_attribute=SCORE,
                                               checkpoint_score_order="max"),
        ),
    )
    return trainer.fit()


def load_checkpoint(checkpoint: Checkpoint, data: SequenceData) -> InterestTransformer:
    with checkpoint.as_directory() as directory:
        mcfg = InterestModelConfig.load(Path(directory))
        state = torch.load(Path(directory) / "train_state.pt", weights_only=False)
    model = build_model(mcfg, data)
    model.load_state_dict(state["model"])
    return model.eval()


def best_checkpoint(result) -> Checkpoint:
    return max(result.best_checkpoints, key=lambda pair: pair[1][SCORE])[0]


def run(cfg: PlatformConfig, log: Callable[[str], None] = print, margin: float = 0.0) -> dict:
    """Train, evaluate on test beside popularity, package in BentoML, try to promote."""
    import ray

    from features.store import schema_hash
    from serving import package
    from training.baselines.mf import evaluate_biased_mf, evaluate_bpr
    from training.baselines.popularity import evaluate_popularity

    if not ray.is_initialized():  # under `ray job submit` this joins the job's cluster
        ray.init(configure_logging=False)
    started = time.perf_counter()
    data = prepare_data(cfg, log)
    result = fit(cfg, data, log)
    best = best_checkpoint(result)
    model = load_checkpoint(best, data)
    with best.as_directory() as directory:
        val = json.loads((Path(directory) / "metrics.json").read_text())
    table = {"interest transformer": evaluate_model(model, data, "test"),
             "popularity": evaluate_popularity(data, "test"),
             "BPR-MF": evaluate_bpr(data, seed=cfg.training.seed)}
    if data.has_ratings:
        table["biased MF"] = evaluate_biased_mf(data, seed=cfg.training.seed)
    for ablation in cfg.training.ablations:
        variant = _ablation(cfg, ablation)
        log(f"train: ablation {ablation}")
        other = fit(variant, data, log)
        table[f"transformer ({ablation.replace('_', ' ')})"] = evaluate_model(
            load_checkpoint(best_checkpoint(other), data), data, "test")
    store = open_store(cfg.features)
    manifest = read_manifest(cfg.features.data_dir)
    items = pd.read_parquet(cfg.features.data_dir / "items.parquet")
    tag = package.save(model.export_frozen(), items, metrics={**val, **{f"test_{k}": v for k, v in
                                                          table["interest transformer"].items()}},
                       dataset_fingerprint=manifest["fingerprint"],
                       feature_services={s: schema_hash(store, s)
                                         for s in ("retrieval_v1", "ranking_v1")},
                       genre_names=data.genre_names, log=log)
    verdict = package.promote(tag, margin)
    log(f"promote: {verdict.message}")
    report = {"model": tag, "champion": verdict.promoted, "test": table,
              "validation": val, "seconds": round(time.perf_counter() - started, 1)}
    out = Path(cfg.training.storage_path) / cfg.training.run_name
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "report.md").write_text(markdown_table(table))
    plot_curves(result, out / "curves.png")
    log(markdown_table(table))
    log(f"train: done in {report['seconds']}s; report in {out}")
    return report


def _ablation(cfg: PlatformConfig, name: str) -> PlatformConfig:
    t = cfg.training
    change = {"ids_only": {"lm_mode": "none"}, "no_time": {"use_time": False}}[name]
    return cfg.model_copy(update={"training": t.model_copy(update={
        "model": t.model.model_copy(update=change), "run_name": f"{t.run_name}-{name}",
        "ablations": []})})


def plot_curves(result, path: Path) -> None:
    """PNG of training loss and validation NDCG@10 per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((m for _, m in result.best_checkpoints), key=lambda m: m["epoch"])
    epochs = [m["epoch"] + 1 for m in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [m["train_loss"] for m in rows], marker="o")
    left.set(title="training loss (weighted heads)", xlabel="epoch")
    right.plot(epochs, [m[SCORE] for m in rows], marker="o", color="tab:green")
    right.set(title="validation NDCG@10", xlabel="epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(table: dict[str, dict[str, float]]) -> str:
    columns = ["hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr", "rmse", "mae", "like_auc",
               "intent_acc", "intent_macro_f1"]
    columns = [c for c in columns if any(c in row for row in table.values())]
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in table.items():
        cells = [f"{row[c]:.4f}" if c in row else "—" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--margin", type=float, default=0.0,
                        help="validation NDCG@10 gain needed to replace the champion")
    args = parser.parse_args(argv)
    run(PlatformConfig.load(args.config), margin=args.margin)


if __name__ == "__main__":
    main()

