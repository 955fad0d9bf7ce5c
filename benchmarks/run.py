"""convergent's hot paths as ratios to the leanest implementation, timed in the same run.

    .venv/bin/python benchmarks/run.py [--quick | --smoke] [--json PATH] [--only ingest,fit,...]

Every key is the median over interleaved rounds (after a warm-up) of a per-round ratio,
plus its min and max; each round times convergent and its baseline back to back, in
alternating order, so machine noise hits both alike. Memory figures use fresh processes.

| key                    | convergent path (server in another process)            | baseline, same run                       |
|------------------------|--------------------------------------------------------|------------------------------------------|
| ingest_ratio (higher better: convergent / baseline throughput) | SDK upload_anchors | minimal servicer: chunk -> one SQLite blob |
| fit_affine_ratio       | fit_alignment(method="ridge"), statistics rebuilt from the stored pairs | sklearn RidgeCV(13 alphas) in memory |
| fit_permutation_ratio  | fit_alignment(method="permutation"), rebuilt likewise  | corrcoef + linear_sum_assignment in memory |
| identify_ratio         | identify, exact gallery, batches of 256, k=10          | minimal servicer: numpy matmul + argpartition |
| transform_ratio        | transform, batches of 1024                             | minimal servicer: numpy matmul           |
| csls_identify_ratio    | identify through a fit, scoring="csls", exact gallery  | the same identify with scoring="cosine" (same server) |
| fit_memory_growth      | peak RSS of a fresh server fitting n_big pairs / n_small - 1 | -                                  |

Times are convergent / baseline (lower better) except ingest. The OpenBLAS overrides
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed from this run's environment (servers,
baselines and this process alike: the script re-executes itself) unless --keep-blas-env.
"""

from __future__ import annotations

import os
import sys

# --- the environment must be settled before numpy loads its BLAS ----------------------
if __name__ == "__main__" and "--keep-blas-env" not in sys.argv and any(
    v in os.environ for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["CONVERGENT_BENCH_REMOVED_BLAS_ENV"] = ",".join(
        f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ
    )
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    bench_env, blas_info, fmt_ratio, start_baseline, start_convergent, summary, timed,
)

from convergent.client import Client  # noqa: E402

TARGETS = {
    "ingest_ratio": (">=", 0.7),
    "fit_affine_ratio": ("<=", 1.0),
    "fit_permutation_ratio": ("<=", 1.0),
    "identify_ratio": ("<=", 1.3),
    "transform_ratio": ("<=", 1.3),
    "csls_identify_ratio": ("<=", 1.1),
    "fit_memory_growth": ("<", 0.10),
}

FULL = dict(rounds=5, ingest_n=100_000, fit_n=100_000, fit_d=512, perm_n=100_000, perm_d=1024,
            gallery_n=200_000, id_batches=8, tf_batches=20, mem_small=10_000, mem_big=200_000, mem_rounds=2,
            csls_n=100_000)
QUICK = dict(rounds=3, ingest_n=20_000, fit_n=20_000, fit_d=256, perm_n=20_000, perm_d=256,
             gallery_n=20_000, id_batches=4, tf_batches=8, mem_small=10_000, mem_big=40_000, mem_rounds=1,
             csls_n=20_000)
# --smoke: every step once at toy sizes, to check the script runs (tests/packaging); its ratios mean nothing.
SMOKE = dict(rounds=1, ingest_n=2_000, fit_n=2_000, fit_d=64, perm_n=2_000, perm_d=64,
             gallery_n=2_000, id_batches=2, tf_batches=2, mem_small=1_000, mem_big=4_000, mem_rounds=1,
             csls_n=2_000)
DIM = 512  # ingest, identify and transform dimension


def interleaved(r: int, run_convergent, run_baseline) -> tuple:  # noqa: ANN001
    """(convergent's result, the baseline's) of round ``r``; who runs first alternates by round,
    so neither always meets the caches (or the machine's load) the other left."""
    if r % 2:
        first = run_convergent()
        return first, run_baseline()
    second = run_baseline()
    return run_convergent(), second


def ids_for(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:07d}" for i in range(n)]


def pairs(n: int, d_x: int, d_y: int, seed: int, kind: str = "affine") -> tuple[np.ndarray, np.ndarray]:
    """Synthetic paired embeddings: an affine map plus noise, or a signed unit permutation."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d_x), dtype=np.float32)
    if kind == "affine":
        M = rng.standard_normal((d_x, d_y), dtype=np.float32) / np.sqrt(d_x)
        Y = X @ M + 0.3 * rng.standard_normal((n, d_y), dtype=np.float32) + 0.1
    else:
        perm = rng.permutation(d_x)[:d_y]
        signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), d_y)
        Y = X[:, perm] * signs + 0.5 * rng.standard_normal((n, d_y), dtype=np.float32)
    return X, Y.astype(np.float32)


def upload_pairs(c: Client, src: str, tgt: str, anchor_set: str, X: np.ndarray, Y: np.ndarray, ids: list[str]) -> None:
    for name, V in ((src, X), (tgt, Y)):
        try:
            c.register_model(name, dim=V.shape[1], normalize=False)
        except Exception:  # noqa: BLE001 - already registered in this data folder
            pass
        c.upload_anchors(name, anchor_set=anchor_set, ids=ids, vectors=V, chunk_size=512)


def invalidate_stats(c: Client, src: str, anchor_set: str, first_id: str, first_x: np.ndarray) -> None:
    """Delete and re-add one anchor: a destructive change, so the server's cached statistics
    of the pair are dropped and the next fit streams every stored pair again (a cold fit)."""
    c.delete_anchors(src, anchor_set, [first_id])
    c.upload_anchors(src, anchor_set=anchor_set, ids=[first_id], vectors=first_x[None, :])


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cfg = dict(SMOKE if args.smoke else QUICK if args.quick else FULL)
        if args.rounds:
            self.cfg["rounds"] = args.rounds
        self.env = bench_env(args.keep_blas_env)
        self.work = Path(tempfile.mkdtemp(prefix="convergent-bench-", dir=args.workdir))
        self.results: dict = {}
        self.absolute: dict = {}
        self.servers: list = []

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def server(self, name: str):  # noqa: ANN201
        s = start_convergent(self.work / name, self.env)
        self.servers.append(s)
        return s

    def baseline(self, mode: str, **opts):  # noqa: ANN003, ANN201
        s = start_baseline(mode, self.env, **opts)
        self.servers.append(s)
        return s

    def record(self, key: str, ratios: list[float], **extra) -> None:  # noqa: ANN003
        op, target = TARGETS[key]
        entry = summary(ratios)
        m = entry["median"]
        holds = m >= target if op == ">=" else (m <= target if op == "<=" else m < target)
        entry.update(rounds=[round(r, 4) for r in ratios], target=f"{op} {target}", holds=bool(holds), **extra)
        self.results[key] = entry
        self.log(f"{key}: {fmt_ratio(entry)} (target {op} {target}: {'holds' if holds else 'MISSED'})")

    def rounds(self):  # noqa: ANN201
        """Round numbers; round 0 is the warm-up and is not recorded."""
        return range(self.cfg["rounds"] + 1)

    # ------------------------------------------------------------------ ingest
    def ingest(self) -> None:
        n = self.cfg["ingest_n"]
        X = np.random.default_rng(1).standard_normal((n, DIM), dtype=np.float32)
        srv, base = self.server("ingest"), self.baseline("ingest", data_dir=self.work / "ingest-baseline")
        ratios, conv_t, base_t = [], [], []
        with Client(srv.address, timeout=600) as c, Client(base.address, timeout=600) as b:
            c.wait_until_serving()
            c.register_model("ing", dim=DIM, normalize=False)
            for r in self.rounds():
                ids = ids_for(f"r{r}-", n)

                def run_c() -> float:
                    return timed(c.upload_anchors, "ing", anchor_set=f"ing{r}", ids=ids, vectors=X, chunk_size=512)[0]

                def run_b() -> float:
                    return timed(b.upload_anchors, "ing", anchor_set=f"ing{r}", ids=ids, vectors=X, chunk_size=512)[0]

                tc, tb = interleaved(r, run_c, run_b)
                if r:
                    ratios.append(tb / tc)
                    conv_t.append(tc)
                    base_t.append(tb)
        # in-process: the same bytes into SQLite blobs, no gRPC
        import sqlite3

        path = self.work / "inproc.sqlite3"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE c (data BLOB)")
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO c VALUES (?)", ((X[s : s + 512].tobytes(),) for s in range(0, n, 512)))
        conn.execute("COMMIT")
        t_inproc = time.perf_counter() - t0
        conn.close()
        srv.stop()
        base.stop()
        self.record("ingest_ratio", ratios, n_vectors=n, dim=DIM, chunk_size=512)
        self.absolute["ingest"] = {
            "convergent_vectors_per_s": n / float(np.median(conv_t)),
            "baseline_vectors_per_s": n / float(np.median(base_t)),
            "in_process_sqlite_blob_vectors_per_s": n / t_inproc,
        }

    # ------------------------------------------------------------------ fits
    def _fit_bench(self, key: str, method: str, n: int, d: int, kind: str, baseline) -> None:  # noqa: ANN001
        X, Y = pairs(n, d, d, seed=2 if kind == "affine" else 3, kind=kind)
        ids = ids_for("a", n)
        srv = self.server(f"fit-{method}")
        src, tgt, aset = f"src{d}", f"tgt{d}", f"{method}{n}"
        cold, warm, base, fit_seconds = [], [], [], []
        with Client(srv.address, timeout=600) as c:
            c.wait_until_serving()
            t_up, _ = timed(upload_pairs, c, src, tgt, aset, X, Y, ids)
            self.log(f"{key}: uploaded {n} pairs of d={d} in {t_up:.1f} s")
            last = None
            for r in self.rounds():
                def run_conv() -> tuple[float, float]:
                    nonlocal last
                    invalidate_stats(c, src, aset, ids[0], X[0])
                    t_cold, info = timed(c.fit_alignment, src, tgt, aset, method=method)
                    t_warm, last = timed(c.fit_alignment, src, tgt, aset, method=method)
                    fit_seconds.append(info.metrics["fit_seconds"])
                    return t_cold, t_warm

                def run_base() -> float:
                    return timed(baseline, X, Y)[0]

                (tc, tw), tb = interleaved(r, run_conv, run_base)
                if r:
                    cold.append(tc)
                    warm.append(tw)
                    base.append(tb)
            self.last_fit = (c.export_fit(last.id), last) if method == "ridge" else getattr(self, "last_fit", None)
        srv.stop()
        ratios = [a / b for a, b in zip(cold, base)]
        warm_ratios = [a / b for a, b in zip(warm, base)]
        self.record(key, ratios, n_pairs=n, dim=d, path="cold: statistics rebuilt from all stored pairs",
                    warm_cache={**summary(warm_ratios), "rounds": [round(x, 4) for x in warm_ratios]})
        self.absolute[key.removesuffix("_ratio")] = {
            "convergent_cold_fit_s": float(np.median(cold)),
            "convergent_warm_fit_s": float(np.median(warm)),
            "convergent_server_fit_seconds_metric": float(np.median(fit_seconds[1:] or fit_seconds)),
            "baseline_s": float(np.median(base)),
            "convergent_cold_fits_per_s": 1 / float(np.median(cold)),
            "upload_s": t_up,
        }

    def fit_affine(self) -> None:
        from sklearn.linear_model import RidgeCV

        def ridgecv(X: np.ndarray, Y: np.ndarray) -> None:
            scale = float(X.var(axis=0).sum()) * len(X) / X.shape[1]
            RidgeCV(alphas=np.logspace(-6, 6, 13) * scale).fit(X, Y)

        n, d = self.cfg["fit_n"], self.cfg["fit_d"]
        self._fit_bench("fit_affine_ratio", "ridge", n, d, "affine", ridgecv)
        # the in-process numpy time of the same solve: normal equations + Cholesky (13 alphas)
        X, Y = pairs(n, d, d, seed=2)
        t, _ = timed(_numpy_ridge, X, Y)
        self.absolute["fit_affine"]["in_process_numpy_normal_equations_s"] = t

    def fit_permutation(self) -> None:
        self._fit_bench("fit_permutation_ratio", "permutation", self.cfg["perm_n"], self.cfg["perm_d"],
                        "permutation", _numpy_permutation)

    # ------------------------------------------------------------------ identify
    def identify(self) -> None:
        n, k, batch = self.cfg["gallery_n"], 10, 256
        rng = np.random.default_rng(4)
        G = rng.standard_normal((n, DIM), dtype=np.float32)
        G /= np.linalg.norm(G, axis=1, keepdims=True)
        gids = ids_for("g", n)
        np.save(self.work / "gallery.npy", G)
        np.save(self.work / "gallery_ids.npy", np.array(gids))
        nb = self.cfg["id_batches"]
        probes = G[rng.choice(n, nb * batch, replace=False)] + 0.05 * rng.standard_normal((nb * batch, DIM), dtype=np.float32)
        srv = self.server("identify")
        base = self.baseline("identify", gallery=self.work / "gallery.npy", ids=self.work / "gallery_ids.npy")
        ratios, tc_all, tb_all = [], [], []
        with Client(srv.address, timeout=600) as c, Client(base.address, timeout=600) as b:
            c.wait_until_serving()
            c.register_model("face", dim=DIM, normalize=True)
            t_enroll, _ = timed(c.enroll, "g", model="face", ids=gids, vectors=G, index="exact", chunk_size=512)
            self.log(f"identify: enrolled {n} in {t_enroll:.1f} s")
            agree = None
            for r in self.rounds():
                def run(client: Client) -> tuple[float, list]:
                    out = []
                    t0 = time.perf_counter()
                    for s in range(0, len(probes), batch):
                        out.append(client.identify("g", probes[s : s + batch], model="face", k=k))
                    return time.perf_counter() - t0, out

                (tc, oc), (tb, ob) = interleaved(r, lambda: run(c), lambda: run(b))
                if agree is None:
                    agree = float(np.mean([a.ids == bb.ids for a, bb in zip(oc, ob)]))
                if r:
                    ratios.append(tc / tb)
                    tc_all.append(tc)
                    tb_all.append(tb)
        srv.stop()
        base.stop()
        # in-process numpy: the same search, no gRPC
        Q = probes[:batch] / np.linalg.norm(probes[:batch], axis=1, keepdims=True)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            S = Q @ G.T
            top = np.argpartition(S, n - k, axis=1)[:, -k:]
            np.take_along_axis(S, top, axis=1)
            times.append(time.perf_counter() - t0)
        nq = len(probes)
        self.record("identify_ratio", ratios, gallery=n, dim=DIM, batch=batch, k=k, same_top_ids_fraction=agree)
        self.absolute["identify"] = {
            "convergent_queries_per_s": nq / float(np.median(tc_all)),
            "baseline_queries_per_s": nq / float(np.median(tb_all)),
            "in_process_numpy_queries_per_s": batch / min(times),
            "enroll_s": t_enroll,
        }

    # ------------------------------------------------------------------ CSLS
    def csls(self) -> None:
        """Identify through a Procrustes fit (128 -> 128, 2,000 anchors): CSLS vs cosine scoring,
        same server, same probes, interleaved rounds. Round 0 (excluded) pays the corrected
        index's build after the enrolment; that cost is reported apart."""
        n, d, batch, k = self.cfg["csls_n"], 128, 256, 10
        rng = np.random.default_rng(5)
        R, _ = np.linalg.qr(rng.standard_normal((d, d)))
        A = rng.standard_normal((2000, d)).astype(np.float32)
        G = rng.standard_normal((n, d)).astype(np.float32)
        probes = (G[rng.choice(n, self.cfg["id_batches"] * batch, replace=False)] @ R.T
                  + 0.1 * rng.standard_normal((self.cfg["id_batches"] * batch, d))).astype(np.float32)
        srv = self.server("csls")
        ratios = []
        with Client(srv.address, timeout=600) as c:
            c.wait_until_serving()
            upload_pairs(c, "src", "tgt", "a", A @ R.T, A, [f"a{i}" for i in range(len(A))])  # src -> tgt is R^T
            fit = c.fit_alignment("src", "tgt", "a", method="procrustes")
            c.enroll(gallery="g", model="tgt", ids=[f"g{i}" for i in range(n)], vectors=G, index="exact", chunk_size=2048)
            t_first, _ = timed(c.identify, "g", probes[:1], model="src", k=k, fit_id=fit.id, scoring="csls")

            def run(scoring: str) -> float:
                t0 = time.perf_counter()
                for s in range(0, len(probes), batch):
                    c.identify("g", probes[s : s + batch], model="src", k=k, fit_id=fit.id, scoring=scoring)
                return time.perf_counter() - t0

            for r in self.rounds():
                t_csls, t_cos = interleaved(r, lambda: run("csls"), lambda: run("cosine"))
                if r:
                    ratios.append(t_csls / t_cos)
        srv.stop()
        self.record("csls_identify_ratio", ratios, gallery=n, dim=d, batch=batch, k=k, anchors=2000)
        self.absolute["csls"] = {"first_csls_identify_after_enroll_s": t_first}

    # ------------------------------------------------------------------ transform
    def transform(self) -> None:
        d, n_tf, batch = DIM, self.cfg["tf_batches"], 1024
        srv = self.server("transform")
        with Client(srv.address, timeout=600) as c:
            c.wait_until_serving()
            X, Y = pairs(5000, d, d, seed=5)
            upload_pairs(c, "ts", "tt", "tf", X, Y, ids_for("t", len(X)))
            fit = c.fit_alignment("ts", "tt", "tf", method="ridge")
            maps = c.export_fit(fit.id)
            np.save(self.work / "W.npy", maps["W"])
            np.save(self.work / "b.npy", maps["b"])
            base = self.baseline("transform", w=self.work / "W.npy", b=self.work / "b.npy")
            probes = np.random.default_rng(6).standard_normal((n_tf * batch, d), dtype=np.float32)
            ratios, tc_all, tb_all = [], [], []
            with Client(base.address, timeout=600) as b:
                for r in self.rounds():
                    def run(client: Client) -> tuple[float, list]:
                        out = []
                        t0 = time.perf_counter()
                        for s in range(0, len(probes), batch):
                            out.append(client.transform(probes[s : s + batch], source="ts", target="tt"))
                        return time.perf_counter() - t0, out

                    (tc, oc), (tb, ob) = interleaved(r, lambda: run(c), lambda: run(b))
                    if r == 0:
                        err = float(max(np.abs(a - bb).max() for a, bb in zip(oc, ob)))
                    if r:
                        ratios.append(tc / tb)
                        tc_all.append(tc)
                        tb_all.append(tb)
        srv.stop()
        base.stop()
        W32, b32 = maps["W"].astype(np.float32).T.copy(), maps["b"].astype(np.float32)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            probes[:batch] @ W32 + b32
            times.append(time.perf_counter() - t0)
        nv = len(probes)
        self.record("transform_ratio", ratios, batch=batch, dim=d, max_abs_diff_vs_baseline=err)
        self.absolute["transform"] = {
            "convergent_vectors_per_s": nv / float(np.median(tc_all)),
            "baseline_vectors_per_s": nv / float(np.median(tb_all)),
            "convergent_calls_per_s": nv / batch / float(np.median(tc_all)),
            "in_process_numpy_vectors_per_s": batch / min(times),
        }

    # ------------------------------------------------------------------ memory
    def memory(self) -> None:
        small, big, d = self.cfg["mem_small"], self.cfg["mem_big"], 512
        data = self.work / "memory"
        X, Y = pairs(big, d, d, seed=7)
        ids = ids_for("m", big)
        srv = start_convergent(data, self.env)
        with Client(srv.address, timeout=600) as c:
            c.wait_until_serving()
            upload_pairs(c, "ms", "mt", "small", X[:small], Y[:small], ids[:small])
            upload_pairs(c, "ms", "mt", "big", X, Y, ids)
        srv.stop()
        del X, Y
        peaks: dict[str, list[int]] = {"small": [], "big": []}
        idle: list[int] = []
        for _ in range(self.cfg["mem_rounds"]):
            for name in ("small", "big"):
                s = start_convergent(data, self.env)
                with Client(s.address, timeout=600) as c:
                    c.wait_until_serving()
                    idle.append(s.status("VmRSS"))
                    c.fit_alignment("ms", "mt", name, method="ridge")
                    peaks[name].append(s.status("VmHWM"))
                s.stop()
        growth = [b / a - 1 for a, b in zip(peaks["small"], peaks["big"])]
        self.record("fit_memory_growth", growth, n_small=small, n_big=big, dim=d,
                    peak_rss_small_mib=float(np.median(peaks["small"])) / 2**20,
                    peak_rss_big_mib=float(np.median(peaks["big"])) / 2**20,
                    idle_rss_mib=float(np.median(idle)) / 2**20,
                    raw_pairs_big_mib=big * d * 4 * 2 / 2**20)

    # ------------------------------------------------------------------ GPU
    def gpu(self) -> None:
        try:
            import torch
        except ImportError:
            self.absolute["cuda"] = {"skipped": "torch is not installed"}
            return
        if not torch.cuda.is_available():
            self.absolute["cuda"] = {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}
            self.log("cuda: skipped (no device)")
            return
        from gpu import cuda_bench

        self.absolute["cuda"] = cuda_bench(self.cfg["fit_n"], self.cfg["fit_d"], self.cfg["gallery_n"], DIM)

    # ------------------------------------------------------------------ driver
    def run(self, only: list[str]) -> dict:
        steps = {"ingest": self.ingest, "fit": self.fit_affine, "permutation": self.fit_permutation,
                 "identify": self.identify, "csls": self.csls, "transform": self.transform, "memory": self.memory,
                 "gpu": self.gpu}
        started = time.time()
        try:
            for name, step in steps.items():
                if not only or name in only:
                    self.log(f"--- {name}")
                    step()
        finally:
            for s in self.servers:
                s.stop()
            shutil.rmtree(self.work, ignore_errors=True)
        return {
            "date": time.strftime("%Y-%m-%d"),
            "mode": "smoke" if self.args.smoke else "quick" if self.args.quick else "full",
            "config": self.cfg,
            "elapsed_s": time.time() - started,
            "machine": {
                "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                "numpy": np.__version__, "cpu": _cpu_name(), "blas": blas_info(),
                "removed_env": os.environ.get("CONVERGENT_BENCH_REMOVED_BLAS_ENV", ""),
            },
            **self.results,
            "absolute": self.absolute,
        }


def _numpy_ridge(X: np.ndarray, Y: np.ndarray) -> None:
    """The leanest in-process ridge: centred normal equations in float64, Cholesky per alpha."""
    from scipy.linalg import cho_factor, cho_solve

    Xc = (X - X.mean(0)).astype(np.float64)
    Yc = (Y - Y.mean(0)).astype(np.float64)
    A, B = Xc.T @ Xc, Xc.T @ Yc
    scale = np.trace(A) / A.shape[0]
    for a in np.logspace(-6, 6, 13) * scale:
        cho_solve(cho_factor(A + a * np.eye(A.shape[0])), B)


def _numpy_permutation(X: np.ndarray, Y: np.ndarray) -> None:
    """In-process unit matching: correlation matrix + Hungarian (scipy), float32 arrays."""
    from scipy.optimize import linear_sum_assignment

    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    C = (Xc.T @ Yc) / np.outer(np.linalg.norm(Xc, axis=0), np.linalg.norm(Yc, axis=0))
    linear_sum_assignment(np.abs(C), maximize=True)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_table(out: dict) -> None:
    kernels = ", ".join(
        f"{b.get('prefix')} {b.get('version')} {b.get('architecture', '')}".strip()
        for b in out["machine"]["blas"] if b.get("user_api") == "blas"
    )
    print(f"\nconvergent benchmarks ({out['mode']}, {out['date']}, {out['machine']['cpus']} CPUs, BLAS: {kernels})")
    print(f"{'key':24} {'median (min-max)':24} {'target':8} {'holds'}")
    for key in TARGETS:
        if key in out:
            e = out[key]
            print(f"{key:24} {fmt_ratio(e):24} {e['target']:8} {'yes' if e['holds'] else 'NO'}")
            if "warm_cache" in e:
                print(f"{'  (statistics cached)':24} {fmt_ratio(e['warm_cache']):24}")
    for name, values in out["absolute"].items():
        shown = ", ".join(f"{k}={v:,.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        print(f"  {name}: {shown}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds (< 3 minutes)")
    p.add_argument("--smoke", action="store_true", help="toy sizes, one round: checks the script runs (ratios mean nothing)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--only", default="", help="comma-separated: ingest,fit,permutation,identify,csls,transform,memory,gpu")
    p.add_argument("--rounds", type=int, default=0, help="override the number of rounds")
    p.add_argument("--workdir", default=None, help="where temporary data folders go")
    p.add_argument("--keep-blas-env", action="store_true", help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    args = p.parse_args()
    out = Bench(args).run([s for s in args.only.split(",") if s])
    print_table(out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
