"""The ``convergent`` command line (typer). Heavy modules are imported inside commands.

``cli_base`` holds the apps and shared helpers; the commands register themselves on import:
``cli_data`` (models, anchors, fits), ``cli_inference`` (galleries, identify, verify),
``cli_federation`` (fit-cooperative, predict),
``cli_server`` (serve, backup, keys, demo), ``cli_encryption`` (keygen, encrypt, key rotation, tenant delete).
"""

from __future__ import annotations

import sys

import typer

from convergent.server import cli_atlas, cli_console, cli_data, cli_encryption, cli_federation, cli_inference, cli_server  # they register their commands
from convergent.server.cli_base import _DEBUG, app

__all__ = ["app", "cli_atlas", "cli_console", "cli_data", "cli_encryption", "cli_federation", "cli_inference", "cli_server", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes print one ``error:`` line (exit 1, usage errors exit 2); an
    unexpected exception prints one line too, with its traceback only under --debug."""
    try:
        app(args=argv, prog_name="convergent")
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last resort of a command line
        if _DEBUG["on"] or "--debug" in (argv if argv is not None else sys.argv[1:]):
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
