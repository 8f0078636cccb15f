"""Exact top-K against the FAISS IVF index as the catalogue grows: where the index pays.

    python benchmarks/retrieval_scaling.py [--sizes 10000 100000 200000 1000000]

Item vectors are synthetic (D=64, drawn around 256 centres, as learned item vectors cluster);
states are drawn the same way. Per catalogue size, one thread, one state per query (the
light-load case) and 200 queries: exact scoring (``ray_apps.ann.top_k`` without an index)
and the index at several ``nprobe``, in the same run: ms per query (p50 / p99), recall of
the exact top 100, the index's build time, and exact / index time. ``RetrievalKnobs``
switches to the index at ``ann_min_items`` (100,000): below it exact is under a millisecond.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ray_apps.ann import ItemIndex, set_threads, top_k


def clustered(rng: np.random.Generator, centres: np.ndarray, count: int) -> torch.Tensor:
    picks = rng.integers(0, len(centres), count)
    noise = rng.standard_normal((count, centres.shape[1])) * 0.5
    return torch.from_numpy((centres[picks] + noise).astype(np.float32))


def timed(items: torch.Tensor, states: torch.Tensor, k: int, index: ItemIndex | None = None,
          nprobe: int = 0) -> tuple[list[list[int]], np.ndarray]:
    """Each state's top ``k`` ids, one query at a time, and the ms each took."""
    out, ms = [], []
    for state in states:
        tick = time.perf_counter()
        out.append(top_k(state[None], items, [set()], k, index, nprobe)[0][0])
        ms.append((time.perf_counter() - tick) * 1000)
    return out, np.array(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[10_000, 100_000, 200_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    options = parser.parse_args()
    torch.set_num_threads(1)
    set_threads(1)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((256, 64))
    rows = []
    for size in options.sizes:
        items = torch.cat([torch.zeros(1, 64), clustered(rng, centres, size)])  # (I+1, D)
        states = clustered(rng, centres, options.queries)  # (Q, D)
        exact, exact_ms = timed(items, states, options.k)
        tick = time.perf_counter()
        index = ItemIndex(items)
        build_s = time.perf_counter() - tick
        print(f"{size:>9,} items: exact p50 {np.median(exact_ms):.2f} ms; index of "
              f"{index.cells} cells built in {build_s:.1f}s")
        for nprobe in options.nprobe:
            found, ms = timed(items, states, options.k, index, nprobe)
            recall = np.mean([len(set(f) & set(e)) / len(e)
                              for f, e in zip(found, exact, strict=True)])
            rows.append((size, index.cells, build_s, exact_ms, nprobe, ms, recall))
            print(f"  nprobe {nprobe}: p50 {np.median(ms):.2f} ms, recall@{options.k} "
                  f"{recall:.3f}")
    print(f"\n| items | exact p50 / p99 ms | cells | build s | nprobe | index p50 / p99 ms | "
          f"recall@{options.k} | exact / index (p50) |\n" + "|---" * 8 + "|")
    for size, cells, build_s, exact_ms, nprobe, ms, recall in rows:
        print(f"| {size:,} | {np.median(exact_ms):.2f} / {np.percentile(exact_ms, 99):.2f} | "
              f"{cells} | {build_s:.1f} | {nprobe} | {np.median(ms):.2f} / "
              f"{np.percentile(ms, 99):.2f} | {recall:.3f} | "
              f"{np.median(exact_ms) / np.median(ms):.1f}x |")


if __name__ == "__main__":
    main()
