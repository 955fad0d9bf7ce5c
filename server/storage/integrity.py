"""Checks of a store against damage: what a broken disk or a stray write did to the file.

Two depths:

* :func:`quick_check` (a server start with ``--startup-check quick``): SQLite's ``PRAGMA
  quick_check`` (page structure) and the counts: every (anchor set, model)'s id index against
  the live slots of its blocks, every gallery's id index against its recorded size and its
  blocks' live slots. An id index that lost a subtree to a damaged page shows here.
* :func:`full_check` (every server start by default, and ``convergent check --data-dir``):
  SQLite's ``PRAGMA integrity_check``, the counts, every id pointing into an existing block
  slot, every block's ids adding up to its ``ids_digest`` (an id, block, slot or version
  changed in the id index), and the CRC-32 of every vector block, fit array and calibration
  row. It reads the whole file: 2.6 s for a 938 MB store (200,000 x 2 anchors and 50,000
  gallery items of 512 dimensions, warm page cache; quick: 0.36 s).

Each returns :class:`Damage` entries naming the object (anchor set and model, gallery, fit,
or the database itself); an empty list means nothing was found. A read error the database
raises while checking (a page it cannot parse) is itself reported as damage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from convergent.server.errors import DataLoss

from convergent.server.storage.anchor_blocks import ANCHOR_BLOCKS
from convergent.server.storage.blocks import BlockTable, checksum, slot_term
from convergent.server.storage.gallery_store import GALLERY_BLOCKS
from convergent.server.storage.schema import (
    anchor_blocks,
    anchor_ids,
    calibrations,
    fit_arrays,
    galleries,
    gallery_blocks,
    gallery_item_ids,
)

DATABASE = ("database",)


@dataclass(frozen=True)
class Damage:
    """One damaged object: ``key`` ("anchors", tenant, set, model) / ("gallery", tenant, name) /
    ("fit", fit id) / ("calibration", tenant, a, b) / ("database",); ``where`` names it for people."""

    key: tuple[str, ...]
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.detail}"


class DamagedObjects:
    """The damage a start-up check found on a store that serves anyway (``--allow-damaged``):
    a read of a listed object raises :class:`DataLoss` before it touches the damaged rows."""

    def __init__(self, found: list[Damage] | None = None) -> None:
        self.by_key = {d.key: d for d in found or ()}

    def refuse(self, *key: str) -> None:
        found = self.by_key.get(key)
        if found is not None:
            raise DataLoss(f"{found.where} is damaged ({found.detail}); it is not served (the server's start-up "
                           "check found it). The operator should restore it from a backup")


def _database(detail: str) -> Damage:
    return Damage(DATABASE, "the database file", detail)


def _guarded(check: Callable[[sa.Connection], list[Damage]], conn: sa.Connection) -> list[Damage]:
    """``check``'s findings, or the database error it ran into as damage of the file."""
    try:
        return check(conn)
    except sa.exc.DatabaseError as exc:
        return [_database(f"unreadable while checking ({getattr(exc, 'orig', exc)})")]
    except (TypeError, ValueError, OverflowError) as exc:  # a value of a type no write stores
        return [_database(f"holds values no write leaves there ({exc})")]


def _pragma(conn: sa.Connection, pragma: str) -> list[Damage]:
    if conn.dialect.name != "sqlite":
        return []
    lines = [str(r[0]) for r in conn.exec_driver_sql(f"PRAGMA {pragma}")]
    return [] if lines == ["ok"] else [_database(f"{pragma}: {line}") for line in lines[:20]]


def _anchor_counts(conn: sa.Connection) -> list[Damage]:
    b, i = anchor_blocks.c, anchor_ids.c
    live = {tuple(r[:3]): int(r[3]) for r in conn.execute(
        sa.select(b.tenant, b.anchor_set, b.model, sa.func.sum(b.live)).group_by(b.tenant, b.anchor_set, b.model))}
    indexed = {tuple(r[:3]): int(r[3]) for r in conn.execute(
        sa.select(i.tenant, i.anchor_set, i.model, sa.func.count()).group_by(i.tenant, i.anchor_set, i.model))}
    found = []
    for key in sorted(set(live) | set(indexed), key=repr):  # damaged keys may not be strings
        if live.get(key, 0) != indexed.get(key, 0):
            found.append(Damage(("anchors", *key), ANCHOR_BLOCKS.describe(key),
                                f"its id index lists {indexed.get(key, 0)} anchors, its blocks hold {live.get(key, 0)}"))
    return found


def _gallery_counts(conn: sa.Connection) -> list[Damage]:
    b, i, g = gallery_blocks.c, gallery_item_ids.c, galleries.c
    live = {tuple(r[:2]): int(r[2]) for r in conn.execute(
        sa.select(b.tenant, b.gallery, sa.func.sum(b.live)).group_by(b.tenant, b.gallery))}
    indexed = {tuple(r[:2]): int(r[2]) for r in conn.execute(
        sa.select(i.tenant, i.gallery, sa.func.count()).group_by(i.tenant, i.gallery))}
    recorded = {(r[0], r[1]): int(r[2]) for r in conn.execute(sa.select(g.tenant, g.name, g.size))}
    found = []
    for key in sorted(set(live) | set(indexed) | set(recorded), key=repr):
        counts = (recorded.get(key, 0), indexed.get(key, 0), live.get(key, 0))
        if len(set(counts)) > 1:
            found.append(Damage(("gallery", *key), GALLERY_BLOCKS.describe(key),
                                "its record says {} items, its id index lists {}, its blocks hold {}".format(*counts)))
    return found


def _dangling(conn: sa.Connection, ids: sa.Table, blocks: BlockTable, kind: str) -> list[Damage]:
    """Ids that point at a block that is missing or at a slot past its end."""
    i, b = ids.c, blocks.table.c
    joined = ids.outerjoin(blocks.table, sa.and_(*(i[k] == b[k] for k in (*blocks.key, "block_id"))))
    query = (sa.select(*(i[k] for k in blocks.key), sa.func.count())
             .select_from(joined).where(sa.or_(b.block_id.is_(None), i.slot < 0, i.slot >= b.rows)).group_by(*(i[k] for k in blocks.key)))
    return [Damage((kind, *r[:-1]), blocks.describe(tuple(r[:-1])), f"{r[-1]} ids point at vector slots that do not exist")
            for r in conn.execute(query)]


def _id_digests(conn: sa.Connection, ids: sa.Table, blocks: BlockTable, kind: str, id_column: str,
                seq_column: str) -> list[Damage]:
    """Blocks whose ``ids_digest`` differs from the sum of :func:`slot_term` over the ids that
    point into them: an id, block or slot (or enrolment number) changed in the id index."""
    i, b = ids.c, blocks.table.c
    seq = i[seq_column]
    found: dict[tuple, int] = {}
    for *key, item, slot, s in conn.execute(sa.select(*(i[k] for k in blocks.key), i.block_id, i[id_column], i.slot, seq)):
        try:
            term = slot_term(item, int(slot), int(s))
        except (TypeError, ValueError, OverflowError, AttributeError):  # a value no write leaves there
            term = -1
        found[tuple(key)] = found.get(tuple(key), 0) + term
    bad: dict[tuple, list[int]] = {}
    for *key, block_id, digest in conn.execute(sa.select(*(b[k] for k in blocks.key), b.block_id, b.ids_digest)):
        if digest is None or found.pop((*key, block_id), 0) != int(digest):
            bad.setdefault(tuple(key), []).append(int(block_id))
    for *key, block_id in found:  # ids pointing at blocks that do not exist
        bad.setdefault(tuple(key), []).append(block_id)
    return [Damage((kind, *key), blocks.describe(key), f"the ids of vector blocks {sorted(ids, key=repr)[:10]} do not add up "
                   "(its id index changed after it was written)") for key, ids in bad.items()]


def _block_sums(conn: sa.Connection, blocks: BlockTable, kind: str) -> Iterator[Damage]:
    c = blocks.table.c
    keys = conn.execute(sa.select(*(c[k] for k in blocks.key), c.block_id)).all()
    bad: dict[tuple, list[int]] = {}
    for *block_key, block_id in keys:
        row = conn.execute(sa.select(c.vectors, c.checksum).where(blocks.where(block_key), c.block_id == block_id)).one()
        if row.checksum is None or checksum(row.vectors) != row.checksum:
            bad.setdefault(tuple(block_key), []).append(int(block_id))
    for key, ids in bad.items():
        yield Damage((kind, *key), blocks.describe(key), f"vector blocks {ids[:10]} fail their checksum")


def _array_sums(conn: sa.Connection) -> Iterator[Damage]:
    a, c = fit_arrays.c, calibrations.c
    for fit_id, name in conn.execute(sa.select(a.fit_id, a.name)).all():
        row = conn.execute(sa.select(a.data, a.checksum).where(a.fit_id == fit_id, a.name == name)).one()
        if row.checksum is None or checksum(row.data) != row.checksum:
            yield Damage(("fit", fit_id), f"fit {fit_id!r}", f"its array {name!r} fails its checksum")
    for tenant, a_model, b_model in conn.execute(sa.select(c.tenant, c.a_model, c.b_model)).all():
        row = conn.execute(sa.select(c.a, c.b, c.same, c.checksum).where(
            c.tenant == tenant, c.a_model == a_model, c.b_model == b_model)).one()
        if row.checksum is None or checksum(row.a + row.b + row.same) != row.checksum:
            yield Damage(("calibration", tenant, a_model, b_model),
                         f"the calibration pairs of ({a_model}, {b_model}) (tenant {tenant!r})", "they fail their checksum")


def quick_check(engine: sa.Engine) -> list[Damage]:
    """Page structure and counts (seconds per GB of file): what a server checks at start."""
    with engine.connect() as conn:
        found = _guarded(lambda c: _pragma(c, "quick_check"), conn)
        found += _guarded(_anchor_counts, conn)
        found += _guarded(_gallery_counts, conn)
    return found


def full_check(engine: sa.Engine) -> list[Damage]:
    """Everything :func:`quick_check` does, SQLite's full integrity check, dangling ids and the
    checksum of every stored vector block, fit array and calibration row (reads the whole file)."""
    with engine.connect() as conn:
        found = _guarded(lambda c: _pragma(c, "integrity_check"), conn)
        for check in (_anchor_counts, _gallery_counts,
                      lambda c: _dangling(c, anchor_ids, ANCHOR_BLOCKS, "anchors"),
                      lambda c: _dangling(c, gallery_item_ids, GALLERY_BLOCKS, "gallery"),
                      lambda c: _id_digests(c, anchor_ids, ANCHOR_BLOCKS, "anchors", "anchor_id", "written_version"),
                      lambda c: _id_digests(c, gallery_item_ids, GALLERY_BLOCKS, "gallery", "item_id", "seq"),
                      lambda c: list(_block_sums(c, ANCHOR_BLOCKS, "anchors")),
                      lambda c: list(_block_sums(c, GALLERY_BLOCKS, "gallery")),
                      lambda c: list(_array_sums(c))):
            found += _guarded(check, conn)
    return list(dict.fromkeys(found))  # one entry per finding, in order


def inventory(engine: sa.Engine) -> dict[str, int]:
    """What a check covered: rows of each checked kind."""
    kinds = {"anchor ids": anchor_ids, "anchor blocks": anchor_blocks, "gallery items": gallery_item_ids,
             "gallery blocks": gallery_blocks, "fit arrays": fit_arrays, "calibrations": calibrations}
    counts = {}
    with engine.connect() as conn:
        for kind, table in kinds.items():
            try:
                counts[kind] = int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar())
            except sa.exc.DatabaseError:  # a damaged file: the findings say so
                continue
    return counts
