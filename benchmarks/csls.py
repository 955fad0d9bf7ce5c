"""Identify through a map: CSLS scoring vs cosine, in the same process and the same rounds.

One in-process server; a source -> target fit on ``--anchors`` pairs; a gallery of ``--n``
target vectors (exact or HNSW). Reports the cost of the first CSLS identify after an enrolment
(r_S of every item, plus the augmented index of an exact gallery: the enrolment-side cost) and the identify throughput
of both scorings over interleaved rounds (batches of ``--batch`` probes, k = 10), as the ratio
csls / cosine in queries per second (target: >= 0.9).

    .venv/bin/python benchmarks/csls.py [--n 100000] [--dim 128] [--index exact] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from convergent.client import Client
from convergent.server.rpc.app import ConvergentServer
from convergent.server.settings import ServerSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summary, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--anchors", type=int, default=2000)
    parser.add_argument("--index", default="exact", choices=["exact", "hnsw"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    R = np.linalg.qr(rng.standard_normal((args.dim, args.dim)))[0].astype(np.float32)
    X = rng.standard_normal((args.anchors, args.dim), dtype=np.float32)
    Y = X @ R + 0.3 * rng.standard_normal(X.shape, dtype=np.float32)
    G = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    which = rng.integers(0, args.n, args.batch * args.batches)  # probe i is a noisy copy of gallery row which[i]
    probes = G[which] @ R.T + 0.3 * rng.standard_normal((len(which), args.dim), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        settings = ServerSettings(port=0, data_dir=Path(tmp))
        with ConvergentServer(settings) as server, Client(server.address, timeout=3600) as c:
            ids = [f"a{i}" for i in range(args.anchors)]
            for name, data in (("src", X), ("tgt", Y)):
                c.register_model(name, dim=args.dim)
                c.upload_anchors(name, anchor_set="s", ids=ids, vectors=data)
            c.fit_alignment("src", "tgt", anchor_set="s", method="procrustes")
            enroll_s, _ = timed(c.enroll, gallery="g", model="tgt", ids=[f"g{i}" for i in range(args.n)], vectors=G,
                                index=args.index)
            cosine_first, _ = timed(c.identify, "g", probes[:1], model="src", k=10, scoring="cosine")
            csls_first, _ = timed(c.identify, "g", probes[:1], model="src", k=10, scoring="csls")

            def qps(scoring: str) -> float:
                started = time.perf_counter()
                for s in range(0, len(probes), args.batch):
                    c.identify("g", probes[s : s + args.batch], model="src", k=10, scoring=scoring)
                return len(probes) / (time.perf_counter() - started)

            ratios, rates = [], {"cosine": [], "csls": []}
            for r in range(args.rounds):  # alternate who goes first
                order = ("cosine", "csls") if r % 2 == 0 else ("csls", "cosine")
                got = {s: qps(s) for s in order}
                for s, v in got.items():
                    rates[s].append(v)
                ratios.append(got["csls"] / got["cosine"])
            top_cos = c.identify("g", probes[:256], model="src", k=1, scoring="cosine")
            top_csls = c.identify("g", probes[:256], model="src", k=1, scoring="csls")
    print(f"gallery {args.n:,} x {args.dim} ({args.index}), {args.anchors} anchors, batches of {args.batch}, k = 10, "
          f"{args.rounds} interleaved rounds")
    print(f"enroll {enroll_s:.2f} s; first identify after it: cosine {cosine_first:.2f} s (index build), "
          f"csls {csls_first:.2f} s (r_S of {args.n:,} items"
          f"{' + augmented index' if args.index == 'exact' else '; HNSW re-ranks cosine candidates'})")
    print(f"identify q/s: cosine {summary(rates['cosine'])['median']:.0f}, csls {summary(rates['csls'])['median']:.0f}; "
          f"csls / cosine = {summary(ratios)['median']:.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
    hits = {name: np.mean([row[0] == f"g{w}" for row, w in zip(result.ids, which[:256])])
            for name, result in (("cosine", top_cos), ("csls", top_csls))}
    print(f"rank-1 of the first 256 probes (synthetic, a rotation + noise): cosine {hits['cosine']:.3f}, csls {hits['csls']:.3f}")


if __name__ == "__main__":
    main()
