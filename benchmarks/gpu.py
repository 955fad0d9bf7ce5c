"""CUDA numbers for the two GPU-shaped hot paths, recorded when a device is present.

    python benchmarks/gpu.py [--n 100000] [--d 512] [--gallery 200000]

Fits: float64 sufficient statistics (X^T X, X^T Y, Y^T Y of paired rows) accumulated chunk by
chunk, then the ridge solve, with torch on CUDA against the same code on the CPU (numpy), in
the same run. Exact search: (256, d) probes x (gallery, d) float32, top-10, torch on CUDA
against numpy + argpartition on the CPU. Without CUDA it prints ``{"skipped": ...}``.
Convergent's server does not use a GPU today; these numbers say what one would buy.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _best(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def cuda_bench(n: int, d: int, gallery: int, dim: int, chunk: int = 8192) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}
    dev = torch.device("cuda")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=np.float32)
    Y = (X @ (rng.standard_normal((d, d), dtype=np.float32) / np.sqrt(d))).astype(np.float32)

    def stats_cpu() -> None:
        xtx, xty, yty = np.zeros((d, d)), np.zeros((d, d)), np.zeros((d, d))
        for s in range(0, n, chunk):
            x, y = X[s : s + chunk].astype(np.float64), Y[s : s + chunk].astype(np.float64)
            xtx += x.T @ x
            xty += x.T @ y
            yty += y.T @ y
        np.linalg.solve(xtx + np.eye(d), xty)

    def stats_gpu() -> None:  # includes host -> device copies of every chunk
        xtx = torch.zeros((d, d), dtype=torch.float64, device=dev)
        xty, yty = torch.zeros_like(xtx), torch.zeros_like(xtx)
        for s in range(0, n, chunk):
            x = torch.from_numpy(X[s : s + chunk]).to(dev, non_blocking=True).double()
            y = torch.from_numpy(Y[s : s + chunk]).to(dev, non_blocking=True).double()
            xtx += x.T @ x
            xty += x.T @ y
            yty += y.T @ y
        torch.linalg.solve(xtx + torch.eye(d, dtype=torch.float64, device=dev), xty)
        torch.cuda.synchronize()

    G = rng.standard_normal((gallery, dim), dtype=np.float32)
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    Q = G[:256] + 0.05 * rng.standard_normal((256, dim), dtype=np.float32)
    G_dev = torch.from_numpy(G).to(dev)

    def search_cpu() -> None:
        S = Q @ G.T
        np.argpartition(S, gallery - 10, axis=1)[:, -10:]

    def search_gpu() -> None:  # probes go to the device and results come back, as a server would
        S = torch.from_numpy(Q).to(dev) @ G_dev.T
        torch.topk(S, 10, dim=1).indices.cpu()

    t_fit_cpu, t_fit_gpu = _best(stats_cpu, 2), _best(stats_gpu, 3)
    t_s_cpu, t_s_gpu = _best(search_cpu), _best(search_gpu, 10)
    return {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "fit_stats_and_solve": {"n": n, "d": d, "cpu_numpy_s": t_fit_cpu, "cuda_s": t_fit_gpu,
                                "speedup": t_fit_cpu / t_fit_gpu},
        "exact_search": {"gallery": gallery, "dim": dim, "batch": 256, "k": 10,
                         "cpu_numpy_queries_per_s": 256 / t_s_cpu, "cuda_queries_per_s": 256 / t_s_gpu,
                         "speedup": t_s_cpu / t_s_gpu},
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--gallery", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=512)
    args = p.parse_args()
    try:
        out = cuda_bench(args.n, args.d, args.gallery, args.dim)
    except ImportError:
        out = {"skipped": "torch is not installed"}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
