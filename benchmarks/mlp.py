"""The residual MLP map (method="mlp"): fit time by dimension, and its quality against the
linear maps on real text and on a known nonlinear relation.

* Fit time: 5,000 anchor pairs of d -> d dims (16, 128, 384, 768), one ``fit`` in process
  (ridge's statistics + the residual's training with early stopping), timed against ridge
  alone in the same run. A service fit trains twice (held out, then on all pairs).
* Quality, new pairs only (top-1 among the test items, higher is better):
  text MiniLM -> mpnet with all 2,500 glosses (3 seeded splits of 2,000 anchors / 500 test),
  and y = tanh(3 x A) B + noise (8 -> 32 dims, 3,000 anchors / 1,000 test).

Run: ``.venv/bin/python benchmarks/mlp.py [--quick]``; prints Markdown for RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from convergent.server.align import PairedStats, ProcrustesMap, RidgeMap, ResidualMLPMap, retrieval_topk
from convergent.server.datasets import find_realdata, load_text


def _timed(fn):  # noqa: ANN001, ANN202
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def fit_times(dims: list[int], n: int) -> None:
    print("| d_x = d_y | pairs | ridge fit s | mlp fit s | epochs run (best) | mlp / ridge |")
    print("|---|---|---|---|---|---|")
    for d in dims:
        rng = np.random.default_rng(d)
        X = rng.normal(size=(n, d)).astype(np.float32)
        Y = (np.tanh(X @ rng.normal(size=(d, d)) / np.sqrt(d)) + 0.1 * rng.normal(size=(n, d))).astype(np.float32)
        t_ridge, _ = _timed(lambda: RidgeMap().fit(X, Y))
        t_mlp, m = _timed(lambda: ResidualMLPMap().fit(X, Y))
        print(f"| {d} | {n:,} | {t_ridge:.2f} | {t_mlp:.1f} | {m.epochs_run_} ({m.best_epoch_}) | {t_mlp / t_ridge:.0f}× |")


def _top1(estimator, X, Y) -> float:  # noqa: ANN001
    return retrieval_topk(estimator.transform(X), Y, ks=(1,))["top1"]


def text_quality(seeds: int) -> None:
    folder = find_realdata()
    if folder is None:
        print("text: ../shared/realdata not found; skipped")
        return
    text = load_text(folder)
    Xa, Ya = text.vectors["minilm_l6"], text.vectors["mpnet"]
    rows = {"ridge": [], "procrustes (scaled)": [], "mlp": []}
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(Xa))
        fit, test = order[:2000], order[2000:]
        X, Y, Xt, Yt = Xa[fit], Ya[fit], Xa[test], Ya[test]
        rows["ridge"].append(_top1(RidgeMap().fit(X, Y), Xt, Yt))
        rows["procrustes (scaled)"].append(_top1(ProcrustesMap().fit(X, Y), Xt, Yt))
        mlp = ResidualMLPMap(random_state=seed).fit_pairs(PairedStats.from_arrays(X, Y), X, Y)
        rows["mlp"].append(_top1(mlp, Xt, Yt))
    print(f"\nText MiniLM -> mpnet, 2,000 anchors, top-1 among 500 unseen glosses ({seeds} splits):\n")
    print("| map | " + " | ".join(f"split {s}" for s in range(seeds)) + " | mean |")
    print("|---|" + "---|" * (seeds + 1))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(values):.3f} |")


def nonlinear_quality(seeds: int) -> None:
    print("\nKnown nonlinear relation y = tanh(3 x A) B + 0.2 noise, 8 -> 32 dims, 3,000 anchors, top-1 among 1,000 new pairs:\n")
    print("| seed | ridge | mlp |")
    print("|---|---|---|")
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        A, B = rng.normal(size=(8, 8)) * 3 / np.sqrt(8), rng.normal(size=(8, 32)) / np.sqrt(8)
        X = rng.normal(size=(4000, 8))
        Y = np.tanh(X @ A) @ B + 0.2 * rng.normal(size=(4000, 32))
        ridge, mlp = RidgeMap().fit(X[:3000], Y[:3000]), ResidualMLPMap(random_state=seed).fit(X[:3000], Y[:3000])
        print(f"| {seed} | {_top1(ridge, X[3000:], Y[3000:]):.3f} | {_top1(mlp, X[3000:], Y[3000:]):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer dims and one split")
    args = parser.parse_args()
    print(f"Machine: {platform.node()} ({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d')}\n")
    fit_times([16, 128] if args.quick else [16, 128, 384, 768], 2000 if args.quick else 5000)
    text_quality(1 if args.quick else 3)
    nonlinear_quality(1 if args.quick else 3)


if __name__ == "__main__":
    main()
