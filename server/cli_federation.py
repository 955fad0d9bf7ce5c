"""Federated inference commands: fit-cooperative (CE-FI's head by distillation) and predict."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from convergent.server.cli_base import (
    DEFAULT_ADDRESS,
    Address,
    ApiKey,
    _connected,
    _fail,
    _load_npz,
    _parse_params,
    _print_fit,
    app,
)


@app.command("fit-cooperative")
def fit_cooperative(
    space: Annotated[str, typer.Option(help="id of a shared space (convergent fit-shared)")],
    anchor_set: Annotated[str, typer.Option(help="anchor set the parties and teachers embedded")],
    teachers: Annotated[list[str], typer.Option("--teacher", help="a teacher model: anchor vectors = class "
                                                                   "probabilities, registered with --raw (repeat)")],
    param: Annotated[Optional[list[str]], typer.Option(help="reg, max_iter or seed as key=value (repeatable)")] = None,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Train a classifier on a shared space by distillation from teachers' probabilities (no labels)."""
    params = _parse_params(param or [])
    with _connected(address, api_key) as client:
        info = client.fit_cooperative(space=space, anchor_set=anchor_set, teachers=teachers, **params)
    typer.echo("agreement = share of held-out anchors where the head's top class is the combined teachers' (higher is better)")
    _print_fit(info)


@app.command()
def predict(
    head: Annotated[str, typer.Argument(help="id of a cooperative head (convergent fit-cooperative)")],
    parties: Annotated[list[str], typer.Option("--party", help="MODEL=FILE.npz: one party's vectors, rows = the same "
                                                               "items in every file (repeat)")],
    key: Annotated[Optional[str], typer.Option(help="array in each .npz (default: the model's name, else the only 2-D array)")] = None,
    out: Annotated[Optional[Path], typer.Option(help=".npz to write 'probabilities' (n, n_classes)")] = None,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Class probabilities of items from one or more parties' vectors through a cooperative head."""
    import numpy as np

    vectors, item_ids = {}, None
    for spec in parties:
        model, sep, file = spec.partition("=")
        if not sep or not model or not file:
            _fail(f"--party takes MODEL=FILE.npz, got {spec!r}")
        if not Path(file).is_file():
            _fail(f"--party {model}: no file {file}")
        vectors[model], ids = _load_npz(Path(file), key, model, "ids")
        item_ids = item_ids or ids
    with _connected(address, api_key) as client:
        P = client.predict(head, vectors)
    typer.echo(f"{P.shape[0]} items, {P.shape[1]} classes, from {', '.join(vectors)}; top class of the first items:")
    for i, row in enumerate(P[:10]):
        typer.echo(f"  {item_ids[i] if item_ids else i}: class {int(row.argmax())} (p = {row.max():.3f})")
    if out is not None:
        np.savez(out, probabilities=P)
        typer.echo(f"wrote probabilities {P.shape} to {out}")
