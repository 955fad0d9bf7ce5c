"""`convergent console`: the read-only web console of a running server."""

from __future__ import annotations

from typing import Annotated

import typer

from convergent.server.cli_base import DEFAULT_ADDRESS, ApiKey, _fail, app


@app.command()
def console(
    server: Annotated[str, typer.Option("--server", envvar="CONVERGENT_ADDRESS", help="the server's HOST:PORT")] = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
    host: Annotated[str, typer.Option(help="address the console listens on (loopback unless you say otherwise)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port of the console; 0 picks a free one")] = 8080,
) -> None:
    """Open a read-only web console of the server at --server, seeing what --api-key may see:
    health, usage, models and anchor sets, fits, the compatibility atlas, galleries, verification
    operating points, and (admin keys) the audit log."""
    import socket

    import uvicorn

    from convergent.client import Client
    from convergent.server.console import make_app

    client = Client(server, api_key=api_key, timeout=60)
    if not client.health():
        _fail(f"no server answers at {server}: start one (`convergent serve`) or give --server HOST:PORT")
    with socket.socket() as sock:  # a port taken is one clear line, not a traceback
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as exc:
            _fail(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port (0 picks a free one)")
        port = sock.getsockname()[1]
    typer.echo(f"console of {server} on http://{host}:{port}/ (read-only; Ctrl-C stops it)")
    uvicorn.run(make_app(client, server), host=host, port=port, log_level="warning")
