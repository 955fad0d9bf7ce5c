"""Encryption at rest: what it costs. The same work on a server in clear (the baseline) and on an
encrypted one (``--master-key-file``), alternating round by round in this run:

- ``ingest_ratio``: anchors per second uploaded (SDK ``upload_anchors``, two models) and gallery
  items enrolled, encrypted / in clear (1.0 = free; the target is >= 0.9);
- ``cold_fit_ratio``: time of the first ridge fit after a restart (every pair read from the
  sealed blocks, statistics not cached), in clear / encrypted;
- ``identify_ratio``: identify throughput (probes per second, k=10, exact index), encrypted / in
  clear (target >= 0.95; the index lives in memory, so only its build after a restart reads blocks);
- ``index_build_ratio``: the first identify after a restart (the gallery read from the store).

    .venv/bin/python benchmarks/encryption.py [--n 20000] [--dim 512] [--gallery 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from convergent.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HERE, ServerProcess, bench_env, fmt_ratio, summary, timed  # noqa: E402


def _serve(data: Path, key_file: Path | None, env: dict[str, str]) -> ServerProcess:
    cmd = [sys.executable, "-m", "convergent.server", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data)]
    return ServerProcess(cmd + (["--master-key-file", str(key_file)] if key_file else []), env, timeout=300)


def one_round(mode: str, tmp: Path, data: dict[str, np.ndarray], env: dict[str, str]) -> dict[str, float]:
    from convergent.server.storage import master_keys

    folder = tmp / f"{mode}-{time.monotonic_ns()}"
    key_file = None
    if mode == "encrypted":
        folder.mkdir()
        key_file = folder / "master.key"
        master_keys.write_new_key(key_file)
    ids = [f"a{i}" for i in range(len(data["X"]))]
    out: dict[str, float] = {}
    server = _serve(folder / "data", key_file, env)
    try:
        with Client(server.address, timeout=3600) as c:
            c.wait_until_serving(300)
            c.register_model("a", dim=data["X"].shape[1])
            c.register_model("b", dim=data["Y"].shape[1])
            upload = sum(timed(c.upload_anchors, name, anchor_set="s", ids=ids, vectors=v)[0]
                         for name, v in (("a", data["X"]), ("b", data["Y"])))
            enroll = timed(c.enroll, gallery="g", model="b", ids=[f"p{i}" for i in range(len(data["G"]))], vectors=data["G"])[0]
            out["ingest_per_s"] = (2 * len(ids) + len(data["G"])) / (upload + enroll)
    finally:
        server.stop()
    server = _serve(folder / "data", key_file, env)  # restarted: nothing cached in memory
    try:
        with Client(server.address, timeout=3600) as c:
            c.wait_until_serving(300)
            out["cold_fit_s"] = timed(c.fit_alignment, "a", "b", anchor_set="s", method="ridge", seed=0)[0]
            out["index_build_s"] = timed(c.identify, gallery="g", vectors=data["P"][:1], model="b", k=10)[0]
            seconds = [timed(c.identify, gallery="g", vectors=data["P"], model="b", k=10)[0] for _ in range(3)]
            out["identify_per_s"] = len(data["P"]) / float(np.median(seconds))
    finally:
        server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="anchors per model")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--gallery", type=int, default=20_000)
    parser.add_argument("--probes", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "encryption.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    data = {"X": X, "Y": (X @ rng.standard_normal((args.dim, args.dim), dtype=np.float32) / np.sqrt(args.dim)),
            "G": rng.standard_normal((args.gallery, args.dim), dtype=np.float32),
            "P": rng.standard_normal((args.probes, args.dim), dtype=np.float32)}
    env = bench_env(keep_blas_env=False)
    rounds: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(args.rounds):
            order = ("clear", "encrypted") if number % 2 == 0 else ("encrypted", "clear")  # alternate who goes first
            result = {mode: one_round(mode, Path(tmp), data, env) for mode in order}
            rounds.append(result)
            print(f"round {number + 1}: " + "; ".join(f"{m}: " + ", ".join(f"{k}={v:.3g}" for k, v in r.items())
                                                     for m, r in result.items()), flush=True)
    ratios = {
        "ingest_ratio": [r["encrypted"]["ingest_per_s"] / r["clear"]["ingest_per_s"] for r in rounds],
        "cold_fit_ratio": [r["clear"]["cold_fit_s"] / r["encrypted"]["cold_fit_s"] for r in rounds],
        "identify_ratio": [r["encrypted"]["identify_per_s"] / r["clear"]["identify_per_s"] for r in rounds],
        "index_build_ratio": [r["clear"]["index_build_s"] / r["encrypted"]["index_build_s"] for r in rounds],
    }
    report = {
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
        "cpus": __import__("os").cpu_count(), "workload": vars(args) | {"out": str(args.out)},
        "ratios": {name: summary(values) | {"rounds": values} for name, values in ratios.items()}, "rounds": rounds,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{args.n:,} anchors x 2 models + {args.gallery:,} gallery items, dim {args.dim}, {args.rounds} rounds "
          "(encrypted vs in clear, same run; 1.0 = no cost; median (min-max)):")
    targets = {"ingest_ratio": 0.9, "identify_ratio": 0.95}
    for name in ratios:
        target = f" (target >= {targets[name]})" if name in targets else ""
        print(f"  {name}: {fmt_ratio(report['ratios'][name])}{target}")


if __name__ == "__main__":
    main()
