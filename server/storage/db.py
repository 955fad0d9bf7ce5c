"""Engine creation and schema migration.

SQLite (the default) runs in WAL mode with ``synchronous=FULL``: a committed transaction
survives a crash or power loss, and readers never block the writer. Write transactions
start with ``BEGIN IMMEDIATE`` so two writers queue on the busy timeout instead of failing
halfway. On PostgreSQL (several server replicas on one database) write transactions take a
transaction-level advisory lock, the same one-writer-at-a-time rule.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 60_000


# Key of the PostgreSQL advisory lock that write transactions take (one writer at a time, as
# with SQLite's BEGIN IMMEDIATE): read-modify-write of counters stays correct across replicas.
WRITE_LOCK_KEY = 0x636F6E76  # "conv"


def create_engine(url: str) -> sa.Engine:
    """Create an engine for ``url``; for SQLite, create the parent folder and set the pragmas."""
    if not url.startswith("sqlite"):
        # Reads see one snapshot (REPEATABLE READ), like SQLite's WAL readers; writers switch to
        # READ COMMITTED (see write_connection) so that, once they hold the write lock, they
        # see everything committed before it.
        engine = sa.create_engine(url, pool_pre_ping=True, isolation_level="REPEATABLE READ")
        if engine.dialect.name == "postgresql":

            @event.listens_for(engine, "begin")
            def _serialize_writes(connection):  # noqa: ANN001
                if connection.get_execution_options().get("write"):
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")

        return engine
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001
        # Let SQLAlchemy, not the driver, emit BEGIN (the driver's implicit transactions
        # would start DEFERRED and break BEGIN IMMEDIATE below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # noqa: ANN001
        mode = "IMMEDIATE" if connection.get_execution_options().get("write") else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest migration shipped with this version of convergent."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def write_connection(engine: sa.Engine) -> sa.Connection:
    """A connection whose transactions are writes: one writer at a time on every backend."""
    options: dict = {"write": True}
    if engine.dialect.name != "sqlite":
        options["isolation_level"] = "READ COMMITTED"
    return engine.connect().execution_options(**options)


def read_connection(engine: sa.Engine) -> sa.Connection:
    """A connection whose transactions read one consistent snapshot."""
    return engine.connect()


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (creates every table on a new database)."""
    config = _config()
    with write_connection(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()


def downgrade(engine: sa.Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (the migrations' ``downgrade`` steps; data they
    moved is moved back). For going back to an earlier release; take a backup first."""
    config = _config()
    with write_connection(engine) as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
        connection.commit()


def current_revision(engine: sa.Engine) -> str | None:
    """The Alembic revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
