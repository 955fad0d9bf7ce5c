"""Use cases of models and anchors: validation, normalisation, limits, then the store.

Everything here is transport-free: the RPC layer decodes messages into these calls and
maps the raised :mod:`convergent.server.errors` to statuses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from convergent.server.errors import ConvergentError, InvalidInput, ResourceExhausted, SpaceMismatch
from convergent.server.registry import paging
from convergent.server.registry.spool import Spool
from convergent.server.records import ModelRecord, Page, UploadResult
from convergent.server.settings import ServerSettings
from convergent.server.storage.protocols import Store
from convergent.wire import WireError, check_finite, check_name

DEFAULT_TENANT = "default"


def valid_name(name: str, what: str, field: str | None = None) -> str:
    """``name`` if it follows the naming rule, else :class:`InvalidInput` (naming ``field``, by
    default the kind of name: "model", "anchor_set", "gallery")."""
    try:
        return check_name(name, what)
    except WireError as exc:
        raise InvalidInput(str(exc), reason=exc.reason, field=field or exc.field) from None


def l2_normalize_rows(vectors: np.ndarray, strict: bool = True, first_row: int = 0) -> np.ndarray:
    """Rows (n, d) scaled to unit L2 norm, as float32.

    A zero row is :class:`InvalidInput` when ``strict`` (a caller's vector), else stays zero
    (a computed vector, e.g. a map's output).
    """
    norms = np.linalg.norm(vectors.astype(np.float64, copy=False), axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size and strict:
        raise InvalidInput(f"vectors: row {first_row + int(zero[0])} has zero norm and cannot be normalised",
                           reason="ZERO_VECTOR", field="vectors", metadata={"row": first_row + int(zero[0])})
    return (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def prepare_vectors(model: ModelRecord, vectors: np.ndarray, what: str = "vectors", allow_empty: bool = False,
                    field: str = "vectors") -> np.ndarray:
    """Caller's vectors of ``model`` checked (rows, dimension, finite) and, if the model says so,
    L2-normalised: (n, model.dim) float32. Problems are :class:`InvalidInput` naming ``what`` in
    words and ``field``, the request field that carried the vectors, in the error details."""
    if vectors.ndim != 2 or (vectors.shape[0] == 0 and not allow_empty):
        raise InvalidInput(f"{what}: no rows given", reason="EMPTY_INPUT", field=field)
    if vectors.shape[1] != model.dim:
        raise InvalidInput(
            f"{what} have dimension {vectors.shape[1]}, model {model.name!r} has dimension {model.dim}",
            reason="DIMENSION_MISMATCH", field=field,
            metadata={"model": model.name, "expected": model.dim, "got": vectors.shape[1]},
        )
    try:
        check_finite(vectors, what)
    except WireError as exc:
        raise InvalidInput(str(exc), reason=exc.reason, field=field) from None
    return l2_normalize_rows(vectors) if model.normalize else vectors.astype(np.float32)


def check_model_version(model: ModelRecord, version: int) -> ModelRecord:
    """``model`` if vectors stamped ``version`` (0 = current) belong to it, else :class:`SpaceMismatch`."""
    if version not in (0, model.version):
        raise SpaceMismatch(
            f"vectors are of model {model.name!r} version {version}, but the registered version is {model.version}",
            reason="STALE_MODEL_VERSION", field="model_version",
            metadata={"model": model.name, "expected": model.version, "got": version},
        )
    return model


@dataclass(frozen=True)
class UploadChunk:
    """One message of an upload stream, decoded. Header fields may be empty after the first."""

    model: str
    model_version: int
    anchor_set: str
    overwrite: bool
    ids: list[str]
    vectors: np.ndarray  # (len(ids), dim), any float dtype
    last: bool = False   # the final message of the stream
    ends_with_last: bool = False  # first message: the stream promises a final last=true message


def check_stream_order(number: int, chunk_last: bool, seen_last: bool) -> bool:
    """Track the ``last`` marker of a client stream; returns whether it has been seen."""
    if seen_last:
        raise InvalidInput(f"message {number} follows the message marked last", reason="MESSAGE_AFTER_LAST",
                           metadata={"message": number})
    return chunk_last


def check_message_size(number: int, n_ids: int, rows: int, limit: int) -> None:
    """One message of an upload or enroll stream: at most ``limit`` vectors, one row per id."""
    if n_ids > limit:
        raise ResourceExhausted(f"message {number} holds {n_ids} vectors; the limit is max_vectors_per_message={limit}",
                                reason="TOO_MANY_VECTORS", field="vectors",
                                metadata={"limit": "max_vectors_per_message", "value": limit, "message": number})
    if rows != n_ids:
        raise InvalidInput(f"message {number}: {n_ids} ids but {rows} vector rows", reason="LENGTH_MISMATCH",
                           field="ids", metadata={"message": number})


def check_stream_ids(
    ids: Iterable[str], seen: set[str], max_length: int, noun: str, stream: str, duplicate: type[ConvergentError]
) -> None:
    """Ids of one stream message: 1..max_length characters, each once in the whole stream
    (``seen`` collects them; a repeat raises ``duplicate``)."""
    for item in ids:
        if not item or len(item) > max_length:
            raise InvalidInput(f"{noun}s must have 1-{max_length} characters, got {item[:40]!r}", reason="INVALID_ID",
                               field="ids", metadata={"limit": "max_id_length", "value": max_length})
        if item in seen:
            raise duplicate(f"{noun} {item!r} appears twice in one {stream}", field="ids",
                            reason="DUPLICATE_ID" if issubclass(duplicate, InvalidInput) else "ID_TAKEN")
        seen.add(item)


def check_stream_complete(seen_last: bool, promised_last: bool) -> None:
    """A stream whose first message set ``ends_with_last`` must have ended with ``last``; without
    the promise (clients of the 0.1 contract) the client's half-close ends the stream."""
    if promised_last and not seen_last:
        raise InvalidInput(
            "the stream ended without a message marked last=true: it was cut short; nothing was stored",
            reason="STREAM_CUT_SHORT",
        )


class Registry:
    """Models and anchors of every tenant, over one store (:class:`~convergent.server.storage.protocols.Store`)."""

    def __init__(self, store: Store, settings: ServerSettings) -> None:
        self.store = store
        self.settings = settings

    # ------------------------------------------------------------------ models
    def register_model(self, tenant: str, name: str, dim: int, normalize: bool = True) -> ModelRecord:
        valid_name(name, "model name", field="name")
        if dim <= 0:
            raise InvalidInput(f"dim must be positive, got {dim}", reason="VALUE_OUT_OF_RANGE", field="dim")
        if dim > self.settings.max_dim:
            raise ResourceExhausted(f"dim {dim} exceeds the server limit max_dim={self.settings.max_dim}",
                                    reason="DIMENSION_TOO_LARGE", field="dim",
                                    metadata={"limit": "max_dim", "value": self.settings.max_dim})
        return self.store.insert_model(tenant, name, dim, normalize)

    def get_model(self, tenant: str, name: str) -> ModelRecord:
        valid_name(name, "model name", field="name")
        return self.store.get_model(tenant, name)

    def list_models(self, tenant: str, page_size: int, page_token: str) -> Page:
        limit = paging.page_size(page_size, self.settings.default_page_size, self.settings.max_page_size)
        items = self.store.list_models(tenant, paging.decode_token(page_token), limit + 1)
        return paging.make_page(items, limit)

    def delete_model(self, tenant: str, name: str) -> int:
        valid_name(name, "model name", field="name")
        return self.store.delete_model(tenant, name)

    # ------------------------------------------------------------------ anchors
    def upload_anchors(
        self, tenant: str, chunks: Iterable[UploadChunk], still_wanted: Callable[[], bool] | None = None
    ) -> UploadResult:
        """Validate a whole stream, then store it in one transaction (all or nothing).

        Vectors are checked (dimension, finite, unique non-empty ids), normalised if the
        model says so, and spooled (memory, then disk) so the database is locked only for
        the final write, not while the client is still sending.
        """
        from convergent.server.registry.streams import StreamRules, read_vector_stream

        def open_header(chunk: UploadChunk) -> ModelRecord:
            valid_name(chunk.model, "model name")
            valid_name(chunk.anchor_set, "anchor set name")
            return check_model_version(self.store.get_model(tenant, chunk.model), chunk.model_version)

        def same_header(chunk: UploadChunk, first: UploadChunk) -> bool:
            return ((chunk.model, chunk.anchor_set) in (("", ""), (first.model, first.anchor_set))
                    and chunk.model_version in (0, first.model_version))

        def prepare(model: ModelRecord, vectors: np.ndarray, number: int, first_row: int) -> np.ndarray:
            if vectors.shape[1] != model.dim:
                raise InvalidInput(f"message {number}: vectors have dimension {vectors.shape[1]}, "
                                   f"model {model.name!r} has dimension {model.dim}", reason="DIMENSION_MISMATCH",
                                   field="vectors", metadata={"model": model.name, "expected": model.dim,
                                                              "got": vectors.shape[1], "message": number})
            try:
                check_finite(vectors, first_row=first_row)
            except WireError as exc:
                raise InvalidInput(f"message {number}: {exc}", reason=exc.reason, field=exc.field,
                                   metadata={"message": number}) from None
            vectors = np.asarray(vectors, dtype="<f4")  # no copy when it is float32 already
            return l2_normalize_rows(vectors, first_row=first_row) if model.normalize else vectors

        with Spool(self.settings.spool_memory_bytes, encrypted=self.store.encrypted) as spool:
            header, model, ids = read_vector_stream(
                chunks, StreamRules("upload", "model or anchor set", "anchor id", InvalidInput),
                self.settings.max_vectors_per_message, self.settings.max_id_length, open_header, same_header, prepare,
                lambda vectors: spool.write(vectors.tobytes()),
            )
            spool.rewind()
            return self.store.write_anchors(
                tenant, header.anchor_set, model, _read_back(spool, ids, model.dim), header.overwrite,
                quota=self.settings.max_vectors_per_tenant, still_wanted=still_wanted,
            )

    def count_anchors(self, tenant: str, model: str, anchor_set: str) -> int:
        valid_name(model, "model name")
        valid_name(anchor_set, "anchor set name")
        self.store.get_model(tenant, model)  # NotFound for an unknown model
        return self.store.count_anchors(tenant, anchor_set, model)

    def list_anchor_sets(self, tenant: str, page_size: int, page_token: str, model: str = "") -> Page:
        limit = paging.page_size(page_size, self.settings.default_page_size, self.settings.max_page_size)
        if model:
            self.get_model(tenant, model)
        items = self.store.list_anchor_sets(
            tenant, paging.decode_token(page_token), limit + 1, model or None
        )
        return paging.make_page(items, limit)

    def delete_anchors(self, tenant: str, model: str, anchor_set: str, ids: list[str]) -> tuple[int, int]:
        valid_name(model, "model name")
        valid_name(anchor_set, "anchor set name")
        return self.store.delete_anchors(tenant, anchor_set, model, ids or None)


def _read_back(spool, ids: list[str], dim: int, rows: int = 4096) -> Iterator[tuple[list[str], np.ndarray]]:  # noqa: ANN001
    """Yield the spooled upload back as (ids, float32 (n, dim)) batches."""
    for start in range(0, len(ids), rows):
        batch_ids = ids[start : start + rows]
        data = spool.read(len(batch_ids) * dim * 4)
        yield batch_ids, np.frombuffer(data, dtype="<f4").reshape(len(batch_ids), dim)
