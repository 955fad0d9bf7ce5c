"""Tables of the durable store (SQLAlchemy Core). Alembic migrations create and evolve them.

Every table carries ``tenant``: a federation of parties; tenants share nothing.
Timestamps are float seconds since the Unix epoch (UTC), portable across SQLite and PostgreSQL.
Vectors are little-endian float32 bytes: anchors in blocks of rows (``anchor_blocks``), gallery
items one blob per row.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

models = sa.Table(
    "models",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("normalize", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Last version handed out per model name; survives deletes so a re-registered name gets a
# new version and vectors stamped with the old one are refused.
model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("last_version", sa.Integer, nullable=False),
)

anchor_sets = sa.Table(
    "anchor_sets",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    # +1 on every committed change; anchors remember the version that wrote them.
    sa.Column("data_version", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # The last data_version that deleted or replaced anchors (0: never). Statistics cached at
    # a version >= this one stay valid and are updated with the anchors written since.
    sa.Column("rewritten_version", sa.BigInteger, nullable=False, server_default="0"),
)

# Anchor vectors in blocks: the vectors of one upload's chunk (regrouped to at most
# ``anchor_blocks.BLOCK_BYTES``) in one row, little-endian float32 (rows, dim) bytes. Slots of
# deleted, overwritten or erased anchors are zeroed in the same transaction (``live`` counts the
# rest); a block with no live slot is deleted.
anchor_blocks = sa.Table(
    "anchor_blocks",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("anchor_set", sa.String(128), primary_key=True),
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("block_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("written_version", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("live", sa.Integer, nullable=False),
    sa.Column("vectors", sa.LargeBinary, nullable=False),
    # CRC-32 of ``vectors`` (migration 0010; NULL: damaged or never summed, not served), and the
    # sum of blocks.slot_term(id, slot) over the live slots: what the id index must add up to
    sa.Column("checksum", sa.BigInteger, nullable=True),
    sa.Column("ids_digest", sa.BigInteger, nullable=True),
    # the tenant's data key that sealed ``vectors`` (migration 0011; NULL: in clear). See envelope.
    sa.Column("key_version", sa.Integer, nullable=True),
    sa.ForeignKeyConstraint(
        ["tenant", "model"], ["models.tenant", "models.name"], ondelete="CASCADE"
    ),
    sa.ForeignKeyConstraint(
        ["tenant", "anchor_set"], ["anchor_sets.tenant", "anchor_sets.name"], ondelete="CASCADE"
    ),
)

sa.Index("ix_anchor_blocks_model", anchor_blocks.c.tenant, anchor_blocks.c.model, anchor_blocks.c.anchor_set)

# The id index of the anchors: one small row per anchor id -> (block, slot) of its vector.
# Pairing two models' anchors is a join of this index by id. (SQLite: WITHOUT ROWID, so the
# primary key is the only B-tree.) The foreign key to the block has no cascade: a block is
# deleted only once no id points into it, else the transaction fails.
anchor_ids = sa.Table(
    "anchor_ids",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("anchor_set", sa.String(128), primary_key=True),
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("anchor_id", sa.String(4096), primary_key=True),
    sa.Column("block_id", sa.BigInteger, nullable=False),
    sa.Column("slot", sa.Integer, nullable=False),
    sa.Column("written_version", sa.BigInteger, nullable=False),
    sa.ForeignKeyConstraint(
        ["tenant", "model"], ["models.tenant", "models.name"], ondelete="CASCADE"
    ),
    sa.ForeignKeyConstraint(
        ["tenant", "anchor_set"], ["anchor_sets.tenant", "anchor_sets.name"], ondelete="CASCADE"
    ),
    sa.ForeignKeyConstraint(
        ["tenant", "anchor_set", "model", "block_id"],
        ["anchor_blocks.tenant", "anchor_blocks.anchor_set", "anchor_blocks.model", "anchor_blocks.block_id"],
    ),
    sqlite_with_rowid=False,
)

# A read-only view in the previous release's shape, one row per anchor with its vector, for
# direct SQL readers of the file (the crash harness, backups, operators); the server never
# reads it. Created by migration 0008.
anchors = sa.table(
    "anchors", *(sa.column(c) for c in ("tenant", "anchor_set", "model", "anchor_id", "vector", "written_version"))
)

# Statistics of all (source, target) pairs of an anchor set at one data version: float64 count,
# sums and cross-products (an .npz, no pickle), so a restarted server or another replica fits
# from them instead of reading every pair again. They summarise the anchors, so a delete,
# overwrite or erasure in the set deletes them in its transaction.
pair_stats = sa.Table(
    "pair_stats",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("anchor_set", sa.String(128), primary_key=True),
    sa.Column("source", sa.String(128), primary_key=True),
    sa.Column("source_version", sa.Integer, primary_key=True),
    sa.Column("target", sa.String(128), primary_key=True),
    sa.Column("target_version", sa.Integer, primary_key=True),
    sa.Column("data_version", sa.BigInteger, nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("arrays", sa.LargeBinary, nullable=False),
    sa.Column("saved_at", sa.Float, nullable=False),
    # "full" (float64 X^T X, X^T Y, Y^T Y) or "cross" (sums, squares, X^T Y: unit matching)
    sa.Column("products", sa.String(8), nullable=False, server_default="full"),
    sa.Column("key_version", sa.Integer, nullable=True),  # data key that sealed ``arrays`` (NULL: in clear)
    sa.ForeignKeyConstraint(
        ["tenant", "anchor_set"], ["anchor_sets.tenant", "anchor_sets.name"], ondelete="CASCADE"
    ),
)

fits = sa.Table(
    "fits",
    metadata,
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("method", sa.String(64), nullable=False),
    sa.Column("requested_method", sa.String(64), nullable=False),
    sa.Column("source", sa.String(128), nullable=False),
    sa.Column("source_version", sa.Integer, nullable=False),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("target_version", sa.Integer, nullable=False),
    sa.Column("anchor_set", sa.String(128), nullable=False),
    sa.Column("data_version", sa.BigInteger, nullable=False),
    sa.Column("params", sa.Text, nullable=False),  # JSON: hyper-parameters used
    sa.Column("metrics", sa.Text, nullable=False),  # JSON: name -> float
    sa.Column("warnings", sa.Text, nullable=False),  # JSON: list of strings
    sa.Column("converged", sa.Boolean, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # JSON: estimator parameters to rebuild it
    sa.Column("created_at", sa.Float, nullable=False),
)

sa.Index("ix_fits_route", fits.c.tenant, fits.c.source, fits.c.target, fits.c.created_at)

# Learned arrays of a fit, one row per array (no pickle): little-endian bytes + dtype + shape.
fit_arrays = sa.Table(
    "fit_arrays",
    metadata,
    sa.Column("fit_id", sa.String(64), sa.ForeignKey("fits.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("dtype", sa.String(16), nullable=False),
    sa.Column("shape", sa.String(64), nullable=False),  # JSON list
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("checksum", sa.BigInteger, nullable=True),  # CRC-32 of ``data`` (migration 0010)
    sa.Column("key_version", sa.Integer, nullable=True),  # data key that sealed ``data`` (NULL: in clear)
)

galleries = sa.Table(
    "galleries",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("index_kind", sa.String(16), nullable=False),  # "exact" | "hnsw"
    sa.Column("created_at", sa.Float, nullable=False),
    # +1 on every enrol, removal or erasure: a replica whose index was built at another
    # version rebuilds it from the items.
    sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
    # Items enrolled now, and the enrolment number of the newest (kept by every write, so no
    # call counts or scans the items).
    sa.Column("size", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
)

# Enrolled vectors (normalised as their model says) in blocks, as anchors: the vectors of one
# enrolment chunk (regrouped to at most ``blocks.BLOCK_BYTES``) in one row, little-endian float32
# (rows, dim) bytes. Slots of removed or erased items are zeroed in the same transaction
# (``live`` counts the rest); a block with no live slot is deleted. The in-memory index is
# rebuilt from these.
gallery_blocks = sa.Table(
    "gallery_blocks",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("gallery", sa.String(128), primary_key=True),
    sa.Column("block_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("live", sa.Integer, nullable=False),
    sa.Column("vectors", sa.LargeBinary, nullable=False),
    sa.Column("checksum", sa.BigInteger, nullable=True),  # CRC-32 of ``vectors``, as anchor_blocks
    sa.Column("ids_digest", sa.BigInteger, nullable=True),  # sum of slot_term(item, slot, seq), live slots
    sa.Column("key_version", sa.Integer, nullable=True),  # data key that sealed ``vectors`` (NULL: in clear)
    sa.ForeignKeyConstraint(
        ["tenant", "gallery"], ["galleries.tenant", "galleries.name"], ondelete="CASCADE"
    ),
)

# The id index of enrolled items: one small row per item -> its enrolment number (order, ties
# in search) and the (block, slot) of its vector. (SQLite: WITHOUT ROWID.) The foreign key to
# the block has no cascade: a block is deleted only once no id points into it.
gallery_item_ids = sa.Table(
    "gallery_item_ids",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("gallery", sa.String(128), primary_key=True),
    sa.Column("item_id", sa.String(4096), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),  # enrolment order (ties in search)
    sa.Column("block_id", sa.BigInteger, nullable=False),
    sa.Column("slot", sa.Integer, nullable=False),
    sa.ForeignKeyConstraint(
        ["tenant", "gallery"], ["galleries.tenant", "galleries.name"], ondelete="CASCADE"
    ),
    sa.ForeignKeyConstraint(
        ["tenant", "gallery", "block_id"],
        ["gallery_blocks.tenant", "gallery_blocks.gallery", "gallery_blocks.block_id"],
    ),
    sqlite_with_rowid=False,
)

# A read-only view in the previous release's shape, one row per item with its vector, for
# direct SQL readers of the file (the crash harness, operators); the server never reads it.
# Created by migration 0009.
gallery_items = sa.table("gallery_items", *(sa.column(c) for c in ("tenant", "gallery", "item_id", "seq", "vector")))

# Labelled pairs for verification thresholds of (a_model, b_model): a (n, d_a), b (n, d_b)
# float32 and same (n,) bool; scores are recomputed through whichever map is current.
calibrations = sa.Table(
    "calibrations",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("a_model", sa.String(128), primary_key=True),
    sa.Column("b_model", sa.String(128), primary_key=True),
    sa.Column("a_version", sa.Integer, nullable=False),
    sa.Column("b_version", sa.Integer, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("a", sa.LargeBinary, nullable=False),
    sa.Column("b", sa.LargeBinary, nullable=False),
    sa.Column("same", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("checksum", sa.BigInteger, nullable=True),  # CRC-32 of a + b + same (migration 0010)
    sa.Column("key_version", sa.Integer, nullable=True),  # data key that sealed a, b and same (NULL: in clear)
)

# Data keys of envelope encryption (migration 0011): one random AES-256 key per (tenant,
# version), stored only wrapped by the tenant's key-encryption key, which never lives here (it is
# in the keyring; ``kek_id`` names the keyring). New data is sealed with the newest key not retired.
data_keys = sa.Table(
    "data_keys",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("kek_id", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("retired_at", sa.Float, nullable=True),
)

# Settings of the store itself (migration 0011): name -> JSON. ``encryption``: the scheme and the
# fingerprint of the key-encryption key; absent: the store is in clear.
store_settings = sa.Table(
    "store_settings",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# API keys: parties of a tenant (federation). Only a hash of the secret is stored.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # reader | party | admin
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

# Who (key id) called identify / verify / delete / erase, when, on what, and the outcome.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("method", sa.String(64), nullable=False),
    sa.Column("target", sa.String(512), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
)
sa.Index("ix_audit_tenant_at", audit_log.c.tenant, audit_log.c.at)
