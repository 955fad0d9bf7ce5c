"""Commands of encryption at rest, run on the server host: keygen, encrypt, rotate-master-key,
rotate-data-key, tenant delete (see docs/operations.md, "Encryption at rest")."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from convergent.server.cli_base import _fail, app

tenant_app = typer.Typer(help="Tenants of a store on this host (offline, the server stopped).", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")

DataDir = Annotated[Path, typer.Option(envvar="CONVERGENT_DATA_DIR", help="the server's data folder")]
MasterKeyFile = Annotated[Optional[Path], typer.Option(
    help="the master key (from `convergent keygen`) [or CONVERGENT_MASTER_KEY]")]
DatabaseUrl = Annotated[Optional[str], typer.Option(help="this database instead of DATA_DIR's SQLite file (e.g. postgresql://…)")]
KeyringFile = Annotated[Optional[Path], typer.Option(help="the keyring [DATA_DIR/keyring.json]")]


def _master_key(master_key_file: Path | None):  # noqa: ANN202 - a LocalMasterKey
    import os

    from convergent.server.storage import master_keys

    key = master_keys.load(master_key_file, os.environ.get(master_keys.MASTER_KEY_ENV))
    if key is None:
        _fail("give the master key: --master-key-file FILE (make one with `convergent keygen --out FILE`) or "
              f"${master_keys.MASTER_KEY_ENV}", code=2)
    return key


def _settings(data_dir: Path, database_url: str | None, keyring_file: Path | None, offline: bool = True):  # noqa: ANN202
    """The settings of the store these commands act on; ``offline``: refuse a SQLite store that
    another process (a running server) has open. (On PostgreSQL, stopping every replica is the
    operator's part.)"""
    from convergent.server.settings import ServerSettings
    from convergent.server.storage import backup  # noqa: F401 - backup imports restore: load it first
    from convergent.server.storage.restore import in_use

    path = data_dir / "convergent.sqlite3"
    if database_url is None and not path.is_file():
        _fail(f"no database in {data_dir}: is --data-dir the folder `convergent serve --data-dir` was given?", code=2)
    if offline and database_url is None and in_use(path):
        _fail(f"{path} is open in another process (a running server?): stop it first")
    return ServerSettings(data_dir=data_dir, database_url=database_url, keyring_file=keyring_file)


@app.command()
def encrypt(
    master_key_file: MasterKeyFile = None,
    data_dir: DataDir = Path("./convergent-data"),
    database_url: DatabaseUrl = None,
    keyring_file: KeyringFile = None,
    rows_per_transaction: Annotated[int, typer.Option(min=1, max=1024, help="rows sealed per transaction (a block is up to 2 MiB)")] = 8,
) -> None:
    """Encrypt a store in clear, in place, with the server stopped: every stored vector and map is
    sealed under per-tenant data keys, wrapped by tenant keys in the keyring, sealed by the master
    key. Crash-safe; run it again after an interruption and it goes on where it stopped."""
    from tqdm.auto import tqdm

    from convergent.server.errors import StartupError
    from convergent.server.storage import db, encrypt_store

    key = _master_key(master_key_file)
    settings = _settings(data_dir, database_url, keyring_file)
    typer.echo(f"checking and sealing {settings.resolved_database_url()} (master key {key.key_id})…")
    sys.stdout.flush()
    engine = db.create_engine(settings.resolved_database_url())
    try:
        db.migrate(engine)
        with tqdm(desc="sealing", unit="row", disable=None) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            report = encrypt_store.encrypt(engine, key, settings.resolved_keyring_file(), progress, rows_per_transaction)
    except StartupError as exc:
        _fail(exc)
    finally:
        engine.dispose()
    if report.already:
        typer.echo(f"the store is encrypted already (master key {key.key_id}); nothing to do")
        return
    rows = ", ".join(f"{n} {table}" for table, n in report.sealed.items() if n) or "no rows (the store was empty)"
    typer.echo(f"encrypted the store under master key {key.key_id} in {report.seconds:.1f} s: sealed {rows}; tenant "
               f"keys in {settings.resolved_keyring_file()} (copy it, with the master key, apart from the data backups); "
               f"start the server with `convergent serve --master-key-file {master_key_file or 'FILE'}`")


@app.command()
def keygen(
    out: Annotated[Path, typer.Option(help="file to create (it must not exist); mode 600")],
) -> None:
    """Create a master key file for `convergent serve --master-key-file` (encryption at rest).

    Keep a copy away from the data folder and its backups: without it the store cannot be read."""
    from convergent.server.storage import master_keys

    try:
        key = master_keys.write_new_key(out)
    except FileExistsError:
        _fail(f"{out} exists; a master key file is never overwritten (its store would become unreadable)")
    except OSError as exc:
        _fail(f"cannot create {out}: {exc}")
    typer.echo(f"created master key {key.key_id} in {out} (mode 600); back it up apart from the data")


@app.command("rotate-master-key")
def rotate_master_key(
    new_master_key_file: Annotated[Path, typer.Option(help="the new master key (from `convergent keygen`)")],
    master_key_file: MasterKeyFile = None,
    data_dir: DataDir = Path("./convergent-data"),
    keyring_file: KeyringFile = None,
) -> None:
    """Seal the keyring's tenant keys under a new master key (one atomic rewrite, seconds; the data
    and its data keys do not change). Then start the server with the new key, and destroy the old
    one once every copy of the keyring is of the new one."""
    from convergent.server.errors import StartupError
    from convergent.server.settings import ServerSettings
    from convergent.server.storage import key_rotation, master_keys

    old = _master_key(master_key_file)
    try:
        new = master_keys.read_key_file(new_master_key_file)
        path = ServerSettings(data_dir=data_dir, keyring_file=keyring_file).resolved_keyring_file()
        keyring = key_rotation.rotate_master_key(path, old, new)
    except StartupError as exc:
        _fail(exc)
    typer.echo(f"the keyring {path} ({len(keyring.tenants())} tenant keys) is sealed by master key {new.key_id} now "
               f"(was {old.key_id}); start the server with --master-key-file {new_master_key_file}")


@app.command("rotate-data-key")
def rotate_data_key(
    tenant: Annotated[list[str], typer.Argument(help="tenants whose data key to rotate")],
    master_key_file: MasterKeyFile = None,
    data_dir: DataDir = Path("./convergent-data"),
    database_url: DatabaseUrl = None,
    keyring_file: KeyringFile = None,
    now: Annotated[bool, typer.Option("--now/--in-background",
                                      help="re-seal every row here and now (server stopped) instead of leaving it to the running server")] = False,
) -> None:
    """Give tenants a new data key: new writes are sealed under it at once, and the rows under the
    old one are re-sealed in the background by the running server (or here, --now); the old key is
    destroyed once no row uses it."""
    from tqdm.auto import tqdm

    from convergent.server.errors import StartupError
    from convergent.server.storage.sql import SqlStore

    key = _master_key(master_key_file)
    settings = _settings(data_dir, database_url, keyring_file, offline=now)
    try:
        store = SqlStore(settings.resolved_database_url(), key, settings.resolved_keyring_file())
    except StartupError as exc:
        _fail(exc)
    if not store.encrypted:
        _fail("this store is in clear: encrypt it first (`convergent encrypt`)")
    holders = {row.tenant for row in store.rotation.keys()}
    unknown = [name for name in tenant if name not in holders]
    if unknown:
        _fail(f"no data key to rotate for tenant(s) {', '.join(map(repr, unknown))}: they have stored nothing sealed")
    for name in tenant:
        typer.echo(f"tenant {name!r}: data key {store.rotation.rotate_data_key(name)} is the newest now")
    if now:
        with tqdm(desc="re-sealing", unit="row", disable=None) as bar:
            while not (report := store.rotation.step(rows=32, grace_s=0.0)).idle:
                bar.update(report.resealed)
                for tenant_name, version in report.dropped_keys:
                    typer.echo(f"tenant {tenant_name!r}: data key {version} destroyed (no row uses it)")
                if report.damaged and not report.resealed and not report.dropped_keys:
                    break
    store.close()


@tenant_app.command("delete")
def tenant_delete(
    tenant: Annotated[str, typer.Argument(help="the tenant to destroy")],
    yes: Annotated[bool, typer.Option("--yes", help="do it (without --yes, only say what would go)")] = False,
    master_key_file: MasterKeyFile = None,
    data_dir: DataDir = Path("./convergent-data"),
    database_url: DatabaseUrl = None,
    keyring_file: KeyringFile = None,
) -> None:
    """Delete a tenant and all it holds, with the server stopped. In an encrypted store its key is
    destroyed in the keyring first (crypto-shredding): its vectors in every older backup become
    unreadable too."""
    import os

    import sqlalchemy as sa

    from convergent.server.errors import StartupError
    from convergent.server.storage import db, envelope, key_rotation, master_keys
    from convergent.server.storage.keyring import Keyring
    from convergent.server.storage.schema import models

    settings = _settings(data_dir, database_url, keyring_file)
    engine = db.create_engine(settings.resolved_database_url())
    try:
        db.migrate(engine)
        with engine.connect() as conn:
            encrypted = envelope.read_setting(conn) is not None
            held = conn.execute(sa.select(sa.func.count()).select_from(models).where(models.c.tenant == tenant)).scalar()
        keyring = None
        if encrypted:
            key = master_keys.load(master_key_file, os.environ.get(master_keys.MASTER_KEY_ENV))
            if key is None:
                _fail("this store is encrypted: give its master key (--master-key-file) to destroy the tenant's key", code=2)
            keyring = Keyring(settings.resolved_keyring_file(), key)
        if not yes:
            typer.echo(f"would delete tenant {tenant!r} ({held} models and everything of theirs)"
                       + (" and destroy its key in the keyring" if encrypted else "") + "; run again with --yes")
            return
        deleted = key_rotation.delete_tenant(engine, keyring, tenant)
    except StartupError as exc:
        _fail(exc)
    finally:
        engine.dispose()
    rows = ", ".join(f"{n} {table}" for table, n in deleted.items()) or "no rows"
    shredded = "; its key is destroyed: its data in older backups cannot be read" if encrypted else ""
    typer.echo(f"deleted tenant {tenant!r}: {rows}{shredded}")
