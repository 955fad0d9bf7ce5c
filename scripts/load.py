#!/usr/bin/env python
"""Bounded loopback load: N clients x T seconds of mixed upload / transform / identify.

    python scripts/load.py                       # starts its own server: 4 clients x 10 s
    python scripts/load.py --clients 8 --seconds 30 --address 127.0.0.1:50051

Without ``--address`` it starts ``convergent serve`` on 127.0.0.1 with a temporary data folder
and stops it (SIGTERM) at the end. ``--address`` must be a loopback address (127.0.0.0/8,
::1 or localhost); anything else is refused before a connection is made. Every client is a
thread with its own ``Client`` (own channel); each stops at the deadline or after
``--max-ops`` calls, whichever comes first. Set-up objects carry a random run prefix, so runs
against a shared server do not collide.

Operations (weights by ``--mix``):
  upload    ``--upload-rows`` new anchors of one model (alternating source / target, so they pair)
  transform ``--transform-rows`` source vectors through the latest source -> target ridge fit
  identify  ``--probes`` source probes against a ``--gallery-size`` target gallery, k=10 (through the fit)

Prints throughput, p50 / p99 latency per operation and errors by status code; exits 1 if any
call failed or an operation with a non-zero weight never ran, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import collections
import ipaddress
import json
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from convergent.client import Client, errors

OPS = ("upload", "transform", "identify")


# ----------------------------------------------------------------------------- arguments
def loopback_address(address: str) -> str:
    """``address`` (HOST:PORT) if HOST is loopback, else ValueError. No name is resolved except
    ``localhost``, so nothing ever leaves the machine."""
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", address.strip())
    if not match:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    host, port = match.group(1), int(match.group(2))
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {address!r}")
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError
        except ValueError:
            raise ValueError(f"refusing {address!r}: only loopback (127.0.0.0/8, ::1, localhost) is allowed") from None
    return address.strip()


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name not in OPS or not weight:
            raise ValueError(f"--mix takes {'=W,'.join(OPS)}=W, got {text!r}")
        mix[name] = float(weight)
        if mix[name] < 0:
            raise ValueError("--mix weights must be >= 0")
    if sum(mix.values()) <= 0:
        raise ValueError("--mix needs a positive weight")
    return {op: mix.get(op, 0.0) for op in OPS}


# ----------------------------------------------------------------------------- own server
class OwnServer:
    """``convergent serve`` on 127.0.0.1:0 with a temporary data folder; its log goes to a file
    there (no pipe to drain in this process)."""

    def __init__(self, workers: int | None) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="convergent-load-")
        exe = Path(sys.executable).with_name("convergent")
        command = [str(exe), "serve"] if exe.exists() else [sys.executable, "-m", "convergent.server"]
        command += ["--host", "127.0.0.1", "--port", "0", "--data-dir", str(Path(self.tmp.name) / "data")]
        if workers:
            command += ["--workers", str(workers)]
        self.log_path = Path(self.tmp.name) / "server.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        self.address = ""
        while not self.address:
            match = re.search(r'listening on ([^\s"]+)', self.log_path.read_text())
            if match:
                self.address = loopback_address(match.group(1))
            elif self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            elif time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"no 'listening on' line within 60 s: {self.log()}")
            else:
                time.sleep(0.05)

    def log(self, chars: int = 3000) -> str:
        return self.log_path.read_text()[-chars:]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.last_log = self.log()
        self.tmp.cleanup()
        return code


# ----------------------------------------------------------------------------- the load
class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {op: [] for op in OPS}
        self.errors: collections.Counter[tuple[str, str]] = collections.Counter()
        self.samples: dict[str, str] = {}

    def ok(self, op: str, seconds: float) -> None:
        with self.lock:
            self.latencies[op].append(seconds)

    def fail(self, op: str, code: str, message: str) -> None:
        with self.lock:
            self.errors[(op, code)] += 1
            self.samples.setdefault(f"{op}/{code}", message[:300])


def set_up(address: str, prefix: str, dim: int, anchors: int, gallery_size: int, seed: int) -> dict[str, str]:
    """Two models, paired anchors, a ridge fit source -> target, a target gallery; warm-up calls."""
    rng = np.random.default_rng(seed)
    names = {
        "source": f"{prefix}-src", "target": f"{prefix}-tgt",
        "anchor_set": f"{prefix}-anchors", "gallery": f"{prefix}-gallery",
    }
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    X = rng.standard_normal((anchors, dim)).astype(np.float32)
    Y = (X @ rotation + 0.05 * rng.standard_normal((anchors, dim))).astype(np.float32)
    ids = [f"{prefix}-a{i}" for i in range(anchors)]
    with Client(address, timeout=60) as client:
        client.wait_until_serving(timeout=30)
        client.register_model(names["source"], dim)
        client.register_model(names["target"], dim)
        client.upload_anchors(names["source"], anchor_set=names["anchor_set"], ids=ids, vectors=X)
        client.upload_anchors(names["target"], anchor_set=names["anchor_set"], ids=ids, vectors=Y)
        client.fit_alignment(names["source"], names["target"], names["anchor_set"], method="ridge", alpha=1.0)
        G = rng.standard_normal((gallery_size, dim)).astype(np.float32)
        client.enroll(gallery=names["gallery"], model=names["target"], ids=[f"{prefix}-p{i}" for i in range(gallery_size)], vectors=G)
        # Warm-up (first use loads the map and builds the index): not measured.
        client.transform(X[:4], source=names["source"], target=names["target"])
        client.identify(gallery=names["gallery"], vectors=X[:4], model=names["source"], k=10)
    return names


def worker(
    number: int, address: str, names: dict[str, str], args: argparse.Namespace, mix: dict[str, float],
    deadline: list[float], stats: Stats, start: threading.Barrier,
) -> None:
    """One client: after the common start, random operations until ``deadline[0]`` (set by the
    main thread before it releases the barrier) or ``--max-ops`` calls."""
    rng = np.random.default_rng([args.seed, number])
    ops = [op for op in OPS if mix[op] > 0]
    weights = np.array([mix[op] for op in ops]) / sum(mix[op] for op in ops)
    dim = args.dim
    uploads = 0
    with Client(address, timeout=args.call_timeout) as client:
        client.server_info()  # one-time per client: not part of an upload's latency
        start.wait(timeout=60)
        for _ in range(args.max_ops):
            if time.monotonic() >= deadline[0]:
                return
            op = ops[int(rng.choice(len(ops), p=weights))]
            began = time.perf_counter()
            try:
                if op == "upload":
                    model = names["source"] if uploads % 2 == 0 else names["target"]
                    first = (uploads // 2) * args.upload_rows
                    ids = [f"w{number}-u{first + i}" for i in range(args.upload_rows)]
                    client.upload_anchors(model, anchor_set=names["anchor_set"], ids=ids,
                                          vectors=rng.standard_normal((args.upload_rows, dim)).astype(np.float32))
                    uploads += 1
                elif op == "transform":
                    Z = client.transform(rng.standard_normal((args.transform_rows, dim)).astype(np.float32),
                                         source=names["source"], target=names["target"])
                    if Z.shape != (args.transform_rows, dim):
                        raise RuntimeError(f"transform returned shape {Z.shape}")
                else:
                    result = client.identify(gallery=names["gallery"], model=names["source"], k=10,
                                             vectors=rng.standard_normal((args.probes, dim)).astype(np.float32))
                    if len(result.ids) != args.probes:
                        raise RuntimeError(f"identify returned {len(result.ids)} rows for {args.probes} probes")
            except errors.ConvergentError as exc:
                stats.fail(op, exc.code.name, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
                stats.fail(op, type(exc).__name__, str(exc))
                continue
            stats.ok(op, time.perf_counter() - began)


def report(stats: Stats, elapsed: float, args: argparse.Namespace, mix: dict[str, float], where: str) -> dict:
    per_op = {}
    for op in OPS:
        lat = np.array(stats.latencies[op]) * 1e3
        errs = sum(n for (o, _), n in stats.errors.items() if o == op)
        per_op[op] = {
            "ok": int(lat.size), "errors": int(errs), "ops_per_s": lat.size / elapsed,
            "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
        }
    by_code: collections.Counter[str] = collections.Counter()
    for (_, code), n in stats.errors.items():
        by_code[code] += n
    total_ok = sum(v["ok"] for v in per_op.values())
    missing = [op for op in OPS if mix[op] > 0 and per_op[op]["ok"] == 0]
    return {
        "server": where, "clients": args.clients, "seconds": elapsed, "dim": args.dim,
        "upload_rows": args.upload_rows, "transform_rows": args.transform_rows, "probes": args.probes,
        "gallery_size": args.gallery_size, "total_ok": total_ok, "ops_per_s": total_ok / elapsed,
        "ops": per_op, "errors_by_code": dict(by_code),
        "error_samples": stats.samples, "ops_that_never_ran": missing,
    }


def print_report(result: dict) -> None:
    print(f"load: {result['clients']} clients x {result['seconds']:.1f} s against {result['server']} "
          f"(dim {result['dim']}; upload {result['upload_rows']} rows, transform {result['transform_rows']} rows, "
          f"identify {result['probes']} probes k=10 in {result['gallery_size']} items)")
    print(f"{'op':<10} {'ok':>8} {'errors':>7} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for op, r in result["ops"].items():
        p50 = f"{r['p50_ms']:.2f}" if r["p50_ms"] is not None else "-"
        p99 = f"{r['p99_ms']:.2f}" if r["p99_ms"] is not None else "-"
        print(f"{op:<10} {r['ok']:>8} {r['errors']:>7} {r['ops_per_s']:>9.1f} {p50:>8} {p99:>8}")
    print(f"{'total':<10} {result['total_ok']:>8} {sum(result['errors_by_code'].values()):>7} {result['ops_per_s']:>9.1f}")
    print("errors by status code: " + (", ".join(f"{k}={v}" for k, v in result["errors_by_code"].items()) or "none"))
    for key, message in result["error_samples"].items():
        print(f"  e.g. {key}: {message}")
    if result["ops_that_never_ran"]:
        print(f"operations that never completed: {result['ops_that_never_ran']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help="client threads, each its own channel [4]")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the measured phase [10]")
    parser.add_argument("--max-ops", type=int, default=100_000, help="calls per client at most [100000]")
    parser.add_argument("--address", default=None, help="a running server on loopback [start one]")
    parser.add_argument("--workers", type=int, default=None, help="RPC threads of the server this starts [its default]")
    parser.add_argument("--mix", default="upload=1,transform=2,identify=2", help="operation weights [upload=1,transform=2,identify=2]")
    parser.add_argument("--dim", type=int, default=64, help="dimension of both models [64]")
    parser.add_argument("--anchors", type=int, default=1024, help="pairs the ridge map is fitted on [1024]")
    parser.add_argument("--gallery-size", type=int, default=2000, help="items enrolled before the load [2000]")
    parser.add_argument("--upload-rows", type=int, default=64, help="rows per upload [64]")
    parser.add_argument("--transform-rows", type=int, default=32, help="rows per transform [32]")
    parser.add_argument("--probes", type=int, default=8, help="probes per identify [8]")
    parser.add_argument("--call-timeout", type=float, default=30.0, help="deadline of each call, s [30]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the operation sequence [0]")
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    try:
        mix = parse_mix(args.mix)
        address = loopback_address(args.address) if args.address else None
        if not 1 <= args.clients <= 256:
            raise ValueError("--clients must be in 1..256")
        if not 0 < args.seconds <= 3600:
            raise ValueError("--seconds must be in (0, 3600]")
        if not 1 <= args.max_ops <= 10_000_000:
            raise ValueError("--max-ops must be in 1..10000000")
        if min(args.dim, args.anchors, args.gallery_size, args.upload_rows, args.transform_rows, args.probes) < 1:
            raise ValueError("sizes must be >= 1")
        if args.anchors < 10:
            raise ValueError("--anchors must be >= 10 (a fit needs 10 pairs)")
    except ValueError as exc:
        parser.error(str(exc))

    server = None
    if address is None:
        server = OwnServer(args.workers)
        address = server.address
        where = f"its own server at {address}"
    else:
        where = address
    code = 0
    try:
        prefix = f"load-{secrets.token_hex(3)}"
        names = set_up(address, prefix, args.dim, args.anchors, args.gallery_size, args.seed)
        stats = Stats()
        start = threading.Barrier(args.clients + 1)
        deadline = [float("inf")]
        threads = [
            threading.Thread(target=worker, args=(n, address, names, args, mix, deadline, stats, start), daemon=True)
            for n in range(args.clients)
        ]
        for t in threads:
            t.start()
        deadline[0] = time.monotonic() + 60 + args.seconds  # until the barrier opens
        start.wait(timeout=60)  # every client connected: measure from here
        began = time.monotonic()
        deadline[0] = began + args.seconds
        for t in threads:
            t.join(timeout=args.seconds + args.call_timeout + 30)
        elapsed = time.monotonic() - began
        if any(t.is_alive() for t in threads):
            stats.fail("all", "HUNG", "a client thread did not finish after the deadline + call timeout")
        result = report(stats, elapsed, args, mix, where)
        print_report(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        if result["errors_by_code"] or result["ops_that_never_ran"]:
            code = 1
    finally:
        if server is not None:
            exit_code = server.stop()
            if exit_code != 0:
                print(f"the server exited with {exit_code} on SIGTERM:\n{server.last_log}", file=sys.stderr)
                code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
