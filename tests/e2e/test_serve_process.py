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


def test_keys_and_auth_through_the_cli(tmp_path: Path):
    """`keys create` prints a key on its last line; a server with --require-auth accepts only it."""
    data_dir = tmp_path / "data"
    created = subprocess.run([str(BIN), "keys", "create", "acme", "--role", "admin", "--name", "ops",
                              "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60, check=True)
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("cvg.")
    listed = subprocess.run([str(BIN), "keys", "list", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60, check=True)
    assert "acme" in listed.stdout and "admin" in listed.stdout and key.split(".")[2] not in listed.stdout
    process, address = start([str(BIN), "serve", "--port", "0", "--data-dir", str(data_dir), "--require-auth"])
    try:
        with Client(address) as anonymous:
            anonymous.wait_until_serving()
            with pytest.raises(errors.Unauthenticated):
                anonymous.list_models()
        ok = subprocess.run([str(BIN), "models", "register", "m", "--dim", "4", "--address", address, "--api-key", key],
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
        deleted = subprocess.run([str(BIN), "models", "delete", "m", "--address", address, "--api-key", key],
                                 capture_output=True, text=True, timeout=60)
        assert deleted.returncode == 0, deleted.stderr
        denied = subprocess.run([str(BIN), "models", "list", "--address", address], capture_output=True, text=True, timeout=60)
        assert denied.returncode == 1 and "UNAUTHENTICATED" in denied.stderr
        subprocess.run([str(BIN), "keys", "revoke", key.split(".")[1], "--data-dir", str(data_dir)], check=True, timeout=60,
                       capture_output=True)
        with Client(address, api_key=key) as revoked, pytest.raises(errors.Unauthenticated):
            revoked.list_models()
    finally:
        stop(process)
    audit = subprocess.run([str(BIN), "audit", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60, check=True)
    assert f"acme key={key.split('.')[1]} DeleteModel name=m -> OK" in audit.stdout


def test_serve_with_tls_and_cli_health(tmp_path: Path, tls_files):
    process, address = start([str(BIN), "serve", "--port", "0", "--data-dir", str(tmp_path),
                              "--tls-cert", str(tls_files["server_cert"]), "--tls-key", str(tls_files["server_key"])])
    try:
        port = address.rsplit(":", 1)[1]
        # 'listening on' comes before storage is open: NOT_SERVING until then, --wait polls
        health = subprocess.run([str(BIN), "--tls-ca", str(tls_files["ca"]), "health", "--address", f"localhost:{port}",
                                 "--wait", "30"], capture_output=True, text=True, timeout=60)
        assert health.returncode == 0 and health.stdout.strip() == "SERVING", health.stderr
    finally:
        stop(process)
