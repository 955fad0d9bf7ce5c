"""`convergent atlas`: which models of an anchor set can stand in for which (a client of the server)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from convergent.server.cli_base import DEFAULT_ADDRESS, Address, ApiKey, _connected, _fail, app


def _cell(value: float, style: str = ".3f") -> str:
    return "—" if not math.isfinite(value) else format(value, style)


@app.command()
def atlas(
    anchor_set: Annotated[str, typer.Option(help="the anchor set whose models to compare")],
    fit_missing: Annotated[bool, typer.Option("--fit-missing/--stored-only",
                                              help="fit every route with no current fit first (with progress)")] = False,
    method: Annotated[str, typer.Option(help="method of the fits --fit-missing makes")] = "auto",
    max_routes: Annotated[Optional[int], typer.Option(min=1, help="fit at most this many missing routes")] = None,
    out: Annotated[Optional[Path], typer.Option(help="write the top-1 heatmap here (.png or .svg)")] = None,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Every ordered pair of the set's models: its newest fit's held-out diagnostics, and the
    models clustered by how well they stand in for each other."""
    if out is not None and out.suffix.lower() not in (".png", ".svg"):
        raise typer.BadParameter("the heatmap is written as .png or .svg", param_hint="--out")
    with _connected(address, api_key) as client:
        if fit_missing:
            from tqdm.auto import tqdm

            with tqdm(desc="fitting missing routes", unit="route") as bar:
                def advance(entry: object, fit: object, done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                client.fit_missing_routes(anchor_set, method=method, max_routes=max_routes, progress=advance)
        result = client.atlas(anchor_set)
    if not result.entries:
        _fail(f"anchor set {anchor_set!r} holds anchors of {len(result.models)} model(s): an atlas needs two")
    typer.echo(f"atlas of anchor set {result.anchor_set!r} (data version {result.data_version}); held-out "
               "diagnostics of each route's newest fit (top1, CKA, mutual k-NN: higher is better; cond: lower)")
    typer.echo(f"{'source':<16} {'target':<16} {'method':<12} {'top1':>6} {'cka':>6} {'mknn':>6} {'cond':>9} "
               f"{'held out':>8} {'pairs':>7}  note")
    for e in result.entries:
        note = "no fit" if not e.fit_id else "stale" if e.stale else ""
        typer.echo(f"{e.source:<16} {e.target:<16} {e.method or '—':<12} {_cell(e.top1):>6} {_cell(e.cka):>6} "
                   f"{_cell(e.mutual_knn):>6} {_cell(e.condition_number, '.3g'):>9} {e.n_heldout:>8} {e.n_pairs:>7}  {note}")
    typer.echo(f"clusters (average linkage on 1 - symmetric top-1, cut at {result.cluster_distance}; routes with "
               "no current fit count as top-1 0):")
    for number, group in enumerate(result.clusters, 1):
        typer.echo(f"  {number}: {', '.join(group)}")
    missing = result.missing()
    if missing:
        typer.echo(f"{len(missing)} routes have no current fit: `convergent atlas --anchor-set {anchor_set} --fit-missing`")
    if out is not None:
        from convergent.server.report import plot_atlas

        top1 = {(e.source, e.target): e.top1 for e in result.entries if e.current}
        marks = {(e.source, e.target): "stale" for e in result.entries if e.stale}
        plot_atlas(result.models, top1, out, f"{anchor_set}: held-out top-1 of each route", marks)
        typer.echo(f"wrote {out}")
