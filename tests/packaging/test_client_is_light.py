"""The SDK and the CLI's client commands never import torch, the server or its database layer."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "sklearn", "scipy", "sqlalchemy", "convergent.server")


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return set(result.stdout.split())


def test_sdk_import_is_light():
    assert loaded_after("from convergent.client import Client; Client('127.0.0.1:1').close()") == set()


def test_cli_help_is_light():
    assert loaded_after(
        "from convergent.cli import app\n"
        "from typer.testing import CliRunner\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0"
    ) == set()
