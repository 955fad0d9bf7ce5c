"""Alembic environment: runs on the connection handed over by :func:`convergent.server.storage.db.migrate`."""

from alembic import context

from convergent.server.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only the programmatic path is supported
    raise RuntimeError("run migrations through convergent.server.storage.db.migrate()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
