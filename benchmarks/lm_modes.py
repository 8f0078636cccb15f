"""Seconds per epoch and validation NDCG@10 of the LM modes: frozen, finetune, lora.

Usage::

    python -m benchmarks.lm_modes --config configs/tiny.yaml --epochs 1
    python -m benchmarks.lm_modes --config configs/ml-100k.yaml --epochs 3 --modes frozen lora

One process, the training loop of ``training.train.train_func`` without Ray (same batches,
optimizer and seeds), so the figures are the model's cost alone. Per mode it reports the
model build (LM load, frozen-layer cache), and per epoch the training steps and the
validation pass (in finetune/lora that includes refreshing the catalogue's text cache), as
wall-clock seconds and as this process's CPU seconds (steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from irec.config import PlatformConfig
from training.eval.evaluate import evaluate_model
from training.train import build_model, make_optimizer, model_config, prepare_data


def bench(cfg: PlatformConfig, data, mode: str, epochs: int) -> dict:
    t = cfg.training
    model_cfg = t.model.model_copy(update={"lm_mode": mode})
    t = t.model_copy(update={"model": model_cfg})
    torch.manual_seed(t.seed)
    began = time.perf_counter()
    mcfg = model_config(t, cfg.features, data, cfg.ingest.rating_max, lambda _: None)
    model = build_model(mcfg, data)
    out = {"mode": mode, "build_s": round(time.perf_counter() - began, 1), "epochs": []}
    optimizer = make_optimizer(model, t.lr, t.lm_lr, t.weight_decay)
    train = data.train
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
        torch.manual_seed(t.seed * 100_003 + epoch)
        order = torch.randperm(len(train.users), generator=generator).numpy()
        model.train()
        tick, cpu = time.perf_counter(), time.process_time()
        for s in range(0, len(order), t.batch_size):
            rows = order[s:s + t.batch_size]
            batch = [torch.from_numpy(a[rows]) for a in (train.items, train.ratings, train.stamps)]
            loss = model(*batch)["total"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        steps, steps_cpu = time.perf_counter() - tick, time.process_time() - cpu
        tick, cpu = time.perf_counter(), time.process_time()
        metrics = evaluate_model(model, data, "valid")
        out["epochs"].append({"epoch": epoch, "train_s": round(steps, 1),
                              "train_cpu_s": round(steps_cpu, 1),
                              "validate_s": round(time.perf_counter() - tick, 1),
                              "validate_cpu_s": round(time.process_time() - cpu, 1),
                              "val_ndcg@10": round(metrics["ndcg@10"], 4)})
        print(json.dumps({"mode": mode, **out["epochs"][-1]}), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--repo-path", help="feature workspace (features.repo_path)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["frozen", "finetune", "lora"])
    args = parser.parse_args(argv)
    cfg = PlatformConfig.load(args.config, {"features.repo_path": args.repo_path})
    data = prepare_data(cfg.features, cfg.training, log=lambda _: None)
    results = [bench(cfg, data, mode, args.epochs) for mode in args.modes]
    print(json.dumps({"torch_threads": torch.get_num_threads(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
