"""Commands for models, anchors and fits: register, upload, fit, fit-shared, transform, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from convergent.wire import FIT_METHODS
from convergent.server.cli_base import (
    DEFAULT_ADDRESS,
    Address,
    ApiKey,
    _connected,
    _fail,
    app,
    models_app,
    anchors_app,
    fits_app,
    _load_npz,
    _parse_params,
    _print_fit,
)


@models_app.command("list")
def models_list(address: Address = DEFAULT_ADDRESS, api_key: ApiKey = None) -> None:
    """List registered models."""
    with _connected(address, api_key) as client:
        models = client.list_models()
    typer.echo(f"{'name':<32} {'dim':>6} {'version':>8} normalize")
    for m in models:
        typer.echo(f"{m.name:<32} {m.dim:>6} {m.version:>8} {m.normalize}")


@models_app.command("register")
def models_register(
    name: str,
    dim: Annotated[int, typer.Option(help="vector dimension")],
    normalize: Annotated[bool, typer.Option("--normalize/--raw", help="L2-normalise vectors server-side")] = True,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Register a model."""
    with _connected(address, api_key) as client:
        info = client.register_model(name, dim=dim, normalize=normalize)
    typer.echo(f"registered {info.name} (dim {info.dim}, version {info.version}, normalize {info.normalize})")


@models_app.command("delete")
def models_delete(name: str, address: Address = DEFAULT_ADDRESS, api_key: ApiKey = None) -> None:
    """Delete a model and all of its anchors."""
    with _connected(address, api_key) as client:
        deleted = client.delete_model(name)
    typer.echo(f"deleted {name} and {deleted} anchors")


@anchors_app.command("list")
def anchors_list(
    model: Annotated[Optional[str], typer.Option(help="only sets holding this model")] = None,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """List anchor sets with their anchor count per model."""
    with _connected(address, api_key) as client:
        sets = client.list_anchor_sets(model)
    for s in sets:
        counts = ", ".join(f"{m}={c}" for m, c in s.models.items()) or "(empty)"
        typer.echo(f"{s.name} (version {s.data_version}): {counts}")



@anchors_app.command("delete")
def anchors_delete(
    anchor_set: Annotated[str, typer.Argument(help="anchor set")],
    model: Annotated[str, typer.Option(help="delete this model's anchors in the set")],
    ids: Annotated[Optional[list[str]], typer.Option("--id", help="only these ids (repeatable); default: all of the model's")] = None,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Delete a model's anchors from a set (all, or the ids given); fits on the set become stale."""
    with _connected(address, api_key) as client:
        deleted = client.delete_anchors(model, anchor_set, ids=ids or None)
    typer.echo(f"deleted {deleted} anchors of {model} from {anchor_set}")



@app.command()
def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz file")],
    model: Annotated[str, typer.Option(help="registered model the vectors come from")],
    anchor_set: Annotated[str, typer.Option(help="anchor set to add them to")],
    key: Annotated[Optional[str], typer.Option(help="array in the .npz (default: the model name, else the only 2-D array)")] = None,
    ids_key: Annotated[str, typer.Option(help="array of ids; a file without it is an error unless --row-ids")] = "ids",
    row_ids: Annotated[bool, typer.Option("--row-ids", help="use the row numbers 0..n-1 as ids (the file has none)")] = False,
    chunk_size: Annotated[int, typer.Option(help="rows per message")] = 512,
    overwrite: Annotated[bool, typer.Option(help="replace stored vectors of the same ids")] = False,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Upload anchor embeddings from an .npz file, with a progress bar."""

    vectors, ids = _load_npz(file, key, model, ids_key, need_ids=True, row_ids=row_ids)
    with _connected(address, api_key) as client:
        total = client.upload_anchors(
            model, anchor_set=anchor_set, ids=ids, vectors=vectors, chunk_size=chunk_size,
            overwrite=overwrite, progress=True,
        )
    typer.echo(f"uploaded {len(ids)} vectors of {model} to {anchor_set}; {total} stored")



@app.command()
def fit(
    source: Annotated[str, typer.Option(help="model the map starts from")],
    target: Annotated[str, typer.Option(help="model the map goes to")],
    anchor_set: Annotated[str, typer.Option(help="anchor set both models embedded")],
    method: Annotated[str, typer.Option(help="one of: " + "; ".join(f"{name} ({what})" for name, what in FIT_METHODS.items()))] = "auto",
    param: Annotated[Optional[list[str]], typer.Option(
        help="hyper-parameter key=value (repeatable); `convergent methods` lists each method's")] = None,
    both_ways: Annotated[bool, typer.Option(
        help="also fit target -> source (verify then scores pairs in both models' spaces)")] = False,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Fit a source -> target map and print its held-out diagnostics."""
    if method not in FIT_METHODS:  # before connecting: a typo should not read as a network error
        import difflib

        close = difflib.get_close_matches(method, list(FIT_METHODS), n=2)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise typer.BadParameter(f"unknown method {method!r}; {hint}`convergent methods` lists them: "
                                 f"{', '.join(FIT_METHODS)}", param_hint="--method")
    params = _parse_params(param or [])
    with _connected(address, api_key) as client:
        info = client.fit_alignment(source, target, anchor_set=anchor_set, method=method, **params)
        _print_fit(info)
        if both_ways:
            typer.echo("")
            _print_fit(client.fit_alignment(target, source, anchor_set=anchor_set, method=method, **params))


# The commands that run the methods beyond FitAlignment (`convergent fit` runs those).
_METHOD_COMMANDS = {"shared": "convergent fit-shared", "shared (contrastive)": "convergent fit-shared --param method=contrastive",
                    "cooperative": "convergent fit-cooperative"}


def _accepted(prop: dict) -> str:
    """A JSON Schema property's type and bounds in words, as the docs table writes them."""
    kind = prop.get("type")
    if "enum" in prop:
        return " / ".join(str(v) for v in prop["enum"])
    if kind == "boolean":
        return "true / false"
    if kind == "integer" and "minimum" in prop and "maximum" in prop:
        return f"integer in {prop['minimum']}..{prop['maximum']}"
    if kind == "number":
        low = f"({prop['exclusiveMinimum']:g}" if "exclusiveMinimum" in prop else f"[{prop.get('minimum', float('-inf')):g}"
        high = f"{prop['exclusiveMaximum']:g})" if "exclusiveMaximum" in prop else f"{prop.get('maximum', float('inf')):g}]"
        return f"number in {low}, {high}"
    if kind == "array":
        items = prop.get("items", {})
        count = f"{prop.get('minItems', 0)}..{prop['maxItems']}" if "maxItems" in prop else f"{prop.get('minItems', 0)} or more"
        if "enum" in items:
            return f"list of {count} {'distinct ' if prop.get('uniqueItems') else ''}names (below)"
        return f"list of {count} {_accepted(items).replace('number', 'numbers', 1)}"
    return str(kind or "")


def _default(prop: dict) -> str:
    if "default" not in prop:
        return "—"
    value = prop["default"]
    return str(value).lower() if isinstance(value, bool) else str(value)


@app.command()
def methods(
    markdown: Annotated[bool, typer.Option(help="print the parameter table of docs/alignment.md from this installation's "
                                                "method table (no server needed)")] = False,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """List the fit methods the server offers with their parameters, accepted values and defaults."""
    if markdown:
        from convergent.server.align import methods as table

        typer.echo(table.markdown_table())
        return
    with _connected(address, api_key) as client:
        catalogue = client.list_methods()
    for method in catalogue:
        command = _METHOD_COMMANDS.get(method.name)
        typer.echo(f"{method.name}: {method.summary}" + (f" ({command})" if command else ""))
        for key, prop in method.params_schema.get("properties", {}).items():
            typer.echo(f"  {key:<14} {_accepted(prop):<42} default {_default(prop):<6} {prop.get('description', '')}")
    for method in catalogue:
        if method.candidates:
            typer.echo(f"{method.name}'s candidates, simple to complex: {' < '.join(method.candidates)}")


@app.command("fit-shared")
def fit_shared(
    models: Annotated[list[str], typer.Option("--model", help="a model of the space (repeat, at least 2)")],
    anchor_set: Annotated[str, typer.Option(help="anchor set the models embedded")],
    param: Annotated[Optional[list[str]], typer.Option(help="n_components, reg or seed as key=value (repeatable)")] = None,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Fit one shared space for N models (transform to shared:<id>; identify/verify route through it)."""
    params = _parse_params(param or [])
    with _connected(address, api_key) as client:
        info = client.fit_shared_space(models, anchor_set=anchor_set, **params)
    _print_fit(info)


@app.command()
def transform(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz with the source vectors")],
    source: Annotated[str, typer.Option(help="model the vectors come from")],
    out: Annotated[Path, typer.Option(help=".npz to write (array 'vectors', plus 'ids' if present)")],
    target: Annotated[Optional[str], typer.Option(help="model to map into (latest fit)")] = None,
    fit_id: Annotated[Optional[str], typer.Option(help="use this fit instead of the latest")] = None,
    key: Annotated[Optional[str], typer.Option(help="array in the .npz (default: the source name, else the only 2-D array)")] = None,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Map vectors of one model into another model's space."""
    import numpy as np

    if not target and not fit_id:
        _fail(ValueError("give --target or --fit-id"))
    vectors, ids = _load_npz(file, key, source, "ids")
    with _connected(address, api_key) as client:
        mapped = client.transform(vectors, source=source, target=target, fit_id=fit_id)
    arrays = {"vectors": mapped}
    if ids is not None:
        arrays["ids"] = np.array(ids)
    np.savez(out, **arrays)
    typer.echo(f"wrote {mapped.shape[0]} x {mapped.shape[1]} vectors to {out}")


@fits_app.command("list")
def fits_list(
    source: Annotated[Optional[str], typer.Option(help="only fits from this model")] = None,
    target: Annotated[Optional[str], typer.Option(help="only fits to this model")] = None,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """List fits, oldest first."""
    with _connected(address, api_key) as client:
        fits = client.list_fits(source=source, target=target)
    typer.echo(f"{'id':<22} {'route':<32} {'set':<16} {'method':<11} {'top1':>6} {'r2':>7}  stale")
    for f in fits:
        route = f"{f.source} -> {f.target}"
        typer.echo(
            f"{f.id:<22} {route:<32} {f.anchor_set:<16} {f.method:<11} "
            f"{f.metrics.get('top1', float('nan')):>6.3f} {f.metrics.get('r2', float('nan')):>7.3f}  {f.stale}"
        )
    if fits:
        typer.echo("top1, r2: on each fit's held-out anchors (higher is better); `convergent fits show ID` for all")


@fits_app.command("show")
def fits_show(fit_id: str, address: Address = DEFAULT_ADDRESS, api_key: ApiKey = None) -> None:
    """Show one fit with all its metrics and warnings."""
    with _connected(address, api_key) as client:
        info = client.get_fit(fit_id)
    _print_fit(info)


@fits_app.command("export")
def fits_export(
    fit_id: str,
    out: Annotated[Path, typer.Option(help=".npz to write the fitted arrays to")],
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Write a fit's arrays (e.g. W and b) to an .npz file."""
    import numpy as np

    with _connected(address, api_key) as client:
        arrays = client.export_fit(fit_id)
    np.savez(out, **arrays)
    typer.echo(f"wrote {', '.join(f'{k} {tuple(v.shape)}' for k, v in sorted(arrays.items()))} to {out}")
