"""Scaling curves: fit time vs anchors n and vs dimension d; identify queries/s vs gallery size.

    .venv/bin/python benchmarks/scaling.py [--quick] [--out benchmarks]

Writes ``scaling.json`` and three PNGs (matplotlib, Agg) next to this file:

- ``fit_vs_n.png``: d = 512 -> 512, ridge with lambda chosen by GCV (13 values).
  "statistics + solve": convergent's math (float64 PairedStats accumulated in chunks of 4096,
  then RidgeMap.fit_stats), data generated chunk by chunk (not timed), up to 1M pairs.
  "server fit (cold)": the use case a FitAlignment RPC runs (Alignment.fit: statistics read
  from SQLite, held-out split, diagnostics, stored), in process, up to 200k pairs
  (uploading is what limits it). sklearn RidgeCV on in-memory arrays up to 30k pairs.
- ``fit_vs_d.png``: n = 50k pairs (20k with --quick), d = 128 ... 2048: statistics + ridge
  solve, and statistics + permutation (Hungarian) solve, in process.
- ``identify_vs_gallery.png``: ExactIndex and HnswIndex (faiss, M=32, efC=200, ef=128)
  queries/s with batches of 256, k = 10, and HNSW recall@10 against the exact result.

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed (the script re-executes itself) unless
--keep-blas-env, as in run.py.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and "--keep-blas-env" not in sys.argv and any(
    v in os.environ for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
):
    os.execve(sys.executable, [sys.executable, *sys.argv],
              {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")})

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import blas_info  # noqa: E402

CHUNK = 4096


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _chunks(n: int, d_x: int, d_y: int, seed: int, kind: str = "affine"):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((d_x, d_y), dtype=np.float32) / np.sqrt(d_x)
    perm = rng.permutation(d_x)[:d_y]
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        X = rng.standard_normal((m, d_x), dtype=np.float32)
        noise = 0.3 * rng.standard_normal((m, d_y), dtype=np.float32)
        yield X, (X @ M if kind == "affine" else X[:, perm]) + noise


def stats_and_solve(n: int, d: int, method: str) -> tuple[float, float]:
    """(seconds accumulating statistics, seconds solving), data generation excluded."""
    from convergent.server.align import PairedStats, PermutationMap, RidgeMap

    stats = PairedStats.empty(d, d)
    t_stats = 0.0
    for X, Y in _chunks(n, d, d, seed=n + d, kind="affine" if method == "ridge" else "perm"):
        t0 = time.perf_counter()
        stats.update(X, Y)
        t_stats += time.perf_counter() - t0
    t0 = time.perf_counter()
    (RidgeMap() if method == "ridge" else PermutationMap()).fit_stats(stats)
    return t_stats, time.perf_counter() - t0


def _chunk(cls, model: str, ids: list[str], V: np.ndarray):  # noqa: ANN001, ANN202
    """One whole-stream UploadChunk (marked last when the registry expects that flag)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cls)}
    extra = {"last": True} if "last" in fields else {}
    return cls(model=model, model_version=0, anchor_set="set", overwrite=False, ids=ids, vectors=V, **extra)


def server_fit(n: int, d: int, work: Path) -> dict:
    """Upload n pairs through the registry (in process) and time a cold Alignment.fit."""
    from convergent.server.registry.alignment import Alignment
    from convergent.server.registry.service import Registry, UploadChunk
    from convergent.server.settings import ServerSettings
    from convergent.server.storage.sql import SqlStore

    folder = Path(tempfile.mkdtemp(dir=work))
    settings = ServerSettings(data_dir=folder)
    store = SqlStore(settings.resolved_database_url())
    try:
        registry, alignment = Registry(store, settings), Alignment(store, settings)
        for name in ("s", "t"):
            registry.register_model("default", name, d, False)
        t0 = time.perf_counter()
        start = 0
        for X, Y in _chunks(n, d, d, seed=n + d):
            ids = [f"a{i:08d}" for i in range(start, start + len(X))]
            start += len(X)
            for name, V in (("s", X), ("t", Y)):
                registry.upload_anchors("default", [_chunk(UploadChunk, name, ids, V)])
        t_upload = time.perf_counter() - t0
        alignment.stats_cache._entries.clear()
        t0 = time.perf_counter()
        alignment.fit("default", "s", "t", "set", "ridge", {})
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        alignment.fit("default", "s", "t", "set", "ridge", {})
        t_warm = time.perf_counter() - t0
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)
    return {"cold_s": t_cold, "warm_s": t_warm, "upload_s": t_upload}


def sklearn_ridgecv(n: int, d: int) -> float:
    from sklearn.linear_model import RidgeCV

    X, Y = map(np.vstack, zip(*_chunks(n, d, d, seed=n + d)))
    scale = float(X.var(axis=0).sum()) * n / d
    t0 = time.perf_counter()
    RidgeCV(alphas=np.logspace(-6, 6, 13) * scale).fit(X, Y)
    return time.perf_counter() - t0


def fit_vs_n(ns: list[int], store_cap: int, sklearn_cap: int, work: Path) -> list[dict]:
    rows = []
    for n in ns:
        row = {"n": n}
        row["stats_s"], row["solve_s"] = stats_and_solve(n, 512, "ridge")
        if n <= store_cap:
            row["server"] = server_fit(n, 512, work)
        if n <= sklearn_cap:
            row["sklearn_ridgecv_s"] = sklearn_ridgecv(n, 512)
        log(f"fit vs n: {row}")
        rows.append(row)
    return rows


def fit_vs_d(n: int, ds: list[int]) -> list[dict]:
    rows = []
    for d in ds:
        row = {"d": d, "n": n}
        row["ridge_stats_s"], row["ridge_solve_s"] = stats_and_solve(n, d, "ridge")
        row["perm_stats_s"], row["perm_solve_s"] = stats_and_solve(n, d, "permutation")
        log(f"fit vs d: {row}")
        rows.append(row)
    return rows


def identify_vs_gallery(sizes: list[int], hnsw_cap: int, dim: int = 512, batches: int = 4) -> list[dict]:
    from convergent.server.inference import ExactIndex, HnswIndex

    rows = []
    rng = np.random.default_rng(11)
    for n in sizes:
        G = rng.standard_normal((n, dim), dtype=np.float32)
        G /= np.linalg.norm(G, axis=1, keepdims=True)
        ids = [f"g{i:08d}" for i in range(n)]
        Q = G[rng.choice(n, 256 * batches, replace=False)] + 0.3 * rng.standard_normal((256 * batches, dim), dtype=np.float32)
        Q /= np.linalg.norm(Q, axis=1, keepdims=True)
        row: dict = {"gallery": n}
        exact = ExactIndex(dim)
        exact.add(ids, G)
        exact.search(Q[:256], 10)  # warm-up
        t0 = time.perf_counter()
        truth = [exact.search(Q[s : s + 256], 10)[0] for s in range(0, len(Q), 256)]
        row["exact_qps"] = len(Q) / (time.perf_counter() - t0)
        if n <= hnsw_cap:
            hnsw = HnswIndex(dim)
            t0 = time.perf_counter()
            hnsw.add(ids, G)
            row["hnsw_build_s"] = time.perf_counter() - t0
            hnsw.search(Q[:256], 10)
            t0 = time.perf_counter()
            got = [hnsw.search(Q[s : s + 256], 10)[0] for s in range(0, len(Q), 256)]
            row["hnsw_qps"] = len(Q) / (time.perf_counter() - t0)
            hits = sum(len(set(a) & set(b)) for ta, tb in zip(truth, got) for a, b in zip(ta, tb))
            row["hnsw_recall_at_10"] = hits / (len(Q) * 10)
        log(f"identify vs gallery: {row}")
        rows.append(row)
        del G
    return rows


def _finish(fig, ax, path: Path) -> str:  # noqa: ANN001
    """Grid, legend, layout; save ``path``; returns its file name."""
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def plot(out: dict, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    rows = out["fit_vs_n"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ns = [r["n"] for r in rows]
    ax.plot(ns, [r["stats_s"] + r["solve_s"] for r in rows], "o-", label="statistics + GCV ridge solve (in process)")
    srv = [r for r in rows if "server" in r]
    ax.plot([r["n"] for r in srv], [r["server"]["cold_s"] for r in srv], "s-", label="server fit, cold (SQLite -> statistics -> fit)")
    ax.plot([r["n"] for r in srv], [r["server"]["warm_s"] for r in srv], "^-", label="server fit, statistics cached")
    sk = [r for r in rows if "sklearn_ridgecv_s" in r]
    ax.plot([r["n"] for r in sk], [r["sklearn_ridgecv_s"] for r in sk], "x--", label="sklearn RidgeCV, in memory")
    ax.set(xscale="log", yscale="log", xlabel="paired anchors n (d = 512 -> 512)", ylabel="seconds",
           title="Ridge fit time vs n")
    files.append(_finish(fig, ax, folder / "fit_vs_n.png"))

    rows = out["fit_vs_d"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ds = [r["d"] for r in rows]
    ax.plot(ds, [r["ridge_stats_s"] for r in rows], "o-", label="statistics (float64 X^T X, X^T Y, Y^T Y)")
    ax.plot(ds, [r["ridge_solve_s"] for r in rows], "s-", label="ridge solve (eigh + 13-alpha GCV)")
    ax.plot(ds, [r["perm_solve_s"] for r in rows], "^-", label="permutation solve (corr + Hungarian)")
    ax.set(xscale="log", yscale="log", xlabel=f"dimension d (n = {rows[0]['n']:,})", ylabel="seconds",
           title="Fit time vs d")
    ax.set_xticks(ds, [str(d) for d in ds])
    files.append(_finish(fig, ax, folder / "fit_vs_d.png"))

    rows = out["identify_vs_gallery"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot([r["gallery"] for r in rows], [r["exact_qps"] for r in rows], "o-", label="exact")
    hn = [r for r in rows if "hnsw_qps" in r]
    ax.plot([r["gallery"] for r in hn], [r["hnsw_qps"] for r in hn], "s-", label="hnsw (faiss M=32, ef=128)")
    for r in hn:
        ax.annotate(f"recall {r['hnsw_recall_at_10']:.2f}", (r["gallery"], r["hnsw_qps"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    ax.set(xscale="log", yscale="log", xlabel="gallery size (d = 512)", ylabel="queries / s (batches of 256, k = 10)",
           title="Identify throughput vs gallery size (in process)")
    files.append(_finish(fig, ax, folder / "identify_vs_gallery.png"))
    plt.close("all")
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    p.add_argument("--keep-blas-env", action="store_true")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="convergent-scaling-"))
    if args.quick:
        cfg = dict(ns=[10_000, 30_000], store_cap=30_000, sklearn_cap=10_000, d_n=20_000, ds=[128, 256, 512],
                   sizes=[10_000, 30_000], hnsw_cap=10_000)
    else:
        cfg = dict(ns=[10_000, 30_000, 100_000, 300_000, 1_000_000], store_cap=200_000, sklearn_cap=30_000,
                   d_n=50_000, ds=[128, 256, 512, 1024, 2048], sizes=[10_000, 30_000, 100_000, 200_000, 500_000],
                   hnsw_cap=30_000)
    started = time.time()
    try:
        out = {
            "date": time.strftime("%Y-%m-%d"), "config": cfg, "blas": blas_info(),
            "fit_vs_n": fit_vs_n(cfg["ns"], cfg["store_cap"], cfg["sklearn_cap"], work),
            "fit_vs_d": fit_vs_d(cfg["d_n"], cfg["ds"]),
            "identify_vs_gallery": identify_vs_gallery(cfg["sizes"], cfg["hnsw_cap"]),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["elapsed_s"] = time.time() - started
    args.out.mkdir(parents=True, exist_ok=True)
    out["plots"] = plot(out, args.out)
    (args.out / "scaling.json").write_text(json.dumps(out, indent=2, default=float))
    log(f"wrote {args.out / 'scaling.json'} and {out['plots']} in {out['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()
