"""Replicas on one database: throughput of 1 vs 2 `convergent serve` processes, and the
write path on SQLite vs PostgreSQL. Prints a markdown table for the README's Scaling section.

    .venv/bin/python benchmarks/replicas.py --database-url postgresql://postgres@127.0.0.1:5432/bench

The database must be empty (a fresh PostgreSQL database). Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ServerProcess, bench_env  # noqa: E402

from convergent.client import Client  # noqa: E402


def start(database_url: str | None, data_dir: Path, env: dict[str, str]) -> ServerProcess:
    cmd = [sys.executable, "-m", "convergent.server", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir)]
    if database_url:
        cmd += ["--database-url", database_url]
    return ServerProcess(cmd, env)


def upload_rate(address: str, model: str, n: int, dim: int) -> float:
    X = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    with Client(address, timeout=600) as client:
        client.register_model(model, dim=dim, normalize=False)
        t0 = time.perf_counter()
        client.upload_anchors(model, anchor_set="bench", ids=[f"{model}-{i}" for i in range(n)], vectors=X)
        return n / (time.perf_counter() - t0)


def identify_rate(addresses: list[str], clients: int, seconds: float, dim: int) -> float:
    """Queries/s of ``clients`` threads (batches of 32) spread round-robin over the replicas."""
    done = [0] * clients
    stop = time.monotonic() + seconds

    def work(i: int) -> None:
        rng = np.random.default_rng(i)
        with Client(addresses[i % len(addresses)], timeout=60) as client:
            while time.monotonic() < stop:
                client.identify(gallery="g", vectors=rng.standard_normal((32, dim)), model="m", k=10)
                done[i] += 32

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="an empty PostgreSQL database")
    parser.add_argument("--vectors", type=int, default=50_000)
    parser.add_argument("--gallery", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    env = bench_env(keep_blas_env=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = start(None, Path(tmp) / "sqlite", env)
        try:
            rows.append(("upload, SQLite, 1 process", f"{upload_rate(sqlite.address, 'u', args.vectors, args.dim):,.0f} vectors/s"))
        finally:
            sqlite.stop()
        replicas = [start(args.database_url, Path(tmp) / f"r{i}", env) for i in range(2)]
        try:
            rows.append(("upload, PostgreSQL, 1 process", f"{upload_rate(replicas[0].address, 'u', args.vectors, args.dim):,.0f} vectors/s"))
            with Client(replicas[0].address) as client:
                client.register_model("m", dim=args.dim)
                G = np.random.default_rng(1).standard_normal((args.gallery, args.dim))
                client.enroll(gallery="g", model="m", ids=[f"p{i}" for i in range(args.gallery)], vectors=G)
            for clients in (2, 4):
                one = identify_rate([replicas[0].address], clients, args.seconds, args.dim)
                two = identify_rate([r.address for r in replicas], clients, args.seconds, args.dim)
                rows.append((f"identify {args.gallery // 1000}k x {args.dim}, {clients} clients", f"1 replica {one:,.0f} q/s; 2 replicas {two:,.0f} q/s"))
        finally:
            for r in replicas:
                r.stop()
    print("| measurement | result |\n|---|---|")
    for what, result in rows:
        print(f"| {what} | {result} |")


if __name__ == "__main__":
    main()
