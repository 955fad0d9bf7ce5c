"""Identify throughput of a gallery on milvus-lite vs the local in-process index (same vectors,
same queries, interleaved rounds), FLAT vs exact and HNSW vs HNSW, with recall against exact.
``--service``: the same through two running servers (``--gallery-backend local`` and
``milvus``), so the service's own costs per call (database read, Milvus state check) count too.

    .venv/bin/python benchmarks/milvus.py [--n 100000] [--dim 128] [--rounds 5] [--service]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

from convergent.server.inference import ExactIndex, HnswIndex, normalize_rows
from convergent.server.inference.milvus_index import MilvusIndex


def qps(index, Q: np.ndarray, k: int, batch: int) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    for start in range(0, len(Q), batch):
        index.search(Q[start : start + batch], k)
    return len(Q) / (time.perf_counter() - t0)


def service(G: np.ndarray, Q: np.ndarray, ids: list[str], args: argparse.Namespace) -> None:
    """Enroll G and identify Q through a local-index server and a Milvus (milvus-lite) server."""
    from convergent.client import Client
    from convergent.server.rpc.app import ConvergentServer
    from convergent.server.settings import ServerSettings

    with tempfile.TemporaryDirectory() as tmp:
        servers = {
            backend: ConvergentServer(ServerSettings(port=0, data_dir=Path(tmp) / backend, gallery_backend=backend))
            for backend in ("local", "milvus")
        }
        enroll, rates = {}, {backend: [] for backend in servers}
        try:
            clients = {}
            for backend, server in servers.items():
                server.start()
                clients[backend] = client = Client(server.address, timeout=600)
                client.register_model("m", dim=args.dim)
                t0 = time.perf_counter()
                client.enroll(gallery="g", model="m", ids=ids, vectors=G)
                client.identify(gallery="g", vectors=Q[:1], model="m", k=10)  # local: builds the index
                enroll[backend] = time.perf_counter() - t0
            truth = clients["local"].identify(gallery="g", vectors=Q, model="m", k=10).ids
            found = clients["milvus"].identify(gallery="g", vectors=Q, model="m", k=10).ids
            agree = float(np.mean([a == t for a, t in zip(found, truth)]))
            for _ in range(args.rounds):
                for backend, client in clients.items():
                    t0 = time.perf_counter()
                    for start in range(0, len(Q), args.batch):
                        client.identify(gallery="g", vectors=Q[start : start + args.batch], model="m", k=10)
                    rates[backend].append(len(Q) / (time.perf_counter() - t0))
            for client in clients.values():
                client.close()
        finally:
            for server in servers.values():
                server.stop(grace=1)
    print(f"| server, gallery backend ({args.n:,} x {args.dim}, exact, k = 10, batches of {args.batch}) "
          f"| identify q/s (median of {args.rounds}) | enroll + first identify s |")
    print("|---|---|---|")
    for backend in servers:
        print(f"| {backend} | {median(rates[backend]):,.0f} | {enroll[backend]:.1f} |")
    print(f"\nmilvus top-10 lists identical to local: {agree:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--service", action="store_true", help="through two running servers")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.n // 10, args.dim))
    G = normalize_rows((centres[rng.integers(0, len(centres), args.n)] + 0.3 * rng.standard_normal((args.n, args.dim))).astype(np.float32))
    Q = normalize_rows((centres[rng.integers(0, len(centres), args.queries)] + 0.3 * rng.standard_normal((args.queries, args.dim))).astype(np.float32))
    ids = [f"p{i}" for i in range(args.n)]
    if args.service:
        service(G, Q, ids, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        uri = str(Path(tmp) / "bench.db")
        t0 = time.perf_counter()
        indexes = {"local exact": ExactIndex(args.dim), "milvus FLAT": MilvusIndex(args.dim, uri, "flat", index="FLAT")}
        indexes["local hnsw"] = HnswIndex(args.dim)
        indexes["milvus HNSW"] = MilvusIndex(args.dim, uri, "hnsw", index="HNSW", client=indexes["milvus FLAT"].client)
        build = {}
        for name, index in indexes.items():
            t0 = time.perf_counter()
            index.add(ids, G)
            build[name] = time.perf_counter() - t0
        truth = indexes["local exact"].search(Q, 10)[0]
        recall = {name: float(np.mean([len(set(a) & set(t)) / 10 for a, t in zip(index.search(Q, 10)[0], truth)]))
                  for name, index in indexes.items()}
        rates: dict[str, list[float]] = {name: [] for name in indexes}
        for _ in range(args.rounds):
            for name, index in indexes.items():
                rates[name].append(qps(index, Q, 10, args.batch))
    print(f"| index ({args.n:,} x {args.dim}, k = 10, batches of {args.batch}) | queries/s (median of {args.rounds}) | recall@10 vs exact | build s |")
    print("|---|---|---|---|")
    for name in indexes:
        print(f"| {name} | {median(rates[name]):,.0f} | {recall[name]:.3f} | {build[name]:.1f} |")


if __name__ == "__main__":
    main()
