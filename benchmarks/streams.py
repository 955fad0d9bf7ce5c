"""Fair service under abusive streams (issue 29): p50/p99 of a normal client's health checks and
small identify calls on an idle `convergent serve`, then while 200 idle and 50 slow (one message a
second, never last=true) UploadAnchors streams are open over 25 connections; the streams'
outcomes (accepted, refused by which cap, ended by the idle limit) and the server's RSS before,
during and after.

    .venv/bin/python benchmarks/streams.py [--seconds 10] [--json PATH] [-- SERVE FLAGS...]

SERVE FLAGS go to `convergent serve` (e.g. `-- --max-streams 256`); none: the defaults. The
abusive streams run in a child process, so the normal client's timings are not its own load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ServerProcess, bench_env  # noqa: E402

DIM, GALLERY, KEPT = 128, 1000, 100
DEADLINE = 3.0  # a call slower than this counts as failed (the reliability test)


def abuse(address: str, idle: int, slow: int, connections: int, send_for: float, done: mp.Queue) -> None:
    """Open ``idle + slow`` uploads round-robin over ``connections``; slow ones send a chunk a
    second for ``send_for`` s, then go silent. Reports each stream's outcome."""
    import grpc

    from convergent.v1 import anchors_pb2, anchors_pb2_grpc
    from convergent.wire import encode_matrix

    stop = threading.Event()
    chunk = encode_matrix(np.random.default_rng(0).standard_normal((256, DIM)).astype(np.float32))

    def requests(number: int, is_slow: bool):  # noqa: ANN202
        started = time.monotonic()
        sent = 0
        while is_slow and time.monotonic() - started < send_for:
            header = {"model": "m", "anchor_set": "abuse"} if sent == 0 else {}
            ids = [f"s{number}-{sent}-{i}" for i in range(256)]
            yield anchors_pb2.UploadAnchorsRequest(**header, ids=ids, vectors=chunk)
            sent += 1
            if stop.wait(1.0):
                return
        stop.wait()

    options = [("grpc.use_local_subchannel_pool", 1)]  # one TCP connection per channel
    channels = [grpc.insecure_channel(address, options=options) for _ in range(connections)]
    kinds = np.random.default_rng(2).permutation([True] * slow + [False] * idle)  # slow ones spread out
    calls = []
    for number, is_slow in enumerate(kinds):
        stub = anchors_pb2_grpc.AnchorServiceStub(channels[number % connections])
        calls.append(stub.UploadAnchors.future(requests(number, bool(is_slow)), timeout=600))
    done.put(("opened", len(calls)))
    outcomes: dict[str, int] = {}
    for call in calls:
        try:
            call.result()
            kind = "committed"
        except grpc.RpcError as exc:
            details = exc.details() or ""
            kind = ("refused: max_streams_per_client" if "max_streams_per_client" in details
                    else "refused: max_streams" if "max_streams=" in details
                    else "ended: idle limit" if "no message for" in details
                    else f"other: {exc.code().name}")
        outcomes[kind] = outcomes.get(kind, 0) + 1
    stop.set()
    for ch in channels:
        ch.close()
    done.put(("outcomes", outcomes))


def normal_client(address: str, seconds: float) -> dict:
    """Health, then identify of one probe (k=5), back to back for ``seconds``: latencies in ms."""
    from convergent.client import Client

    probe = np.random.default_rng(7).standard_normal((1, DIM)).astype(np.float32)
    times: dict[str, list[float]] = {"health": [], "identify": []}
    failures = 0
    with Client(address, timeout=DEADLINE) as client:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            for kind, call in (("health", client.health), ("identify", lambda: client.identify("g", probe, model="m", k=5))):
                started = time.perf_counter()
                try:
                    ok = call() is not False
                except Exception:  # noqa: BLE001 - a failed call is what is counted
                    ok = False
                elapsed = time.perf_counter() - started
                failures += not ok or elapsed > DEADLINE
                times[kind].append(elapsed * 1e3)
            time.sleep(0.02)
    out: dict = {"failures": failures}
    for kind, values in times.items():
        out[kind] = {"n": len(values), "p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}
    return out


def rss_mib(server: ServerProcess) -> float:
    return server.status("VmRSS") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each latency phase")
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--slow", type=int, default=50)
    parser.add_argument("--connections", type=int, default=25)
    parser.add_argument("--json", type=Path)
    args, serve_flags = parser.parse_known_args()
    serve_flags = [f for f in serve_flags if f != "--"]
    from convergent.client import Client

    env = bench_env(keep_blas_env=False)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "convergent.server", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", str(Path(tmp) / "data"), *serve_flags]
        server = ServerProcess(cmd, env)
        try:
            rng = np.random.default_rng(1)
            with Client(server.address, timeout=60) as client:
                client.wait_until_serving(60)
                client.register_model("m", DIM, normalize=False)
                client.enroll("g", "m", [f"p{i}" for i in range(GALLERY)], rng.standard_normal((GALLERY, DIM)))
                client.upload_anchors("m", anchor_set="abuse", ids=[f"k{i}" for i in range(KEPT)],
                                      vectors=rng.standard_normal((KEPT, DIM)))
            normal_client(server.address, 1.0)  # warm-up
            rss = {"before": rss_mib(server)}
            idle = normal_client(server.address, args.seconds)

            ctx = mp.get_context("spawn")
            done: mp.Queue = ctx.Queue()
            send_for = args.seconds + 4
            child = ctx.Process(target=abuse, args=(server.address, args.idle, args.slow, args.connections, send_for, done))
            opened_at = time.monotonic()
            child.start()
            assert done.get(timeout=120)[0] == "opened"
            time.sleep(2.0)  # every stream has reached the server
            peak = [rss_mib(server)]
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.wait(0.25):
                    peak.append(rss_mib(server))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            loaded = normal_client(server.address, args.seconds)
            rss["during_peak"] = max(peak)
            kind, outcomes = done.get(timeout=600)  # the slow streams go silent, then the idle limit ends all
            all_ended = time.monotonic() - opened_at
            sampling.set()
            child.join(30)
            rss["during_peak"] = max(peak)
            time.sleep(2.0)
            rss["after"] = rss_mib(server)
            after = normal_client(server.address, 2.0)
            time.sleep(5.0)
            rss["settled"] = rss_mib(server)  # 10 s after the last stream ended
            released = [line for line in server.log if "memory released" in line]
            with Client(server.address) as client:
                kept = client.count_anchors("m", anchor_set="abuse")
        finally:
            server.stop()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "serve_flags": serve_flags,
        "streams": {"idle": args.idle, "slow": args.slow, "connections": args.connections, "outcomes": outcomes,
                    "all_ended_after_s": round(all_ended, 1)},
        "idle_server": idle, "with_streams": loaded, "after_streams": after,
        "p99_ratio": {k: loaded[k]["p99_ms"] / idle[k]["p99_ms"] for k in ("health", "identify")},
        "rss_mib": rss, "anchors_kept": kept, "anchors_expected": KEPT, "server_log_memory": released[-3:],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
