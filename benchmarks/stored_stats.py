"""The first fit after a restart: statistics stored in the database vs read from every pair.

One server fits a (source, target) pair cold (reads every pair: the baseline), then again
(statistics cached in memory); it is restarted on the same database and fits once more, now
from the statistics stored by the first fit.

    .venv/bin/python benchmarks/stored_stats.py [--n 100000] [--dim 512] [--method ridge]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from convergent.client import Client
from convergent.server.rpc.app import ConvergentServer
from convergent.server.settings import ServerSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import timed  # noqa: E402


def timed_fit(server: ConvergentServer, method: str) -> float:
    with Client(server.address, timeout=3600) as client:
        return timed(client.fit_alignment, "a", "b", anchor_set="s", method=method)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--method", default="ridge")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    Y = (X @ rng.standard_normal((args.dim, args.dim), dtype=np.float32) / np.sqrt(args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        settings = ServerSettings(port=0, data_dir=Path(tmp))
        with ConvergentServer(settings) as server, Client(server.address, timeout=3600) as client:
            ids = [f"a{i}" for i in range(args.n)]
            for name, data in (("a", X), ("b", Y)):
                client.register_model(name, dim=args.dim)
                client.upload_anchors(name, anchor_set="s", ids=ids, vectors=data)
            cold = timed_fit(server, args.method)
            cached = timed_fit(server, args.method)
        with ConvergentServer(settings) as server:
            stored = timed_fit(server, args.method)
    print(f"| fit_alignment({args.method!r}), {args.n:,} pairs, {args.dim} -> {args.dim} (SQLite) | s |")
    print("|---|---|")
    print(f"| cold: every pair read (baseline) | {cold:.2f} |")
    print(f"| statistics cached in memory | {cached:.2f} |")
    print(f"| after a restart, statistics from the database | {stored:.2f} |")
    print(f"\nafter-restart / cold = {stored / cold:.2f}")


if __name__ == "__main__":
    main()
