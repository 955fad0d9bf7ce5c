"""The SDK never imports torch, the server or its database layer; the CLI (convergent.server.cli)
loads none of the server's machinery to show its help or to run a client command."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "sklearn", "scipy", "sqlalchemy", "convergent.server")
# The CLI module lives in convergent.server (beside serve, backup, demo), so it loads that
# package and itself, and nothing else of the server.
CLI_ALLOWED = {"convergent.server"}
SERVER_MACHINERY = ("convergent.server.align", "convergent.server.inference", "convergent.server.registry",
                    "convergent.server.storage", "convergent.server.rpc", "convergent.server.settings")


def loaded_after(code: str, names: tuple[str, ...] = HEAVY) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {names!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return set(result.stdout.split())


def test_sdk_import_is_light():
    assert loaded_after("from convergent.client import Client; Client('127.0.0.1:1').close()") == set()


def test_cli_help_is_light():
    loaded = loaded_after(
        "from convergent.server.cli import app\n"
        "from typer.testing import CliRunner\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
        "assert CliRunner().invoke(app, ['models', 'list', '--address', '127.0.0.1:1']).exit_code == 1",
        HEAVY + SERVER_MACHINERY,
    )
    assert loaded <= CLI_ALLOWED, loaded
