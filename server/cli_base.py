"""What every ``convergent`` command shares: the typer apps, global options, the client
connection with its error lines, and the .npz readers. Commands live in ``cli_*`` modules."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

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


def _fail(error: Exception | str, code: int = 1) -> None:
    """Print one line ``error: ...`` on stderr and exit with ``code`` (1)."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=code)


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
    metrics = dict(fit.metrics)
    auto = {k: metrics.pop(k) for k in sorted(metrics) if k.startswith("auto.")}
    if "n_heldout" in metrics:
        n_fit = f"; condition_number: of the {metrics['n_fit']:.0f} fitting anchors, lower is better" if "n_fit" in metrics else ""
        typer.echo(f"  scores measured on {metrics['n_heldout']:.0f} held-out anchors of {metrics.get('n_anchors', 0):.0f} "
                   f"(never used to fit; higher is better{n_fit}):")
    for key in sorted(metrics):
        typer.echo(f"  {key:<32} {metrics[key]:.4g}")
    candidates = sorted({k.split(".")[1] for k in auto}, key=lambda c: -auto.get(f"auto.{c}.margin", 0.0))
    if candidates:
        typer.echo("  auto's candidates on the same held-out anchors (it takes the simplest whose gap to the best "
                   "margin is within its allowance):")
        for c in candidates:
            typer.echo(f"    {c:<20} margin {auto.get(f'auto.{c}.margin', float('nan')):.4g} "
                       f"± {auto.get(f'auto.{c}.stderr', float('nan')):.2g}   gap {auto.get(f'auto.{c}.gap', float('nan')):.3g}"
                       f" (allowed {auto.get(f'auto.{c}.gap_allowed', float('nan')):.3g})")
    for warning in fit.warnings:
        typer.echo(f"  warning: {warning}")
