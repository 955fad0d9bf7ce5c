"""Durable storage behind the Protocols of :mod:`convergent.server.storage.protocols`."""


def open_store(url: str, master_key=None, keyring_file=None):  # noqa: ANN001, ANN201 - a Store
    """Open (and migrate) the store at a SQLAlchemy URL: SQLite file or PostgreSQL. ``master_key``
    (a :class:`~convergent.server.storage.master_keys.LocalMasterKey`) and ``keyring_file`` (a
    Path): the store is encrypted at rest (see :mod:`~convergent.server.storage.envelope`)."""
    from convergent.server.storage.sql import SqlStore

    return SqlStore(url, master_key, keyring_file)
