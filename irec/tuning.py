"""``irec tune``: search the preset's ``training.tune.space`` (``training.tune``), then write
the winner as a preset beside a trials table and plot.

    irec tune --config configs/ml-100k.yaml --trials 8 --time-budget 1800
    irec tune --config configs/ml-100k.yaml --resume <search id>

A search lives in ``<training.storage_path>/<training.run_name>-tune/<search id>`` and
leaves there ``preset.yaml`` (the preset with the winning settings, paths absolute: train it
with ``irec train --config .../preset.yaml``), ``report.md`` (the trials, best first),
``trials.csv`` and ``trials.png`` (validation NDCG@10 per epoch of every trial).
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from irec.config import PlatformConfig
from irec.console import init_ray
from training.config import TrainingConfig
from training.train import SCORE, new_run_id, prepare_data
from training.tune import Log, Search, search


def search_folder(training: TrainingConfig, search_id: str) -> Path:
    return Path(training.storage_path).expanduser() / f"{training.run_name}-tune" / search_id


def run(preset: Path, cfg: PlatformConfig, log: Log = print, resume: str | None = None,
        verbose: bool = False) -> Search:
    """Prepare the data once, search, write the preset and the report; the search."""
    started = time.perf_counter()
    search_id = resume or new_run_id()
    folder = search_folder(cfg.training, search_id)
    if resume is not None and not folder.is_dir():
        raise FileNotFoundError(f"no search to resume in {folder}")
    init_ray(verbose, dashboard=True)
    t = cfg.training.tune
    log(f"tune: search {search_id} in {folder}: {t.trials} trials of up to "
        f"{cfg.training.epochs} epochs, {t.max_concurrent} at once, budget {t.time_budget_s:.0f}s"
        f", over {', '.join(t.space)}")
    data = prepare_data(cfg.features, cfg.training, log)
    found = search(cfg.training, cfg.features, cfg.ingest.rating_max, data, folder, log,
                   resume=resume is not None)
    path = write_preset(preset, cfg, found)
    write_report(found, cfg.training, time.perf_counter() - started)
    log(f"tune: best {SCORE} {found.best_score:.4f} with {found.best}")
    log(f"tune: done in {time.perf_counter() - started:.0f}s; preset {path}, report "
        f"{folder / 'report.md'}")
    return found


def write_preset(preset: Path, cfg: PlatformConfig, found: Search) -> Path:
    """``preset.yaml``: the searched config (the preset and the command's options) with the
    winning settings, every path absolute."""
    tuned = cfg.model_copy(update={"training": cfg.training.with_settings(found.best)})
    path = found.folder / "preset.yaml"
    header = (f"# irec tune {found.folder.name} of {preset}: best {SCORE} "
              f"{found.best_score:.4f} with {found.best}\n")
    path.write_text(header + yaml.safe_dump(
        tuned.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
    return path


def write_report(found: Search, training: TrainingConfig, seconds: float) -> None:
    """``report.md``, ``trials.csv`` and ``trials.png`` in the search folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = found.trials
    table.to_csv(found.folder / "trials.csv", index=False)
    columns = list(table.columns)
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v)
                                       for v in row) + " |")
    t = training.tune
    (found.folder / "report.md").write_text(
        f"# irec tune {found.folder.name}\n\n{len(table)} trials of up to {training.epochs} "
        f"epochs in {seconds:.0f}s (budget {t.time_budget_s:.0f}s, ASHA grace "
        f"{t.grace_epochs}, reduction {t.reduction_factor}); best {SCORE} "
        f"{found.best_score:.4f} with {found.best}.\n\n" + "\n".join(lines) + "\n\n"
        "![validation NDCG@10 per epoch](trials.png)\n")
    fig, ax = plt.subplots(figsize=(7, 4))
    for trial, scores in found.curves.items():
        ax.plot(range(1, len(scores) + 1), scores, marker=".", label=trial)
    ax.set(title=f"irec tune {found.folder.name}", xlabel="epoch", ylabel=SCORE)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(found.folder / "trials.png", dpi=110)
    plt.close(fig)
