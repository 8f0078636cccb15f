"""Training throughput: the Ray Train loop against a plain PyTorch loop, same data, same run.

Usage::

    python benchmarks/train_throughput.py --repo-path feature_repo [--config configs/tiny.yaml]

Both loops train the same model on the same Feast-built sequences with the same batch size
for the same epochs. Throughput counts only the optimisation steps (sequences/s); Ray's
startup (cluster, worker group, data shipping) and per-epoch validation and checkpointing are
reported separately. Target: plain / Ray sequences-per-second ratio <= 1.15.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import ray
import torch

from irec.config import PlatformConfig
from training.train import build_model, fit, model_config, prepare_data


def plain_loop(cfg: PlatformConfig, data, epochs: int) -> list[float]:
    """Sequences/s per epoch of a plain single-process loop (no Ray, no validation)."""
    torch.manual_seed(cfg.training.seed)
    mcfg = model_config(cfg.training, cfg.features, data, cfg.ingest.rating_max, lambda _: None)
    model = build_model(mcfg, data).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.training.lr)
    train, batch = data.train, cfg.training.batch_size
    rates = []
    for epoch in range(epochs):
        order = torch.randperm(len(train.users),
                               generator=torch.Generator().manual_seed(epoch)).numpy()
        tick = time.perf_counter()
        for s in range(0, len(order), batch):
            rows = order[s:s + batch]
            loss = model(*[torch.from_numpy(a[rows])
                           for a in (train.items, train.ratings, train.stamps)])["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates.append(len(order) / (time.perf_counter() - tick))
        print(f"plain: epoch {epoch + 1}/{epochs} {rates[-1]:.0f} seq/s")
    return rates


def main() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/tiny.yaml"))
    parser.add_argument("--repo-path", type=Path, required=True,
                        help="feature workspace with ML-100K applied (after `irec run`)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--storage-path", default="/tmp/irec-bench-runs")
    args = parser.parse_args()
    cfg = PlatformConfig.load(args.config, {
        "features.repo_path": str(args.repo_path), "training.epochs": args.epochs,
        "training.patience": args.epochs + 1, "training.storage_path": args.storage_path,
        "training.run_name": f"throughput-{int(time.time())}"})
    torch.set_num_threads(1)  # the Ray worker gets 1 CPU: give the plain loop the same
    data = prepare_data(cfg.features, cfg.training, log=lambda _: None)

    plain = plain_loop(cfg, data, args.epochs)

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    init_s = time.perf_counter() - started
    tick = time.perf_counter()
    mcfg = model_config(cfg.training, cfg.features, data, cfg.ingest.rating_max, lambda _: None)
    result = fit(cfg.training, mcfg, data)
    wall = time.perf_counter() - tick
    rows = sorted((m for _, m in result.best_checkpoints), key=lambda m: m["epoch"])
    ray_rates = [m["sequences_per_s"] for m in rows]
    train_s = sum(len(data.train.users) / r for r in ray_rates)
    ray.shutdown()

    # the first epoch warms up allocators and caches in both loops: compare the rest
    p, r = statistics.median(plain[1:] or plain), statistics.median(ray_rates[1:] or ray_rates)
    print("\n=== training throughput (sequences/s, median of epochs 2..N, 1 CPU each)")
    print(f"plain PyTorch loop   {p:8.0f}")
    print(f"Ray Train loop       {r:8.0f}")
    verdict = "PASS" if p / r <= 1.15 else "MISS"
    print(f"ratio plain / Ray    {p / r:8.3f}   target <= 1.15: {verdict}")
    print("\n=== Ray overhead outside the steps (seconds)")
    print(f"ray.init             {init_s:8.1f}")
    print(f"TorchTrainer.fit     {wall:8.1f}  of which optimisation steps {train_s:.1f}; "
          f"the rest is worker start, data shipping, validation and checkpoints")


if __name__ == "__main__":
    main()
