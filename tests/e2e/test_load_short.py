"""A short run of scripts/load.py (3 clients x 3 s against a server it starts): zero errors and
every operation ran. No timing is asserted; the numbers are printed (pytest -s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "load.py"


@pytest.mark.slow
def test_short_load_has_no_errors_and_runs_every_operation(tmp_path: Path):
    out = tmp_path / "load.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--clients", "3", "--seconds", "3", "--gallery-size", "500", "--json", str(out)],
        capture_output=True, text=True, timeout=180,
    )
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    assert result["errors_by_code"] == {}, result["error_samples"]
    assert result["clients"] == 3
    for op in ("upload", "transform", "identify"):
        assert result["ops"][op]["ok"] > 0, (op, result)
        assert result["ops"][op]["errors"] == 0, (op, result)


@pytest.mark.parametrize("address", ["10.0.0.1:50051", "example.com:50051", "0.0.0.0:50051", "[2001:db8::1]:50051"])
def test_load_refuses_addresses_off_loopback(address: str):
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--address", address, "--seconds", "1"],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 2
    assert "only loopback" in run.stderr
