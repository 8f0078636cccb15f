"""Rating RMSE/MAE on MovieLens-100K's official five folds (u1..u5), comparable with papers.

Usage::

    python benchmarks/rating_folds.py [--data ../shared/datasets/ml-100k] [--folds 1 2 3 4 5]
                                      [--out rating_folds.json]

The folds are regenerated exactly from ``u.data`` (``training/eval/folds.py``, as ``mku.sh``
makes them). For each fold every model trains on ``u<k>.base`` and is scored on ``u<k>.test``.
Hyper-parameters and epoch counts are chosen on a random validation slice of the base file
(``--valid-fraction``), never on the test file; then, with ``--refit`` (the default), each
model is retrained on the whole base file with what was chosen. Models:

- global mean; user + item biases (regularisation picked on the validation slice);
- biased MF (``training/baselines/mf.py``): latent size and L2 picked from a grid, epochs by
  early stopping on the validation slice;
- I-AutoRec (``training/models/autorec.py``): predicts each rating from all other ratings of
  the item, averaged over ``--autorec-seeds`` seeds;
- blend: least squares on the validation slice over the I-AutoRec, biased-MF and bias
  predictions (weights fitted on validation predictions of the models trained without it).

Published five-fold figures: SVD 0.934, SVD++ 0.919 (RMSE); GLocal-K 0.889 on u1 alone.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from training.baselines.bias import BiasModel, fit_bias, fit_global_mean
from training.baselines.mf import fit_biased_mf
from training.eval.folds import Fold, Ratings, official_folds
from training.eval.metrics import rating_metrics
from training.models.autorec import AutoRecConfig, fit_autorec, rmse

NUM_USERS, NUM_ITEMS = 944, 1683  # raw ML-100K ids 1..943 and 1..1682 index directly
MODELS = ("global mean", "user+item bias", "biased MF", "I-AutoRec", "blend")
Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]


def split_valid(base: Ratings, fraction: float, seed: int) -> tuple[Ratings, Ratings]:
    if not 0.0 < fraction < 0.5:
        raise ValueError(f"valid fraction {fraction} must be in (0, 0.5)")
    order = np.random.default_rng(seed).permutation(len(base))
    cut = int(len(base) * fraction)
    return base.subset(order[cut:]), base.subset(order[:cut])


def fit_bias_tuned(train: Ratings, valid: Ratings) -> tuple[dict[str, float], float]:
    """The (reg_user, reg_item) of a small grid with the lowest validation RMSE."""
    scored = []
    for reg_user in (2.0, 5.0, 10.0, 20.0):
        for reg_item in (5.0, 10.0, 25.0, 50.0):
            model = fit_bias(train.users, train.items, train.ratings, NUM_USERS, NUM_ITEMS,
                             reg_user, reg_item)
            scored.append((rmse(model.predict(valid.users, valid.items), valid.ratings),
                           {"reg_user": reg_user, "reg_item": reg_item}))
    best = min(scored, key=lambda s: s[0])
    return best[1], best[0]


def mf_predictor(model) -> Predict:
    def predict(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            pred = model(torch.from_numpy(users), torch.from_numpy(items))
        return pred.clamp(1.0, 5.0).numpy().astype(np.float64)
    return predict


def fit_mf_tuned(train: Ratings, valid: Ratings, dims: list[int], regs: list[float],
                 max_epochs: int, seed: int, log) -> tuple[dict, float, Predict]:
    """Grid over (dim, reg), each early-stopped on validation RMSE (patience 5)."""
    best: tuple[float, dict, Predict] | None = None
    for dim in dims:
        for reg in regs:
            trace: list[float] = []
            states: dict[int, dict] = {}

            def on_epoch(epoch: int, model, trace=trace, states=states) -> bool:
                trace.append(rmse(mf_predictor(model)(valid.users, valid.items), valid.ratings))
                if trace[-1] <= min(trace):
                    states.clear()
                    states[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
                return epoch - int(np.argmin(trace)) - 1 >= 5

            model = fit_biased_mf(train.users, train.items, train.ratings, NUM_USERS,
                                  NUM_ITEMS - 1, dim=dim, epochs=max_epochs, reg=reg,
                                  seed=seed, on_epoch=on_epoch)
            (epoch, state), = states.items()
            model.load_state_dict(state)
            score = min(trace)
            log(f"    biased MF dim={dim} reg={reg}: valid RMSE {score:.4f} at epoch {epoch}")
            if best is None or score < best[0]:
                best = (score, {"dim": dim, "reg": reg, "epochs": epoch}, mf_predictor(model))
    if best is None:
        raise ValueError(f"empty biased-MF grid: dims={dims}, regs={regs}")
    return best[1], best[0], best[2]


def fit_autorec_ensemble(train: Ratings, valid: Ratings | None, config: AutoRecConfig,
                         seeds: int, fallback: BiasModel, log) -> tuple[Predict, list[dict]]:
    """Average of I-AutoRecs with seeds config.seed .. config.seed + seeds - 1."""
    predictors, infos = [], []
    for k in range(seeds):
        cfg = replace(config, seed=config.seed + k)

        def progress(epoch: int, score: float, seconds: float, cfg=cfg) -> None:
            if epoch % 10 == 0 or epoch == cfg.max_epochs:
                rate = epoch / seconds
                eta = (cfg.max_epochs - epoch) / rate
                shown = "" if np.isnan(score) else f" valid RMSE {score:.4f}"
                log(f"    I-AutoRec seed {cfg.seed} epoch {epoch}/{cfg.max_epochs}{shown} "
                    f"({rate:.1f} epochs/s, ETA <= {eta:.0f}s)")

        predictor, info = fit_autorec(train, valid, NUM_USERS, NUM_ITEMS, cfg, progress)
        scored = (f"best epoch {info['best_epoch']}, valid RMSE {info['valid_rmse']:.4f}"
                  if valid is not None else f"refit for {cfg.max_epochs} epochs")
        log(f"    I-AutoRec seed {cfg.seed}: {scored}, {info['seconds']:.0f}s")
        predictors.append(predictor)
        infos.append(info)

    def predict(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        pred = np.mean([p.predict(users, items) for p in predictors], axis=0)
        return np.where(np.isnan(pred), fallback.predict(users, items), pred)
    return predict, infos


def fit_blend(columns: list[np.ndarray], target: np.ndarray) -> np.ndarray:
    """Least-squares weights (intercept last) of the blend."""
    design = np.column_stack([*columns, np.ones(len(target))])
    weights, *_ = np.linalg.lstsq(design, target, rcond=None)
    return weights


def apply_blend(weights: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    design = np.column_stack([*columns, np.ones(len(columns[0]))])
    return np.clip(design @ weights, 1.0, 5.0)


def run_fold(fold: Fold, args, log) -> dict:
    began = time.perf_counter()
    train, valid = split_valid(fold.base, args.valid_fraction, args.seed)
    base, test = fold.base, fold.test
    log(f"  u{fold.number}: {len(train)} train / {len(valid)} valid from u{fold.number}.base, "
        f"{len(test)} test")
    bias_cfg, bias_valid = fit_bias_tuned(train, valid)
    bias = fit_bias(train.users, train.items, train.ratings, NUM_USERS, NUM_ITEMS, **bias_cfg)
    log(f"    bias {bias_cfg}: valid RMSE {bias_valid:.4f}")
    mf_cfg, mf_valid, mf = fit_mf_tuned(train, valid, args.mf_dims, args.mf_regs,
                                        args.mf_epochs, args.seed, log)
    auto_cfg = AutoRecConfig(hidden=args.autorec_hidden, l2=args.autorec_l2,
                             input_dropout=args.autorec_dropout, seed=args.seed,
                             max_epochs=args.autorec_epochs)
    auto, auto_infos = fit_autorec_ensemble(train, valid, auto_cfg, args.autorec_seeds, bias,
                                            log)
    members = (auto, mf, bias.predict)
    weights = fit_blend([m(valid.users, valid.items) for m in members], valid.ratings)
    log(f"    blend weights (I-AutoRec, MF, bias, intercept): {np.round(weights, 3).tolist()}")
    if args.refit:
        log("    refit on the whole base file with the chosen settings")
        bias = fit_bias(base.users, base.items, base.ratings, NUM_USERS, NUM_ITEMS, **bias_cfg)
        mf = mf_predictor(fit_biased_mf(base.users, base.items, base.ratings, NUM_USERS,
                                        NUM_ITEMS - 1, dim=mf_cfg["dim"], reg=mf_cfg["reg"],
                                        epochs=mf_cfg["epochs"], seed=args.seed))
        # an epoch is one pass over the items, as many with the slice as without it
        epochs = int(round(np.mean([i["best_epoch"] for i in auto_infos])))
        auto, _ = fit_autorec_ensemble(base, None, replace(auto_cfg, max_epochs=epochs),
                                       args.autorec_seeds, bias, log)
        members = (auto, mf, bias.predict)
    source = base if args.refit else train
    mean = fit_global_mean(source.ratings, NUM_USERS, NUM_ITEMS)
    columns = [m(test.users, test.items) for m in members]
    predictions = {"global mean": mean.predict(test.users, test.items),
                   "user+item bias": columns[2], "biased MF": columns[1],
                   "I-AutoRec": columns[0], "blend": apply_blend(weights, columns)}
    seconds = time.perf_counter() - began
    return {"fold": f"u{fold.number}", "seconds": seconds,
            "metrics": {name: rating_metrics(p, test.ratings) for name, p in predictions.items()},
            "chosen": {"bias": bias_cfg, "biased MF": mf_cfg,
                       "I-AutoRec": {**asdict(auto_cfg),
                                     "best_epochs": [i["best_epoch"] for i in auto_infos]},
                       "blend weights": weights.tolist()}}


def table(results: list[dict]) -> str:
    lines = ["| model | " + " | ".join(r["fold"] for r in results) + " | mean RMSE | mean MAE |",
             "|---|" + "---|" * (len(results) + 2)]
    for name in MODELS:
        cells = [f"{r['metrics'][name]['rmse']:.4f} / {r['metrics'][name]['mae']:.4f}"
                 for r in results]
        mean_rmse = np.mean([r["metrics"][name]["rmse"] for r in results])
        mean_mae = np.mean([r["metrics"][name]["mae"] for r in results])
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | **{mean_rmse:.4f}** | {mean_mae:.4f} |")
    lines.append("| seconds | " + " | ".join(f"{r['seconds']:.0f}" for r in results) + " | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/datasets/ml-100k")
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--valid-fraction", type=float, default=0.05)
    parser.add_argument("--no-refit", dest="refit", action="store_false")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mf-dims", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--mf-regs", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--mf-epochs", type=int, default=40)
    defaults = AutoRecConfig()
    parser.add_argument("--autorec-hidden", type=int, default=defaults.hidden)
    parser.add_argument("--autorec-l2", type=float, default=defaults.l2)
    parser.add_argument("--autorec-dropout", type=float, default=defaults.input_dropout)
    parser.add_argument("--autorec-epochs", type=int, default=defaults.max_epochs)
    parser.add_argument("--autorec-seeds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folds = {f.number: f for f in official_folds(args.data / "u.data")}
    missing = sorted(set(args.folds) - set(folds))
    if missing:
        raise SystemExit(f"unknown folds {missing}: choose from {sorted(folds)}")
    results = []
    began = time.perf_counter()
    for done, number in enumerate(args.folds, start=1):
        print(f"fold u{number} ({done}/{len(args.folds)})", flush=True)
        results.append(run_fold(folds[number], args, lambda m: print(m, flush=True)))
        elapsed = time.perf_counter() - began
        eta = elapsed / done * (len(args.folds) - done)
        summary = ", ".join(f"{n} {results[-1]['metrics'][n]['rmse']:.4f}" for n in MODELS)
        print(f"u{number} done in {results[-1]['seconds']:.0f}s: RMSE {summary} "
              f"({done / elapsed * 60:.2f} folds/min, ETA {eta:.0f}s)", flush=True)
    print()
    print(table(results))
    if args.out is not None:
        args.out.write_text(json.dumps({"folds": results, "args": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
