"""Durable storage behind the Protocols of :mod:`convergent.server.storage.protocols`."""


def open_store(url: str):  # noqa: ANN201 - a Store
    """Open (and migrate) the store at a SQLAlchemy URL: SQLite file or PostgreSQL."""
    from convergent.server.storage.sql import SqlStore

    return SqlStore(url)
