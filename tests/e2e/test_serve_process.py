"""`convergent serve` as a user starts it: a subprocess, the SDK, SIGTERM, restart, data kept."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convergent.client import Client, errors

BIN = Path(sys.executable).with_name("convergent")


def start(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start a server process and return it with the address from its 'listening on' log line."""
    process = subprocess.Popen(
        args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 60
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        match = re.search(r'listening on ([^\s"]+)', line)
        if match:
            return process, match.group(1)
    process.kill()
    raise AssertionError("no 'listening on' line within 60 s")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    return err


@pytest.mark.slow
def test_serve_upload_sigterm_restart_keeps_data(tmp_path: Path, rng):
    data_dir = tmp_path / "data"
    process, address = start([str(BIN), "serve", "--port", "0", "--data-dir", str(data_dir)])
    X = rng.standard_normal((1000, 32)).astype(np.float32)
    try:
        with Client(address) as client:
            client.wait_until_serving()
            client.register_model("raw", dim=32, normalize=False)
            assert client.upload_anchors("raw", anchor_set="s", ids=range(1000), vectors=X, chunk_size=100) == 1000
    finally:
        log = stop(process)
    assert process.returncode == 0, log
    assert "received SIGTERM" in log and "stopped" in log

    # Restart through `python -m convergent.server`, settings from the environment this time.
    process, address = start(
        [sys.executable, "-m", "convergent.server", "--port", "0", "--log-format", "json"],
        env={"CONVERGENT_DATA_DIR": str(data_dir)},
    )
    try:
        with Client(address) as client:
            client.wait_until_serving()
            assert client.get_model("raw").dim == 32
            assert client.count_anchors("raw", anchor_set="s") == 1000
            # Bit-identical: re-uploading the same float32 values is a no-op, any other value conflicts.
            assert client.upload_anchors("raw", anchor_set="s", ids=range(1000), vectors=X) == 1000
            with pytest.raises(errors.AlreadyExists):
                client.upload_anchors("raw", anchor_set="s", ids=[0], vectors=X[:1] + 1e-3)
    finally:
        log = stop(process, signal.SIGINT)
    assert process.returncode == 0, log
    assert '"msg": "received SIGINT"' in log


def test_serve_rejects_bad_settings(tmp_path: Path):
    result = subprocess.run(
        [str(BIN), "serve", "--port", "70000", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "port" in result.stderr and "less than or equal to 65535" in result.stderr
