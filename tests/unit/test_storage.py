"""Store and registry: idempotent re-uploads, all-or-nothing streams, durable across reopen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from convergent.server.errors import AlreadyExists, InvalidInput, NotFound, ResourceExhausted, SpaceMismatch
from convergent.server.registry.service import Registry, UploadChunk
from convergent.server.settings import ServerSettings
from convergent.server.storage import db
from convergent.server.storage.sql import SqlStore

T = "default"


@pytest.fixture
def registry(tmp_path: Path, database_url: str) -> Registry:
    settings = ServerSettings(data_dir=tmp_path, max_vectors_per_message=1000, spool_memory_bytes=1024,
                              database_url=database_url)
    store = SqlStore(settings.resolved_database_url())
    yield Registry(store, settings)
    store.close()


def chunks(model: str, anchor_set: str, ids: list[str], vectors: np.ndarray, size: int = 7, **kw):
    for start in range(0, len(ids), size):
        first = start == 0
        yield UploadChunk(
            model=model if first else "", model_version=kw.get("model_version", 0),
            anchor_set=anchor_set if first else "", overwrite=kw.get("overwrite", False),
            ids=ids[start : start + size], vectors=vectors[start : start + size],
            last=start + size >= len(ids),
        )


def stored(registry: Registry, anchor_set: str, model: str) -> dict[str, np.ndarray]:
    from convergent.server.storage.schema import anchors

    with registry.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(anchors.c.anchor_id, anchors.c.vector).where(
                anchors.c.anchor_set == anchor_set, anchors.c.model == model
            )
        ).all()
    return {i: np.frombuffer(v, dtype="<f4") for i, v in rows}


def test_sqlite_is_durable_wal_full(registry: Registry):
    if registry.store.engine.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    with registry.store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    assert db.current_revision(registry.store.engine) == db.head_revision()


def test_migrations_upgrade_an_old_database(tmp_path: Path):
    """A database at 0001 with data is upgraded in place; the data stays."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    db.migrate(engine, "0001")
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        conn.exec_driver_sql(
            "INSERT INTO anchor_sets (tenant, name, data_version, created_at, updated_at) VALUES ('t', 's', 4, 0, 0)"
        )
    db.migrate(engine)
    assert db.current_revision(engine) == db.head_revision()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT data_version, rewritten_version FROM anchor_sets").one() == (4, 0)
    engine.dispose()


def test_migrations_build_exactly_the_schema_the_code_declares(database_url):
    """Alembic's comparison of the migrated database with ``schema.metadata`` finds nothing to
    change (a column added to one but not the other fails here)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from convergent.server.storage.schema import metadata

    engine = db.create_engine(database_url)
    db.migrate(engine)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_migration_0006_backfills_gallery_sizes_and_enrolment_numbers(tmp_path: Path):
    """Galleries enrolled before 0006 get their item count and newest enrolment number; the next
    enrolment continues after it."""
    from convergent.server.storage.sql import SqlStore

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = db.create_engine(url)
    db.migrate(engine, "0005")
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        conn.exec_driver_sql(
            "INSERT INTO galleries (tenant, name, model, model_version, index_kind, created_at, version) "
            "VALUES ('t', 'g', 'm', 1, 'exact', 0, 3), ('t', 'empty', 'm', 1, 'exact', 0, 2)"
        )
        for item, seq in (("a", 1), ("c", 7)):
            conn.exec_driver_sql(
                "INSERT INTO gallery_items (tenant, gallery, item_id, seq, vector) VALUES ('t', 'g', ?, ?, ?)",
                (item, seq, np.ones(2, "<f4").tobytes()),
            )
    db.migrate(engine)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT name, size, last_seq FROM galleries ORDER BY name").all()
    assert [tuple(r) for r in rows] == [("empty", 0, 0), ("g", 2, 7)]
    engine.dispose()
    store = SqlStore(url)
    try:
        record, _, _, _ = store.galleries.enroll("t", "g", "m", 1, "exact", [(["d"], np.ones((1, 2)))])
        assert record.size == 3 and record.version == 4
        assert store.galleries.items("t", "g", 2)[1] == ["a", "c", "d"]  # enrolment order kept
        assert store.galleries.remove("t", "g", ["a", "nope"])[:2] == (1, 2)
    finally:
        store.close()


def test_upload_normalises_and_is_idempotent(registry: Registry, rng):
    registry.register_model(T, "a", dim=8, normalize=True)
    ids = [f"x{i}" for i in range(30)]
    X = rng.standard_normal((30, 8)) * 5
    first = registry.upload_anchors(T, chunks("a", "s", ids, X))
    assert (first.inserted, first.unchanged, first.total, first.data_version) == (30, 0, 30, 1)
    vectors = stored(registry, "s", "a")
    np.testing.assert_allclose(np.linalg.norm(np.stack(list(vectors.values())), axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(vectors["x3"], X[3] / np.linalg.norm(X[3]), rtol=1e-6)

    again = registry.upload_anchors(T, chunks("a", "s", ids[::-1], X[::-1], size=4))
    assert (again.inserted, again.unchanged, again.total, again.data_version) == (0, 30, 30, 1)


def test_raw_model_keeps_values(registry: Registry, rng):
    registry.register_model(T, "raw", dim=4, normalize=False)
    X = rng.standard_normal((5, 4)).astype(np.float32) * 3
    registry.upload_anchors(T, chunks("raw", "s", list("abcde"), X))
    np.testing.assert_array_equal(stored(registry, "s", "raw")["c"], X[2])


def test_changed_vector_needs_overwrite_and_aborts_everything(registry: Registry, rng):
    registry.register_model(T, "a", dim=4, normalize=False)
    X = rng.standard_normal((10, 4)).astype(np.float32)
    registry.upload_anchors(T, chunks("a", "s", [str(i) for i in range(10)], X))
    before = stored(registry, "s", "a")

    # New ids 10..19 first, then a changed vector for id 5: nothing of it may be stored.
    ids = [str(i) for i in range(10, 20)] + ["5"]
    Y = np.vstack([rng.standard_normal((10, 4)), X[5:6] + 1]).astype(np.float32)
    with pytest.raises(AlreadyExists, match="'5'.*overwrite"):
        registry.upload_anchors(T, chunks("a", "s", ids, Y))
    assert stored(registry, "s", "a").keys() == before.keys()
    assert registry.count_anchors(T, "a", "s") == 10

    result = registry.upload_anchors(T, chunks("a", "s", ids, Y, overwrite=True))
    assert (result.inserted, result.overwritten, result.total, result.data_version) == (10, 1, 20, 2)
    np.testing.assert_array_equal(stored(registry, "s", "a")["5"], Y[-1])


@pytest.mark.parametrize(
    ("mutate", "error", "fragment"),
    [
        (lambda X, ids: (X[:, :3], ids), InvalidInput, "dimension 3"),
        (lambda X, ids: (np.where(np.arange(X.size).reshape(X.shape) == 33, np.nan, X), ids), InvalidInput, "row 8"),
        (lambda X, ids: (np.where(np.arange(X.size).reshape(X.shape) == 77, np.inf, X), ids), InvalidInput, "NaN or Inf"),
        (lambda X, ids: (X, ids[:-1] + ["x0"]), InvalidInput, "appears twice"),
        (lambda X, ids: (X, ids[:-1] + [""]), InvalidInput, "1-256 characters"),
        (lambda X, ids: (np.vstack([X[:-1], np.zeros((1, 4))]), ids), InvalidInput, "zero norm"),
    ],
)
def test_bad_chunk_late_in_stream_stores_nothing(registry: Registry, rng, mutate, error, fragment):
    registry.register_model(T, "a", dim=4)
    ids = [f"x{i}" for i in range(20)]
    X, bad_ids = mutate(rng.standard_normal((20, 4)), ids)
    with pytest.raises(error, match=fragment):
        registry.upload_anchors(T, chunks("a", "s", bad_ids, X))
    assert registry.count_anchors(T, "a", "s") == 0
    assert registry.list_anchor_sets(T, 0, "").items == ()


def test_stream_header_rules(registry: Registry, rng):
    registry.register_model(T, "a", dim=4)
    registry.register_model(T, "b", dim=4)
    X = rng.standard_normal((4, 4))
    with pytest.raises(InvalidInput, match="empty"):
        registry.upload_anchors(T, iter([]))
    with pytest.raises(NotFound, match="model 'zz'"):
        registry.upload_anchors(T, chunks("zz", "s", list("abcd"), X))
    with pytest.raises(InvalidInput, match="anchor set name"):
        registry.upload_anchors(T, chunks("a", "bad name", list("abcd"), X))
    mixed = [
        UploadChunk("a", 0, "s", False, ["a", "b"], X[:2]),
        UploadChunk("b", 0, "s", False, ["c", "d"], X[2:], last=True),
    ]
    with pytest.raises(InvalidInput, match="another model"):
        registry.upload_anchors(T, iter(mixed))
    with pytest.raises(SpaceMismatch, match="version 7"):
        registry.upload_anchors(T, chunks("a", "s", list("abcd"), X, model_version=7))
    with pytest.raises(ResourceExhausted, match="max_vectors_per_message=1000"):
        registry.upload_anchors(T, chunks("a", "s", [str(i) for i in range(1001)], np.ones((1001, 4)), size=1001))
    assert registry.count_anchors(T, "a", "s") == 0


def test_stream_must_end_with_its_last_message(registry: Registry, rng):
    """A stream that promised a last message (ends_with_last) must end with it; none may follow it."""
    registry.register_model(T, "a", dim=4)
    X = rng.standard_normal((4, 4))
    cut = [UploadChunk("a", 0, "s", False, ["a", "b"], X[:2], ends_with_last=True),
           UploadChunk("", 0, "", False, ["c", "d"], X[2:])]
    with pytest.raises(InvalidInput, match="cut short"):
        registry.upload_anchors(T, iter(cut))
    after_last = [UploadChunk("a", 0, "s", False, ["a"], X[:1], last=True), UploadChunk("", 0, "", False, ["b"], X[1:2])]
    with pytest.raises(InvalidInput, match="follows the message marked last"):
        registry.upload_anchors(T, iter(after_last))
    assert registry.count_anchors(T, "a", "s") == 0


def test_model_versions_grow_after_delete(registry: Registry, rng):
    assert registry.register_model(T, "m", dim=4).version == 1
    with pytest.raises(AlreadyExists):
        registry.register_model(T, "m", dim=4)
    registry.upload_anchors(T, chunks("m", "s", list("ab"), rng.standard_normal((2, 4))))
    assert registry.delete_model(T, "m") == 2
    with pytest.raises(NotFound):
        registry.get_model(T, "m")
    assert registry.register_model(T, "m", dim=6).version == 2
    assert registry.count_anchors(T, "m", "s") == 0
    with pytest.raises(SpaceMismatch, match="version 1"):
        registry.upload_anchors(T, chunks("m", "s", list("ab"), rng.standard_normal((2, 6)), model_version=1))


def test_paging_and_tokens(registry: Registry):
    names = [f"m{i:02d}" for i in range(25)]
    for name in reversed(names):
        registry.register_model(T, name, dim=2)
    seen, token = [], ""
    while True:
        page = registry.list_models(T, 10, token)
        seen += [m.name for m in page.items]
        token = page.next_token
        if not token:
            break
    assert seen == names
    with pytest.raises(InvalidInput, match="page_token"):
        registry.list_models(T, 10, "garbage!")


def test_tenants_are_isolated(registry: Registry, rng):
    registry.register_model("t1", "m", dim=4)
    registry.register_model("t2", "m", dim=8)
    registry.upload_anchors("t1", chunks("m", "s", list("abc"), rng.standard_normal((3, 4))))
    assert registry.count_anchors("t2", "m", "s") == 0
    assert [m.dim for m in registry.list_models("t2", 0, "").items] == [8]
    assert registry.list_anchor_sets("t2", 0, "").items == ()


def test_delete_anchors_by_id_and_whole(registry: Registry, rng):
    registry.register_model(T, "a", dim=4)
    registry.upload_anchors(T, chunks("a", "s", list("abcdef"), rng.standard_normal((6, 4))))
    assert registry.delete_anchors(T, "a", "s", ["a", "b", "nope"]) == (2, 2)
    assert registry.count_anchors(T, "a", "s") == 4
    assert registry.delete_anchors(T, "a", "s", []) == (4, 3)
    with pytest.raises(NotFound, match="anchor set 'other'"):
        registry.delete_anchors(T, "a", "other", [])


def test_data_survives_reopen(tmp_path: Path, rng):
    settings = ServerSettings(data_dir=tmp_path)
    store = SqlStore(settings.resolved_database_url())
    registry = Registry(store, settings)
    registry.register_model(T, "a", dim=4, normalize=False)
    X = rng.standard_normal((9, 4)).astype(np.float32)
    registry.upload_anchors(T, chunks("a", "s", [str(i) for i in range(9)], X))
    store.close()

    reopened = Registry(SqlStore(settings.resolved_database_url()), settings)
    assert reopened.get_model(T, "a").dim == 4
    np.testing.assert_array_equal(stored(reopened, "s", "a")["8"], X[8])
    reopened.store.close()
