"""Shared plumbing of the benchmarks: server processes, environment, timing, summaries.

Every figure of ``run.py`` is a ratio to a baseline timed in the same run, round by round,
because this 2-core machine is shared and absolute times swing several-fold.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# OpenBLAS overrides that may be set on this machine (they force an older, slower kernel).
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_LISTEN = re.compile(r"listening on (\S+)")


def bench_env(keep_blas_env: bool) -> dict[str, str]:
    """Environment of every process of a benchmark run (servers and baselines alike)."""
    env = dict(os.environ)
    if not keep_blas_env:
        for var in BLAS_VARS:
            env.pop(var, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def blas_info() -> list[dict]:
    """threadpoolctl's view of the loaded BLAS / OpenMP libraries (import numpy first)."""
    import numpy  # noqa: F401
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads", "threading_layer")
    return [{k: v for k, v in info.items() if k in keep} for info in threadpool_info()]


class ServerProcess:
    """A server in another process that logs ``listening on HOST:PORT`` on stderr."""

    def __init__(self, args: list[str], env: dict[str, str], timeout: float = 60.0) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=str(ROOT)
        )
        self.log: list[str] = []
        found = threading.Event()
        self.address = ""

        def drain() -> None:  # read stderr forever so the pipe never blocks the server
            for line in self.proc.stderr:  # type: ignore[union-attr]
                self.log.append(line.rstrip())
                m = _LISTEN.search(line)
                if m and not found.is_set():
                    self.address = m.group(1)
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server {args} did not start:\n" + "\n".join(self.log[-30:]))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self, field: str) -> int:
        """A kB field of /proc/PID/status (VmHWM = peak RSS, VmRSS = current), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_convergent(data_dir: Path, env: dict[str, str]) -> ServerProcess:
    """``convergent serve --host 127.0.0.1 --port 0 --data-dir DIR`` in another process."""
    cmd = [sys.executable, "-m", "convergent.server", "--host", "127.0.0.1", "--port", "0",
           "--data-dir", str(data_dir)]  # default settings, as a user starts it
    return ServerProcess(cmd, env)


def start_baseline(mode: str, env: dict[str, str], **options: object) -> ServerProcess:
    """The minimal gRPC servicer of ``baseline_server.py`` in another process."""
    cmd = [sys.executable, str(HERE / "baseline_server.py"), "--mode", mode]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return ServerProcess(cmd, env)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def summary(values: list[float]) -> dict[str, float]:
    return {"median": float(median(values)), "min": float(min(values)), "max": float(max(values))}


def fmt_ratio(entry: dict) -> str:
    return f"{entry['median']:.2f} ({entry['min']:.2f}-{entry['max']:.2f})"


def realdata_folder(explicit: Path | None) -> Path:
    """shared/realdata (or ``explicit``); exits with a message when it is not found."""
    from convergent.server.datasets import find_realdata

    folder = find_realdata(explicit) if explicit is not None else find_realdata()
    if folder is None:
        raise SystemExit("shared/realdata not found: pass --realdata")
    return folder
