"""Storage scaling: upload rate, cold and cached fit time and peak memory vs anchors n (d = 512).

    .venv/bin/python benchmarks/storage_scaling.py [--quick] [--ns 10000,100000,1000000] [--out benchmarks]

For each n, in fresh processes on one SQLite file (convergent's own use cases, no gRPC):

1. upload n source and n target vectors (512-d float32) through ``Registry.upload_anchors`` in
   uploads of 100k vectors (one transaction each; the SDK would send chunks of 512);
2. in a new process: a cold ``permutation`` fit (cross products, float32 gemm), the same fit
   again (statistics cached), then a cold ``ridge`` fit (full float64 statistics: the cross
   products do not serve it) and again cached; peak RSS (``ru_maxrss``) after each pair of fits.

Writes ``storage_scaling.json`` and ``storage_scaling.png``. OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE are removed (the script re-executes itself), as in run.py.
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
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

D = 512
UPLOAD = 100_000  # vectors per upload (one transaction)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _open(folder: Path):  # noqa: ANN202
    from convergent.server.registry.alignment import Alignment
    from convergent.server.registry.service import Registry
    from convergent.server.settings import ServerSettings
    from convergent.server.storage.sql import SqlStore

    settings = ServerSettings(data_dir=folder, max_vectors_per_tenant=None)
    store = SqlStore(settings.resolved_database_url())
    return store, Registry(store, settings), Alignment(store, settings)


def upload(folder: Path, n: int) -> dict:
    """Child: upload n pairs (a unit permutation plus noise, so both methods fit something real)."""
    from convergent.server.registry.service import UploadChunk

    store, registry, _ = _open(folder)
    rng = np.random.default_rng(n)
    perm = rng.permutation(D)
    for name in ("s", "t"):
        registry.register_model("default", name, D, False)
    seconds = 0.0
    for start in range(0, n, UPLOAD):
        m = min(UPLOAD, n - start)
        X = rng.standard_normal((m, D), dtype=np.float32)
        Y = X[:, perm] + np.float32(0.1) * rng.standard_normal((m, D), dtype=np.float32)
        ids = [f"a{i:08d}" for i in range(start, start + m)]
        for name, V in (("s", X), ("t", Y)):
            chunks = [UploadChunk(model=name if k == 0 else "", model_version=0, anchor_set="set" if k == 0 else "",
                                  overwrite=False, ids=ids[k : k + 4096], vectors=V[k : k + 4096],
                                  last=k + 4096 >= m) for k in range(0, m, 4096)]
            t0 = time.perf_counter()
            registry.upload_anchors("default", chunks)
            seconds += time.perf_counter() - t0
    store.close()
    return {"upload_s": seconds, "upload_vectors_per_s": 2 * n / seconds}


def fits(folder: Path) -> dict:
    """Child: cold and cached fits of both kinds of statistics, with peak RSS."""
    store, _, alignment = _open(folder)
    out: dict = {}
    for method in ("permutation", "ridge"):
        for phase in ("cold", "cached"):
            t0 = time.perf_counter()
            alignment.fit("default", "s", "t", "set", method, {})
            out[f"{method}_{phase}_s"] = time.perf_counter() - t0
        out[f"{method}_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["file_mib"] = sum(p.stat().st_size for p in folder.glob("*.sqlite3*")) / 2**20
    store.close()
    return out


def _child(step: str, folder: Path, n: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", step, "--folder", str(folder), "--n", str(n)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in rows]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, style, label in (("permutation_cold_s", "o-", "permutation, cold (cross products, float32)"),
                              ("permutation_cached_s", "o--", "permutation, statistics cached"),
                              ("ridge_cold_s", "s-", "ridge, cold (float64 statistics)"),
                              ("ridge_cached_s", "s--", "ridge, statistics cached"),
                              ("upload_s", "^-", f"upload of 2 x n vectors (uploads of {UPLOAD:,})")):
        ax.plot(ns, [r[key] for r in rows], style, label=label)
    ax.set(xscale="log", yscale="log", xlabel="paired anchors n (d = 512)", ylabel="seconds",
           title="Upload and fit time vs n (SQLite, in process)")
    bx.plot(ns, [r["permutation_peak_rss_mib"] for r in rows], "o-", label="peak RSS after the permutation fits")
    bx.plot(ns, [r["ridge_peak_rss_mib"] for r in rows], "s-", label="peak RSS after the ridge fits too")
    bx.plot(ns, [2 * n * D * 4 / 2**20 for n in ns], "k:", label="raw pairs (float32)")
    bx.set(xscale="log", yscale="log", xlabel="paired anchors n (d = 512)", ylabel="MiB",
           title="Fit process memory vs n")
    for a in (ax, bx):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--ns", default="")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep-blas-env", action="store_true")
    p.add_argument("--child", choices=("upload", "fits"))
    p.add_argument("--folder", type=Path)
    p.add_argument("--n", type=int)
    args = p.parse_args()
    if args.child:
        print(json.dumps(upload(args.folder, args.n) if args.child == "upload" else fits(args.folder)))
        return
    ns = [int(x) for x in args.ns.split(",")] if args.ns else (
        [10_000, 30_000] if args.quick else [10_000, 30_000, 100_000, 300_000, 1_000_000])
    rows = []
    for n in ns:
        folder = Path(tempfile.mkdtemp(prefix="convergent-storage-", dir=args.workdir))
        try:
            row = {"n": n, **_child("upload", folder, n)}
            row.update(_child("fits", folder, n))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        row["load_average_after"] = list(os.getloadavg())
        _log(json.dumps(row))
        rows.append(row)
        out = {"date": time.strftime("%Y-%m-%d %H:%M"), "d": D, "rows": rows}
        args.out.mkdir(parents=True, exist_ok=True)  # written after every n: a long run keeps what it measured
        plot(rows, args.out / "storage_scaling.png")
        (args.out / "storage_scaling.json").write_text(json.dumps(out, indent=2))
    _log(f"wrote {args.out / 'storage_scaling.json'} and storage_scaling.png")


if __name__ == "__main__":
    main()
