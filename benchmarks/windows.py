"""Training windows: the preset trained on each user's last window only against every window
of its history (``training.window_stride``), same data, same splits, same run.

Usage::

    python benchmarks/windows.py --config configs/ml-100k.yaml [--strides 0 25] [--seeds 0 1]

The dataset of the preset is ingested into a fresh workspace and its features built (Feast,
point in time). For each stride and seed the preset trains with Ray Train (early stopping on
validation NDCG@10, as ``irec train`` does) and its best checkpoint is scored on the test
split (leave-one-out, full ranking, seen items removed). Validation and test sets do not
depend on the stride: only the training windows change. Prints one line per run and a table
with the ratio of each stride's mean test NDCG@10 to the first stride's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from data.ingest import ingest
from features.build import build
from features.store import apply, open_store
from irec.config import PlatformConfig
from irec.console import init_ray, session
from irec.pipeline import evaluate, train
from training.train import new_run_id, prepare_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/ml-100k.yaml"))
    parser.add_argument("--strides", type=int, nargs="+", default=[0, 25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--workspace", type=Path, default=None,
                        help="feature workspace to build in (default: a temporary folder)")
    parser.add_argument("--verbose", action="store_true", help="Library logs here, not a file.")
    args = parser.parse_args()
    with session("windows", args.verbose) as console:
        run(args, console.echo)


def _quiet(_: str) -> None:
    """Data-preparation lines: the same for every run."""


def run(args: argparse.Namespace, echo) -> None:
    root = args.workspace or Path(tempfile.mkdtemp(prefix="irec-windows-"))
    base = PlatformConfig.load(args.config, {
        "features.repo_path": str(root / "features"), "training.ablations": [],
        "training.storage_path": str(root / "runs")})
    tick = time.perf_counter()
    ingest(base.ingest, base.features.data_dir, log=_quiet)
    build(base.features, log=_quiet)
    apply(open_store(base.features), log=_quiet)
    echo(f"windows: workspace {root} ready in {time.perf_counter() - tick:.0f}s")
    init_ray(False)

    rows = []
    runs = [(stride, seed) for stride in args.strides for seed in args.seeds]
    began = time.perf_counter()
    prepared = {}  # stride -> data: the seeds of one stride train on the same windows
    for done, (stride, seed) in enumerate(runs):
        cfg = base.model_copy(update={"training": base.training.model_copy(update={
            "window_stride": stride, "seed": seed, "run_name": f"windows-{stride}-{seed}"})})
        if stride not in prepared:
            prepared[stride] = prepare_data(cfg.features, cfg.training, log=_quiet)
        data = prepared[stride]
        tick = time.perf_counter()
        trained = train(cfg, data, new_run_id(), echo)
        seconds = time.perf_counter() - tick
        test = evaluate(trained, data)
        row = {"stride": stride, "seed": seed, "windows": len(data.train.users),
               "epochs": len(trained.epochs), "train_s": seconds,
               "val_ndcg10": trained.validation["val_ndcg@10"], **test}
        rows.append(row)
        eta = (time.perf_counter() - began) / (done + 1) * (len(runs) - done - 1)
        echo(f"windows: stride {stride} seed {seed}: {row['windows']:,} windows, "
             f"{row['epochs']} epochs in {seconds:.0f}s, val NDCG@10 {row['val_ndcg10']:.4f}, "
             f"test NDCG@10 {test['ndcg@10']:.4f} HR@10 {test['hr@10']:.4f} "
             f"({done + 1}/{len(runs)}, ETA {eta:.0f}s)")

    baseline = statistics.mean(r["ndcg@10"] for r in rows if r["stride"] == args.strides[0])
    echo(f"\n{args.config}: seeds {args.seeds}, means over seeds")
    echo("| stride | windows | epochs | train s | val NDCG@10 | test NDCG@10 | test HR@10 | "
         "NDCG ratio |")
    echo("|---|---|---|---|---|---|---|---|")
    for stride in args.strides:
        mine = [r for r in rows if r["stride"] == stride]

        def mean(key: str, runs: list[dict] = mine) -> float:
            return statistics.mean(r[key] for r in runs)

        echo(f"| {stride or 'last window only'} | {mine[0]['windows']:,} | "
             f"{mean('epochs'):.1f} | {mean('train_s'):.0f} | {mean('val_ndcg10'):.4f} | "
             f"{mean('ndcg@10'):.4f} | {mean('hr@10'):.4f} | "
             f"{mean('ndcg@10') / baseline:.2f} |")


if __name__ == "__main__":
    main()
