"""Galleries on a Milvus standalone server (the `milvus` package's binary, started here in its
own process group): identify through a convergent server vs plain pymilvus Bounded searches of
a collection of the same shape (same vectors, same queries, interleaved rounds, one process),
and ``--hnsw``: recall@10 and q/s of HNSW on sealed, indexed segments vs FLAT (exact).

    .venv/bin/python benchmarks/milvus_server.py [--n 50000] [--dim 128] [--batch 256] [--hnsw]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

from convergent.server.inference import normalize_rows

LAUNCHER = ("import sys; from milvus import MilvusServer; s = MilvusServer(wait_for_started=False); "
            "s.set_base_dir(sys.argv[1]); s.config.set('proxy_port', int(sys.argv[2])); s.start(); "
            "print('PORT', s.listen_port, flush=True); s.wait()")


def start_milvus(folder: Path, port: int = 39530, timeout: float = 180):  # noqa: ANN201
    from pymilvus import MilvusClient

    log = folder / "launcher.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(folder / "milvus"), str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"PORT (\d+)", log.read_text())
        if found:
            try:
                MilvusClient(f"http://127.0.0.1:{found.group(1)}", timeout=5).list_collections()
                return proc, f"http://127.0.0.1:{found.group(1)}"
            except Exception:  # noqa: BLE001 - not ready yet
                pass
        time.sleep(0.5)
    stop_milvus(proc)
    raise SystemExit("the Milvus server did not start")


def stop_milvus(proc) -> None:  # noqa: ANN001
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def plain_collection(client, name: str, G: np.ndarray, index: str = "FLAT", **params) -> None:  # noqa: ANN001
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=G.shape[1])
    index_params = client.prepare_index_params()
    index_params.add_index(field_name="vector", index_type=index, metric_type="IP", params=params)
    client.create_collection(name, schema=schema, index_params=index_params, consistency_level="Bounded")
    for start in range(0, len(G), 2000):
        client.insert(name, [{"id": f"p{start + i}", "vector": v} for i, v in enumerate(G[start : start + 2000].tolist())])


def plain_search(client, name: str, Q: np.ndarray, k: int, params: dict | None = None, strong: bool = False):  # noqa: ANN001, ANN201
    """A search at the collection's consistency (Bounded), or Strong (what convergent did before)."""
    extra = {"consistency_level": "Strong"} if strong else {}
    hits = client.search(name, data=Q.tolist(), limit=k, search_params={"metric_type": "IP", "params": params or {}},
                         output_fields=["id"], **extra)
    return [[hit["id"] for hit in row] for row in hits]


def rate(fn, Q: np.ndarray, batch: int) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    for start in range(0, len(Q), batch):
        fn(Q[start : start + batch])
    return len(Q) / (time.perf_counter() - t0)


def identify(uri: str, G: np.ndarray, Q: np.ndarray, args: argparse.Namespace) -> None:
    from pymilvus import MilvusClient

    from convergent.client import Client
    from convergent.server.rpc.app import ConvergentServer
    from convergent.server.settings import ServerSettings

    plain = MilvusClient(uri)
    plain_collection(plain, "plain", G)
    ids = [f"p{i}" for i in range(len(G))]
    with tempfile.TemporaryDirectory() as tmp:
        server = ConvergentServer(ServerSettings(port=0, data_dir=Path(tmp), gallery_backend="milvus", milvus_uri=uri))
        server.start()
        try:
            with Client(server.address, timeout=600) as client:
                client.register_model("m", dim=G.shape[1])
                client.enroll(gallery="g", model="m", ids=ids, vectors=G)
                through = client.identify(gallery="g", vectors=Q, model="m", k=10).ids
                direct = plain_search(plain, "plain", Q, 10)
                truth = [[ids[j] for j in np.argsort(-(q @ G.T))[:10]] for q in Q]
                calls = {"convergent identify (Milvus backend)": lambda B: client.identify(gallery="g", vectors=B, model="m", k=10),
                         "plain pymilvus search, Bounded": lambda B: plain_search(plain, "plain", B, 10),
                         "plain pymilvus search, Strong": lambda B: plain_search(plain, "plain", B, 10, strong=True)}
                for batch in args.batches:
                    rates: dict[str, list[float]] = {name: [] for name in calls}
                    for _ in range(args.rounds):
                        for name, fn in calls.items():
                            rates[name].append(rate(fn, Q, batch))
                    base = median(rates["plain pymilvus search, Bounded"])
                    print(f"\n| {len(G):,} x {G.shape[1]}, FLAT, k = 10, batches of {batch} | q/s (median of {args.rounds}) | ratio to plain |")
                    print("|---|---|---|")
                    for name in calls:
                        print(f"| {name} | {median(rates[name]):,.1f} | {median(rates[name]) / base:.2f} |")
        finally:
            server.stop(grace=1)
    print(f"\ntop-10 identical to exact numpy: convergent {np.mean([a == t for a, t in zip(through, truth)]):.3f}, "
          f"plain {np.mean([a == t for a, t in zip(direct, truth)]):.3f}")


def hnsw(uri: str, G: np.ndarray, Q: np.ndarray, args: argparse.Namespace) -> None:
    """FLAT and HNSW collections, flushed (segments seal) and indexed, then searched."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    t0 = time.perf_counter()
    plain_collection(client, "flat", G)
    plain_collection(client, "hnsw", G, "HNSW", M=32, efConstruction=200)
    for name in ("flat", "hnsw"):
        client.flush(name)
    while True:  # the index is built on sealed segments in the background
        info = client.describe_index("hnsw", "vector")
        if int(info.get("indexed_rows", 0)) >= len(G) and info.get("state") in ("Finished", None):
            break
        time.sleep(2)
    build = time.perf_counter() - t0
    client.release_collection("hnsw")
    client.load_collection("hnsw")
    ids = np.array([f"p{i}" for i in range(len(G))])
    truth = [set(ids[np.argsort(-(q @ G.T))[:10]]) for q in Q]
    calls = {"FLAT (exact)": lambda B: plain_search(client, "flat", B, 10)}
    for ef in args.ef:
        calls[f"HNSW M=32 ef={ef}"] = lambda B, ef=ef: plain_search(client, "hnsw", B, 10, {"ef": ef})
    recall = {name: float(np.mean([len(set(row) & t) / 10 for row, t in zip(fn(Q), truth)])) for name, fn in calls.items()}
    rates: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, fn in calls.items():
            rates[name].append(rate(fn, Q, args.batches[0]))
    print(f"\n| {len(G):,} x {G.shape[1]} on sealed segments, k = 10, batches of {args.batches[0]} | q/s (median of {args.rounds}) | recall@10 |")
    print("|---|---|---|")
    for name in calls:
        print(f"| {name} | {median(rates[name]):,.1f} | {recall[name]:.3f} |")
    print(f"\ninsert + flush + HNSW build: {build:.0f} s; index: {client.describe_index('hnsw', 'vector')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hnsw", action="store_true", help="HNSW vs FLAT on sealed segments instead")
    parser.add_argument("--ef", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--uri", help="an existing Milvus server (default: start one)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.n // 10, args.dim))
    G = normalize_rows((centres[rng.integers(0, len(centres), args.n)] + 0.3 * rng.standard_normal((args.n, args.dim))).astype(np.float32))
    Q = normalize_rows((centres[rng.integers(0, len(centres), args.queries)] + 0.3 * rng.standard_normal((args.queries, args.dim))).astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        proc, uri = (None, args.uri) if args.uri else start_milvus(Path(tmp))
        try:
            (hnsw if args.hnsw else identify)(uri, G, Q, args)
        finally:
            if proc is not None:
                stop_milvus(proc)


if __name__ == "__main__":
    main()
