"""Commands run on or for the server host: serve, health, backup, check, restore, keys, audit, example data, demo."""

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
    app,
    keys_app,
)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="address to bind [env CONVERGENT_HOST; 127.0.0.1]")] = None,
    port: Annotated[Optional[int], typer.Option(help="port; 0 picks a free one [50051]")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="where the database lives [./convergent-data]")] = None,
    reflection: Annotated[Optional[bool], typer.Option("--reflection/--no-reflection", help="gRPC reflection")] = None,
    workers: Annotated[Optional[int], typer.Option(help="RPC threads for unary calls (streams get --max-streams more) [8]")] = None,
    max_streams: Annotated[Optional[int], typer.Option(help="streaming calls open at once [64]")] = None,
    max_streams_per_client: Annotated[Optional[int], typer.Option(help="streaming calls open at once per client connection [8]")] = None,
    stream_idle_seconds: Annotated[Optional[float], typer.Option(help="end a request stream silent this long [30]")] = None,
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
    allow_damaged: Annotated[Optional[bool], typer.Option(
        "--allow-damaged/--refuse-damaged",
        help="serve a store the start-up check finds damaged; its damaged objects answer DATA_LOSS [refuse]")] = None,
    startup_check: Annotated[Optional[str], typer.Option(
        help="full (every checksum, ~3 s per GB) or quick (structure and counts) check of the store at start [full]")] = None,
    master_key_file: Annotated[Optional[Path], typer.Option(
        help="master key file (mode 600, from `convergent keygen`): the store is encrypted at rest [off; or "
        "CONVERGENT_MASTER_KEY]")] = None,
    keyring_file: Annotated[Optional[Path], typer.Option(help="the tenants' keys of an encrypted store [DATA_DIR/keyring.json]")] = None,
    data_key_max_age_days: Annotated[Optional[float], typer.Option(help="rotate each tenant's data key at this age (encrypted store) [off]")] = None,
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
        "gallery_backend": gallery_backend, "milvus_uri": milvus_uri, "allow_damaged": allow_damaged,
        "startup_check": startup_check, "master_key_file": master_key_file, "keyring_file": keyring_file,
        "data_key_max_age_days": data_key_max_age_days,
        "max_streams": max_streams, "max_streams_per_client": max_streams_per_client,
        "stream_idle_seconds": stream_idle_seconds,
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
    if info.tables.get("store_settings"):
        typer.echo("the store is encrypted: the backup holds sealed data and wrapped data keys only; restoring it needs "
                   "the master key and the keyring (DATA_DIR/keyring.json), which it does not hold: keep them apart")


@app.command()
def check(
    data_dir: Annotated[Path, typer.Option(envvar="CONVERGENT_DATA_DIR", help="the server's data folder")] = Path("./convergent-data"),
    database_url: Annotated[Optional[str], typer.Option(help="check this database instead (e.g. postgresql://…)")] = None,
) -> None:
    """Check a store for damage, offline: the database's own integrity check, every count against
    its records and the checksum of every stored vector block. Exit 0: none found; 1: damaged;
    2: nothing to check (no database there, or one of another schema)."""
    import time

    from convergent.server.storage import backup as backups
    from convergent.server.storage import db
    from convergent.server.storage.integrity import full_check, inventory

    if database_url is None:
        path = backups.database_path(data_dir)
        if not path.is_file():
            _fail(f"no database at {path}: is --data-dir the folder `convergent serve --data-dir` was given?", code=2)
        database_url = f"sqlite:///{path}"
    engine = db.create_engine(database_url)
    try:
        if db.current_revision(engine) != db.head_revision():
            _fail(f"the store is at schema {db.current_revision(engine)}, this convergent checks {db.head_revision()}: "
                  "start `convergent serve` on it once (it migrates and adds the checksums), then check it", code=2)
        started = time.perf_counter()
        damage = full_check(engine)
        counts = inventory(engine)
    finally:
        engine.dispose()
    checked = ", ".join(f"{n} {what}" for what, n in counts.items())
    for finding in damage:
        typer.echo(f"DAMAGED  {finding}")
    verdict = f"{len(damage)} findings" if damage else "no damage found"
    typer.echo(f"checked {engine.url.render_as_string(hide_password=True)} in {time.perf_counter() - started:.1f} s "
               f"({checked}): {verdict}")
    raise typer.Exit(code=1 if damage else 0)


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
    if info.tables.get("store_settings") and not (data_dir / "keyring.json").exists():
        typer.echo(f"the store is encrypted: put its keyring at {data_dir / 'keyring.json'} (or give --keyring-file) and "
                   "start the server with its master key")


def _key_store(data_dir: Path):  # noqa: ANN202
    from convergent.server.settings import ServerSettings
    from convergent.server.storage.key_store import KeyStore
    from convergent.server.storage.sql import SqlStore

    store = SqlStore(ServerSettings(data_dir=data_dir).resolved_database_url(), locked_ok=True)  # API keys are not sealed
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
    folder: Annotated[Path, typer.Argument(help="where to write anchors.npz, gallery.npz, probes.npz (and tour.json + *.f32)")] = Path("."),
    realdata: Annotated[Optional[Path], typer.Option(help="folder of real embeddings [../shared/realdata]")] = None,
    synthetic: Annotated[bool, typer.Option(help="synthetic identities even when real data is present")] = False,
) -> None:
    """Write the README tour's files: two face models' anchors, a gallery and probes."""
    from convergent.server.datasets import write_tour_files

    provenance = write_tour_files(folder, realdata=realdata, synthetic=synthetic)
    typer.echo(f"wrote anchors.npz (200 anchors, dlib + facenet), gallery.npz (20 people, facenet), "
               f"probes.npz (180 photos, dlib) to {folder}, and the same as tour.json + *.f32 for clients in "
               f"other languages (examples/node): {provenance}")


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
