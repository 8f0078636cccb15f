"""The training report: the test table in markdown, the learning curves, report.json."""

from __future__ import annotations

import json
from pathlib import Path

from training.eval.evaluate import COLD_EVENTS

SCORE = "val_ndcg@10"
COLUMNS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr", "cold_hr@10", "cold_ndcg@10", "rmse",
           "mae", "like_auc", "intent_acc", "intent_macro_f1")


def markdown_table(table: dict[str, dict[str, float]]) -> str:
    """One row per model, one column per metric any of them has ("—" where one lacks it)."""
    columns = [c for c in COLUMNS if any(c in row for row in table.values())]
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in table.items():
        cells = [f"{row[c]:.4f}" if c in row else "—" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(epochs: list[dict], path: Path) -> None:
    """PNG of training loss and validation NDCG@10 per epoch (the epochs' reported metrics)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(epochs, key=lambda m: m["epoch"])
    x = [m["epoch"] + 1 for m in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(x, [m["train_loss"] for m in rows], marker="o")
    left.set(title="training loss (weighted heads)", xlabel="epoch")
    right.plot(x, [m[SCORE] for m in rows], marker="o", color="tab:green")
    right.set(title="validation NDCG@10", xlabel="epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out: Path, report: dict, epochs: list[dict]) -> None:
    """report.json, report.md (the test table; for a retraining, the held-out window's table
    and the gate's decision) and curves.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    text = markdown_table(report["test"])
    if "cold_targets" in report:
        text += (f"\nThe cold columns score the {report['cold_targets']:,} of "
                 f"{report['test_targets']:,} test targets whose item has fewer than "
                 f"{COLD_EVENTS} earlier events.\n")
    if "window" in report:
        w, gate = report["window"], report["gate"]
        text += (f"\n## Held-out window {w['start']} .. {w['end']}: {w['targets']:,} next "
                 f"events\n\n{markdown_table(w['table'])}\n## Gate\n\n"
                 f"{gate['message']} (margin {gate['margin']}; champion: "
                 f"{gate['champion_scored']})\n")
    (out / "report.md").write_text(text)
    plot_curves(epochs, out / "curves.png")
