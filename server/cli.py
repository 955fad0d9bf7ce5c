"""The ``convergent`` command line (typer). Heavy modules are imported inside commands."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from convergent.wire import FIT_METHODS

app = typer.Typer(
    help="convergent: fit maps between embedding models' spaces and serve cross-model inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Register, list and delete models.", no_args_is_help=True)
anchors_app = typer.Typer(help="Inspect and delete anchors.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(anchors_app, name="anchors")
fits_app = typer.Typer(help="List, show and export fitted maps.", no_args_is_help=True)
app.add_typer(fits_app, name="fits")
galleries_app = typer.Typer(help="List, show, delete galleries and remove items.", no_args_is_help=True)
app.add_typer(galleries_app, name="galleries")
keys_app = typer.Typer(help="API keys of tenants (run on the server host, against its data folder).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

# TLS of the client commands and --debug (set by the global options below).
_TLS: dict[str, Optional[Path]] = {}
_DEBUG = {"on": bool(os.environ.get("CONVERGENT_DEBUG"))}


def _print_version(value: bool) -> None:
    if value:
        from convergent import __version__

        typer.echo(f"convergent {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    tls_ca: Annotated[Optional[Path], typer.Option(envvar="CONVERGENT_TLS_CA", help="client commands: connect with TLS, trusting this CA (PEM)")] = None,
    tls_client_cert: Annotated[Optional[Path], typer.Option(envvar="CONVERGENT_TLS_CLIENT_CERT", help="client certificate for mTLS (PEM)")] = None,
    tls_client_key: Annotated[Optional[Path], typer.Option(envvar="CONVERGENT_TLS_CLIENT_KEY", help="client key for mTLS (PEM)")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an unexpected error [env CONVERGENT_DEBUG]")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")] = False,
) -> None:
    """convergent: fit maps between embedding models' spaces and serve cross-model inference."""
    _TLS.update(ca=tls_ca, cert=tls_client_cert, key=tls_client_key)
    _DEBUG["on"] = _DEBUG["on"] or debug

Address = Annotated[str, typer.Option("--address", envvar="CONVERGENT_ADDRESS", help="server HOST:PORT")]
ApiKey = Annotated[Optional[str], typer.Option("--api-key", envvar="CONVERGENT_API_KEY", help="API key")]
DEFAULT_ADDRESS = "127.0.0.1:50051"


def _client(address: str, api_key: str | None):  # noqa: ANN202
    from convergent.client import Client, TlsConfig

    tls = None
    if any(_TLS.values()):
        tls = TlsConfig(ca_cert=_TLS.get("ca") and str(_TLS["ca"]), client_cert=_TLS.get("cert") and str(_TLS["cert"]),
                        client_key=_TLS.get("key") and str(_TLS["key"]))
    return Client(address, api_key=api_key, tls=tls)


def _fail(error: Exception | str) -> None:
    """Print one line ``error: ...`` on stderr and exit 1."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=1)


@contextmanager
def _connected(address: str, api_key: str | None):  # noqa: ANN202
    """A client for one command; a failed call prints its status and message (with the fix
    for an unreachable server or missing credentials) and exits 1."""
    from convergent.client import errors

    try:
        with _client(address, api_key) as client:
            yield client
    except errors.Unavailable as exc:
        reason = exc.details.rsplit(": ", 1)[-1]
        _fail(f"cannot reach a convergent server at {address} ({reason}): is `convergent serve` running there? "
              f"Set the address with --address or CONVERGENT_ADDRESS")
    except errors.NotFound as exc:
        hints = (("model '", "`convergent models list` shows the registered models; `convergent models register NAME --dim D` adds one"),
                 ("anchor set '", "`convergent anchors list` shows the anchor sets"),
                 ("fit '", "`convergent fits list` shows the fits"),
                 ("gallery '", "`convergent galleries list` shows the galleries"))
        hint = next((text for key, text in hints if key in exc.details), "")
        _fail(f"{exc}; {hint}" if hint else exc)
    except (errors.Unauthenticated, errors.PermissionDenied) as exc:
        _fail(f"{exc}; pass an API key with --api-key or CONVERGENT_API_KEY (make one with `convergent keys create` on the server host)")
    except errors.ConvergentError as exc:
        _fail(exc)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="address to bind [env CONVERGENT_HOST; 127.0.0.1]")] = None,
    port: Annotated[Optional[int], typer.Option(help="port; 0 picks a free one [50051]")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="where the database lives [./convergent-data]")] = None,
    reflection: Annotated[Optional[bool], typer.Option("--reflection/--no-reflection", help="gRPC reflection")] = None,
    workers: Annotated[Optional[int], typer.Option(help="RPC threads [8]")] = None,
    max_message_bytes: Annotated[Optional[int], typer.Option(help="max gRPC message size, both directions [64 MiB]")] = None,
    log_level: Annotated[Optional[str], typer.Option(help="DEBUG, INFO, WARNING, ERROR")] = None,
    log_format: Annotated[Optional[str], typer.Option(help="text or json")] = None,
    require_auth: Annotated[Optional[bool], typer.Option("--require-auth/--no-require-auth", help="API keys required [on unless --host is loopback]")] = None,
    bootstrap_keys_file: Annotated[Optional[Path], typer.Option(help="JSON list of hashed keys (e.g. from a Kubernetes Secret)")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option(help="server certificate chain (PEM): serve TLS")] = None,
    tls_key: Annotated[Optional[Path], typer.Option(help="server private key (PEM)")] = None,
    tls_client_ca: Annotated[Optional[Path], typer.Option(help="CA of client certificates (PEM): require mTLS")] = None,
    max_vectors_per_tenant: Annotated[Optional[int], typer.Option(help="quota of stored vectors per tenant")] = None,
    metrics_port: Annotated[Optional[int], typer.Option(help="serve Prometheus /metrics on this port (0: a free one)")] = None,
    database_url: Annotated[Optional[str], typer.Option(help="e.g. postgresql://user:pass@host/db [SQLite in --data-dir]")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or auto: where fits and exact search run [cpu]")] = None,
    gallery_backend: Annotated[Optional[str], typer.Option(help="local or milvus: where gallery indexes live [local]")] = None,
    milvus_uri: Annotated[Optional[str], typer.Option(help="Milvus URI or milvus-lite .db file [DATA_DIR/milvus.db]")] = None,
) -> None:
    """Run the gRPC server until SIGTERM/SIGINT (settings also from CONVERGENT_* variables)."""
    from pydantic import ValidationError

    from convergent.server import logs
    from convergent.server.errors import StartupError
    from convergent.server.rpc.app import serve as run_server
    from convergent.server.settings import ServerSettings

    flags = {
        "host": host, "port": port, "data_dir": data_dir, "reflection": reflection, "workers": workers,
        "log_level": log_level.upper() if log_level else None, "log_format": log_format,
        "max_receive_message_bytes": max_message_bytes, "max_send_message_bytes": max_message_bytes,
        "require_auth": require_auth, "bootstrap_keys_file": bootstrap_keys_file, "tls_cert": tls_cert,
        "tls_key": tls_key, "tls_client_ca": tls_client_ca, "max_vectors_per_tenant": max_vectors_per_tenant,
        "metrics_port": metrics_port, "database_url": database_url, "device": device,
        "gallery_backend": gallery_backend, "milvus_uri": milvus_uri,
    }
    try:
        settings = ServerSettings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        _fail("; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}" for e in exc.errors())
              or str(exc))
    logs.configure(settings.log_level, settings.log_format)
    try:
        run_server(settings)
    except StartupError as exc:
        _fail(exc)


@app.command()
def health(
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
    wait: Annotated[float, typer.Option(help="keep asking for up to this many seconds (a server that is starting)")] = 0.0,
) -> None:
    """Exit 0 if the server is SERVING, 1 otherwise (for container health checks)."""
    import time

    deadline = time.monotonic() + max(wait, 0.0)
    with _connected(address, api_key) as client:
        while not (serving := client.health()) and time.monotonic() < deadline:
            time.sleep(0.2)
    typer.echo("SERVING" if serving else f"NOT_SERVING or unreachable at {address}")
    raise typer.Exit(code=0 if serving else 1)


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


def _read_arrays(file: Path) -> dict:
    """The arrays of an .npz (np.savez) or .npy (np.save) file; a clear error for anything else."""
    import zipfile

    import numpy as np

    how = "write one with np.savez(FILE, vectors=..., ids=np.array(ids, dtype=str))"
    with open(file, "rb") as handle:
        magic = handle.read(6)
    if not (magic.startswith(b"PK") or magic == b"\x93NUMPY"):
        _fail(f"{file} is not an .npz or .npy file (it does not start like one): {how}")
    try:
        loaded = np.load(file, allow_pickle=False)
    except ValueError as exc:
        if "pickled" in str(exc):
            _fail(f"{file} holds an object (pickled) array, which is never loaded: save numbers and strings only")
        _fail(f"{file} cannot be read ({exc}): {how}")
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        _fail(f"{file} cannot be read as .npz or .npy ({exc}): {how}")
    if isinstance(loaded, np.ndarray):  # .npy: one array
        return {file.stem: loaded}
    with loaded as data:
        arrays = {}
        for name in data.files:
            try:
                arrays[name] = data[name]
            except ValueError:
                _fail(f"{file}: array {name!r} is an object (pickled) array, which is never loaded: save it as numbers "
                      f"or strings (np.array(values, dtype=str))")
        return arrays


def _load_npz(file: Path, key: str | None, model: str, ids_key: str | None, *, need_ids: bool = False,
              row_ids: bool = False):  # noqa: ANN202
    """(vectors, ids or None) from an .npz or .npy file.

    vectors: array ``key`` when given (an error if missing), else the model's name, else the
    only 2-D array. ids: array ``ids_key`` (an error if the file lacks it and ``need_ids``);
    row numbers "0".."n-1" only with ``row_ids``.
    """
    arrays = _read_arrays(file)
    names = sorted(arrays)
    if key is None:
        matrices = [k for k in names if arrays[k].ndim == 2]
        key = model if model in names else (matrices[0] if len(matrices) == 1 else None)
        if key is None:
            _fail(f"{file} holds {matrices or names}: choose the vectors with --key")
    if key not in arrays:
        _fail(f"{file} has no array {key!r} (it has {names}): check --key")
    vectors = arrays[key]
    if vectors.ndim != 2 or not _numeric(vectors):
        _fail(f"{file}: array {key!r} must be a 2-D numeric (rows, dim) array, got {vectors.dtype} {vectors.shape}")
    if row_ids:
        return vectors, [str(i) for i in range(len(vectors))]
    if ids_key is not None and ids_key in arrays:
        ids = arrays[ids_key]
        if ids.ndim != 1 or len(ids) != len(vectors):
            _fail(f"{file}: ids {ids_key!r} must be 1-D with one id per row ({len(vectors)}), got shape {ids.shape}")
        return vectors, [str(i) for i in ids]
    if need_ids:
        _fail(f"{file} has no ids array {ids_key!r} (it has {names}): add one, name it with --ids-key, "
              f"or pass --row-ids to use the row numbers 0..{len(vectors) - 1} as ids")
    return vectors, None


def _numeric(a) -> bool:  # noqa: ANN001
    import numpy as np

    return bool(np.issubdtype(a.dtype, np.number)) and a.dtype != bool


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


@galleries_app.command("list")
def galleries_list(address: Address = DEFAULT_ADDRESS, api_key: ApiKey = None) -> None:
    """List galleries with their model, index and size."""
    with _connected(address, api_key) as client:
        galleries = client.list_galleries()
    typer.echo(f"{'name':<32} {'model':<24} {'version':>7} {'index':<6} {'size':>9}")
    for g in galleries:
        typer.echo(f"{g.name:<32} {g.model:<24} {g.model_version:>7} {g.index:<6} {g.size:>9}")


@galleries_app.command("show")
def galleries_show(name: str, address: Address = DEFAULT_ADDRESS, api_key: ApiKey = None) -> None:
    """Show one gallery."""
    with _connected(address, api_key) as client:
        g = client.get_gallery(name)
    typer.echo(f"gallery {g.name}: model {g.model} v{g.model_version}, index {g.index}, {g.size} items")


@galleries_app.command("delete")
def galleries_delete(name: str, address: Address = DEFAULT_ADDRESS, api_key: ApiKey = None) -> None:
    """Delete a gallery and every item in it (admin)."""
    with _connected(address, api_key) as client:
        client.delete_gallery(name)
    typer.echo(f"deleted gallery {name}")


@galleries_app.command("remove")
def galleries_remove(
    name: str,
    ids: Annotated[list[str], typer.Option("--id", help="id to remove (repeatable)")],
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Remove items from a gallery by id (erasure requests)."""
    with _connected(address, api_key) as client:
        removed = client.remove(name, ids)
    typer.echo(f"removed {removed} of {len(ids)} ids from {name}")


@app.command()
def erase(
    ids: Annotated[list[str], typer.Argument(help="subject ids to erase from every anchor set and gallery")],
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Erase subjects everywhere in the tenant (admin); fits on changed anchor sets become stale."""
    with _connected(address, api_key) as client:
        report = client.erase(ids)
    typer.echo(f"erased {report.anchors_deleted} anchors and {report.gallery_items_deleted} gallery items; "
               f"anchor sets changed {report.anchor_sets_changed or '[]'}, galleries changed {report.galleries_changed or '[]'}, "
               f"stale fits {report.stale_fits or '[]'}")


@app.command()
def usage(address: Address = DEFAULT_ADDRESS, api_key: ApiKey = None) -> None:
    """The caller's tenant, its stored vectors against the quota, and the key's role."""
    with _connected(address, api_key) as client:
        u = client.usage()
    quota = f"of {u.max_vectors}" if u.max_vectors else "(no quota)"
    typer.echo(f"tenant {u.tenant}: {u.stored_vectors} vectors stored {quota}; key {u.key_id or '-'} role {u.role}")


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


def _parse_params(pairs: list[str]) -> dict:
    """``key=value`` pairs; values are JSON (numbers, true/false, lists) or plain strings."""
    import json

    params = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            _fail(ValueError(f"--param takes key=value, got {pair!r}"))
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _print_fit(fit) -> None:  # noqa: ANN001
    stale = " (stale)" if fit.stale else ""
    typer.echo(f"fit {fit.id}: {fit.source} -> {fit.target} on {fit.anchor_set}, method {fit.method}"
               f" (requested {fit.requested_method}){stale}")
    typer.echo(f"  params: {fit.params}")
    for key in sorted(fit.metrics):
        typer.echo(f"  {key:<32} {fit.metrics[key]:.4g}")
    for warning in fit.warnings:
        typer.echo(f"  warning: {warning}")


@app.command()
def fit(
    source: Annotated[str, typer.Option(help="model the map starts from")],
    target: Annotated[str, typer.Option(help="model the map goes to")],
    anchor_set: Annotated[str, typer.Option(help="anchor set both models embedded")],
    method: Annotated[str, typer.Option(help="one of: " + "; ".join(f"{name} ({what})" for name, what in FIT_METHODS.items()))] = "auto",
    param: Annotated[Optional[list[str]], typer.Option(help="hyper-parameter key=value (repeatable)")] = None,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Fit a source -> target map and print its held-out diagnostics."""
    params = _parse_params(param or [])
    with _connected(address, api_key) as client:
        info = client.fit_alignment(source, target, anchor_set=anchor_set, method=method, **params)
    _print_fit(info)


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


@app.command()
def enroll(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz with the vectors and ids")],
    gallery: Annotated[str, typer.Option(help="gallery to enroll into (created on first enroll)")],
    model: Annotated[str, typer.Option(help="model the vectors come from")],
    index: Annotated[str, typer.Option(help="exact or hnsw (used when the gallery is created)")] = "exact",
    key: Annotated[Optional[str], typer.Option(help="array in the .npz (default: the model name, else the only 2-D array)")] = None,
    ids_key: Annotated[str, typer.Option(help="array of ids")] = "ids",
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Enroll vectors into a gallery, with a progress bar."""
    vectors, ids = _load_npz(file, key, model, ids_key, need_ids=True)
    with _connected(address, api_key) as client:
        size = client.enroll(gallery=gallery, model=model, ids=ids, vectors=vectors, index=index, progress=True)
    typer.echo(f"enrolled {len(ids)} vectors of {model} into {gallery}; gallery size {size}")


@app.command()
def identify(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz with the probe vectors")],
    gallery: Annotated[str, typer.Option(help="gallery to search")],
    model: Annotated[str, typer.Option(help="model the probes come from")],
    k: Annotated[int, typer.Option(help="candidates per probe")] = 5,
    key: Annotated[Optional[str], typer.Option(help="array in the .npz")] = None,
    out: Annotated[Optional[Path], typer.Option(help=".npz to write ids (n, k) and scores (n, k)")] = None,
    scoring: Annotated[str, typer.Option(help="cosine, or csls (hubness-corrected; probes routed through a map)")] = "cosine",
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Identify probes of one model against a gallery (of any model with a route to it)."""
    import numpy as np

    vectors, probe_ids = _load_npz(file, key, model, "ids")
    with _connected(address, api_key) as client:
        result = client.identify(gallery=gallery, vectors=vectors, model=model, k=k, scoring=scoring)
    typer.echo(f"route: {result.route}; top-1 of the first probes ({result.scoring}, higher = more similar):")
    for i, (row, scores) in enumerate(zip(result.ids[:10], result.scores[:10])):
        name = probe_ids[i] if probe_ids else str(i)
        typer.echo(f"  {name}: {row[0] if row else '-'} ({scores[0]:.3f})" if row else f"  {name}: -")
    if out is not None:
        np.savez(out, ids=np.array(result.ids, dtype=str), scores=result.scores)
        typer.echo(f"wrote ids and scores {result.scores.shape} to {out}")


@app.command()
def verify(
    a_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz with the a vectors")],
    b_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz with the b vectors (row-paired)")],
    a_model: Annotated[str, typer.Option(help="model of the a vectors")],
    b_model: Annotated[str, typer.Option(help="model of the b vectors")],
    far: Annotated[float, typer.Option(help="false-accept rate the threshold is calibrated for")] = 1e-3,
    out: Annotated[Optional[Path], typer.Option(help=".npz to write scores and accept")] = None,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Verify row-paired vectors of two models at a calibrated threshold."""
    import numpy as np

    a, _ = _load_npz(a_file, None, a_model, "ids")
    b, _ = _load_npz(b_file, None, b_model, "ids")
    with _connected(address, api_key) as client:
        result = client.verify(a=a, a_model=a_model, b=b, b_model=b_model, far=far)
    typer.echo(f"threshold {result.threshold:.4f} for FAR {far:g}, route {result.route}, calibration {result.calibration}:")
    typer.echo(f"  measured on {result.calibration_pairs}")
    typer.echo(f"  there: FAR {result.far_calibration:.2g} on {result.n_impostor} impostor pairs, "
               f"TAR {result.tar_calibration:.3f} on {result.n_genuine} genuine pairs")
    typer.echo(f"accepted {int(result.accept.sum())} of {len(result.accept)} pairs")
    if out is not None:
        np.savez(out, scores=result.scores, accept=result.accept)


@app.command()
def calibrate(
    a_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz with the a vectors")],
    b_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz with the b vectors (row-paired)")],
    a_model: Annotated[str, typer.Option(help="model of the a vectors")],
    b_model: Annotated[str, typer.Option(help="model of the b vectors")],
    same_key: Annotated[str, typer.Option(help="bool array (in the a or b file): row i shows one subject in a and b")] = "same",
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Store labelled pairs for a model pair: verify then calibrates on them instead of the anchors."""

    a, _ = _load_npz(a_file, None, a_model, "ids")
    b, _ = _load_npz(b_file, None, b_model, "ids")
    same = None
    for file in (a_file, b_file):
        arrays = _read_arrays(file)
        if same_key in arrays:
            same = arrays[same_key]
            break
    if same is None:
        _fail(ValueError(f"neither {a_file} nor {b_file} has a {same_key!r} array: name it with --same-key"))
    if same.dtype != bool:
        _fail(ValueError(f"{same_key!r} must be a bool array (True = same subject), got dtype {same.dtype}"))
    with _connected(address, api_key) as client:
        used = client.calibrate(a=a, a_model=a_model, b=b, b_model=b_model, same=same)
    typer.echo(f"stored {used['genuine']} genuine and {used['impostor']} impostor labelled pairs for {a_model} -> {b_model}; "
               f"verify now calibrates on them")


@app.command("verification-report")
def verification_report(
    a_model: Annotated[str, typer.Option(help="model of the a (probe) side")],
    b_model: Annotated[str, typer.Option(help="model of the b (reference) side")],
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Operating points of the calibration verify uses: TAR at FAR 1e-2 / 1e-3 / 1e-4 and the EER."""
    with _connected(address, api_key) as client:
        report = client.verification_report(a_model=a_model, b_model=b_model)
    typer.echo(f"{a_model} -> {b_model}, route {report.route}, calibration {report.calibration}:")
    typer.echo(f"  measured on {report.calibration_pairs}")
    typer.echo(f"  {report.n_genuine} genuine, {report.n_impostor} impostor pairs ({report.n_excluded} excluded)")
    for p in report.points:
        typer.echo(f"  FAR {p.requested_far:g}: threshold {p.threshold:.4f}, FAR {p.far:.2g}, TAR {p.tar:.3f}")
    if len(report.points) < 3:
        typer.echo(f"  (smaller FARs need at least 10/FAR impostor pairs; there are {report.n_impostor})")
    typer.echo(f"  EER {report.eer:.4f} at threshold {report.eer_threshold:.4f}")


@app.command()
def backup(
    out: Annotated[Path, typer.Argument(help="backup file to write (.tar, or .tar.gz to compress)")],
    data_dir: Annotated[Path, typer.Option(envvar="CONVERGENT_DATA_DIR", help="the server's data folder")] = Path("./convergent-data"),
    verify_only: Annotated[bool, typer.Option("--verify", help="only check an existing backup file OUT")] = False,
) -> None:
    """Consistent backup of a data folder, safe while the server is serving (SQLite online backup)."""
    from convergent.server.storage import backup as backups

    try:
        if verify_only:
            info = backups.verify_backup(out)
        else:
            info = backups.backup_sqlite(backups.database_path(data_dir), out)
    except (backups.BackupError, OSError) as exc:
        _fail(exc)
    rows = ", ".join(f"{t}={n}" for t, n in sorted(info.tables.items()))
    verb = "verified" if verify_only else "wrote"
    typer.echo(f"{verb} {info.path} ({info.size_bytes} bytes; schema {info.alembic_revision}; sha256 {info.sha256[:12]}…): {rows}")


@app.command()
def restore(
    backup_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="backup written by `convergent backup`")],
    data_dir: Annotated[Path, typer.Option(envvar="CONVERGENT_DATA_DIR", help="data folder to restore into")] = Path("./convergent-data"),
    force: Annotated[bool, typer.Option(help="replace an existing database (never one a running server has open)")] = False,
) -> None:
    """Restore a backup into a data folder (verified before anything is replaced)."""
    from convergent.server.storage import backup as backups

    try:
        info = backups.restore_sqlite(backup_file, data_dir, force=force)
    except (backups.BackupError, OSError) as exc:
        _fail(exc)
    note = f"; the server migrates it from {info.alembic_revision} to {info.head_revision} at start-up" if info.needs_migration else ""
    typer.echo(f"restored {info.database_path} ({info.database_bytes} bytes){note}")


def _key_store(data_dir: Path):  # noqa: ANN202
    from convergent.server.settings import ServerSettings
    from convergent.server.storage.key_store import KeyStore
    from convergent.server.storage.sql import SqlStore

    store = SqlStore(ServerSettings(data_dir=data_dir).resolved_database_url())
    return store, KeyStore(store.engine)


DataDir = Annotated[Path, typer.Option(envvar="CONVERGENT_DATA_DIR", help="the server's data folder")]


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Argument(help="the tenant (federation) the key belongs to")],
    data_dir: DataDir = Path("./convergent-data"),
    role: Annotated[str, typer.Option(help="reader, party or admin")] = "party",
    name: Annotated[str, typer.Option(help="who holds the key")] = "",
    bootstrap_out: Annotated[Optional[Path], typer.Option(help="append the hashed key to this JSON file instead of the database")] = None,
) -> None:
    """Create an API key; prints it on the last line (only its hash is stored)."""
    import json

    from convergent.server.errors import ConvergentError as ServerError
    from convergent.server.rpc.auth import check_role, hash_secret, new_key
    from convergent.wire import WireError, check_name

    try:
        check_name(tenant, "tenant name")
        check_role(role)
    except (WireError, ServerError) as exc:
        _fail(exc)
    key_id, secret, key = new_key()
    entry = {"key_id": key_id, "tenant": tenant, "role": role, "name": name or key_id, "secret_sha256": hash_secret(secret)}
    if bootstrap_out is not None:
        entries = json.loads(bootstrap_out.read_text()) if bootstrap_out.exists() else []
        bootstrap_out.write_text(json.dumps([*entries, entry], indent=2) + "\n")
        typer.echo(f"appended key {key_id} ({role} of {tenant}) to {bootstrap_out}")
    else:
        store, keys = _key_store(data_dir)
        keys.insert(key_id, tenant, entry["name"], role, entry["secret_sha256"])
        store.close()
        typer.echo(f"created key {key_id} ({role} of {tenant}); keep it secret, it is not shown again:")
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    data_dir: DataDir = Path("./convergent-data"),
    tenant: Annotated[Optional[str], typer.Option(help="only this tenant")] = None,
) -> None:
    """List keys (ids, tenants, roles; never secrets)."""
    store, keys = _key_store(data_dir)
    rows = keys.list(tenant)
    store.close()
    typer.echo(f"{'key id':<14} {'tenant':<20} {'role':<8} {'name':<20} status")
    for r in rows:
        typer.echo(f"{r.key_id:<14} {r.tenant:<20} {r.role:<8} {r.name:<20} {'revoked' if r.revoked_at else 'active'}")


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = Path("./convergent-data")) -> None:
    """Revoke a key: calls with it are UNAUTHENTICATED from now on."""
    from convergent.server.errors import NotFound

    store, keys = _key_store(data_dir)
    try:
        keys.revoke(key_id)
    except NotFound as exc:
        _fail(exc)
    finally:
        store.close()
    typer.echo(f"revoked {key_id}")


@app.command()
def audit(
    data_dir: DataDir = Path("./convergent-data"),
    tenant: Annotated[Optional[str], typer.Option(help="only this tenant")] = None,
    limit: Annotated[int, typer.Option(help="newest entries to show")] = 50,
) -> None:
    """Who (key id) called identify, verify, delete or erase, when, on what, and the outcome."""
    import datetime

    store, keys = _key_store(data_dir)
    rows = keys.audit_entries(tenant, limit)
    store.close()
    for r in rows:
        at = datetime.datetime.fromtimestamp(r.at, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(f"{at}Z {r.tenant} key={r.key_id} {r.method} {r.target} -> {r.outcome} [{r.request_id}]")


@app.command("example-data")
def example_data(
    folder: Annotated[Path, typer.Argument(help="where to write anchors.npz, gallery.npz, probes.npz")] = Path("."),
    realdata: Annotated[Optional[Path], typer.Option(help="folder of real embeddings [../shared/realdata]")] = None,
    synthetic: Annotated[bool, typer.Option(help="synthetic identities even when real data is present")] = False,
) -> None:
    """Write the README tour's files: two face models' anchors, a gallery and probes."""
    from convergent.server.datasets import write_tour_files

    provenance = write_tour_files(folder, realdata=realdata, synthetic=synthetic)
    typer.echo(f"wrote anchors.npz (200 anchors, dlib + facenet), gallery.npz (20 people, facenet), "
               f"probes.npz (180 photos, dlib) to {folder}: {provenance}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for the report")] = Path("convergent-report"),
    realdata: Annotated[Optional[Path], typer.Option(help="folder of real embeddings [../shared/realdata]")] = None,
    quick: Annotated[bool, typer.Option(help="smaller run (used by the test suite)")] = False,
    synthetic: Annotated[bool, typer.Option(help="ignore real data even when present")] = False,
) -> None:
    """Start an embedded server, play the parties, and print what happened."""
    from convergent.server.demo import run_demo

    run_demo(out=out, realdata=realdata, quick=quick, synthetic=synthetic)


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
