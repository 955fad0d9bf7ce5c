"""Protobuf messages <-> domain records and arrays. No logic beyond translation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from convergent.server.registry.galleries import EnrollChunk
from convergent.server.records import AnchorSetRecord, FitRecord, GalleryRecord, ModelRecord, UploadResult
from convergent.server.registry.service import UploadChunk
from convergent.v1 import alignment_pb2, anchors_pb2, galleries_pb2, models_pb2
from convergent.wire import decode_matrix

_EMPTY = np.zeros((0, 0), dtype=np.float32)


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def model_to_pb(record: ModelRecord) -> models_pb2.Model:
    return models_pb2.Model(
        name=record.name, dim=record.dim, version=record.version, normalize=record.normalize,
        created_at=timestamp(record.created_at),
    )


def anchor_set_to_pb(record: AnchorSetRecord) -> anchors_pb2.AnchorSet:
    return anchors_pb2.AnchorSet(
        name=record.name,
        models=[anchors_pb2.AnchorSetModel(model=m, count=c) for m, c in sorted(record.models.items())],
        data_version=record.data_version,
        updated_at=timestamp(record.updated_at),
    )


def upload_chunks(requests: Iterable[anchors_pb2.UploadAnchorsRequest]) -> Iterator[UploadChunk]:
    """Decode an upload stream lazily (a bad message raises when it is reached)."""
    for request in requests:
        has_vectors = request.HasField("vectors")
        vectors = decode_matrix(request.vectors) if has_vectors or request.ids else _EMPTY
        yield UploadChunk(
            model=request.model, model_version=request.model_version,
            anchor_set=request.anchor_set, overwrite=request.overwrite,
            ids=list(request.ids), vectors=vectors, last=request.last,
        )


def upload_result_to_pb(result: UploadResult) -> anchors_pb2.UploadAnchorsResponse:
    return anchors_pb2.UploadAnchorsResponse(**result.model_dump())


def struct_to_dict(struct: Struct) -> dict:
    """A ``google.protobuf.Struct`` as a plain dict (numbers arrive as float)."""
    return json_format.MessageToDict(struct)


def dict_to_struct(data: dict) -> Struct:
    struct = Struct()
    struct.update(data)
    return struct


def fit_to_pb(record: FitRecord) -> alignment_pb2.Fit:
    return alignment_pb2.Fit(
        id=record.id, method=record.method, requested_method=record.requested_method,
        source=record.source, source_version=record.source_version,
        target=record.target, target_version=record.target_version,
        anchor_set=record.anchor_set, data_version=record.data_version,
        metrics=record.metrics, warnings=record.warnings, converged=record.converged,
        stale=record.stale, created_at=timestamp(record.created_at), params=dict_to_struct(record.params),
        models=record.params.get("models", []) if record.method == "shared" else [],
    )


INDEX_KIND_NAMES: dict[int, str] = {
    galleries_pb2.INDEX_KIND_UNSPECIFIED: "exact",
    galleries_pb2.INDEX_KIND_EXACT: "exact",
    galleries_pb2.INDEX_KIND_HNSW: "hnsw",
}
INDEX_KIND_VALUES = {"exact": galleries_pb2.INDEX_KIND_EXACT, "hnsw": galleries_pb2.INDEX_KIND_HNSW}


def index_kind(value: int) -> str:
    """Wire enum -> index name; an unknown value passes through as text so the use case rejects it."""
    return INDEX_KIND_NAMES.get(value, f"unknown({value})")


def enroll_chunks(requests: Iterable[galleries_pb2.EnrollRequest]) -> Iterator[EnrollChunk]:
    for request in requests:
        has_vectors = request.HasField("vectors")
        vectors = decode_matrix(request.vectors) if has_vectors or request.ids else _EMPTY
        yield EnrollChunk(
            gallery=request.gallery, model=request.model, model_version=request.model_version,
            index_kind=index_kind(request.index), ids=list(request.ids), vectors=vectors, last=request.last,
        )


def gallery_to_pb(record: GalleryRecord) -> galleries_pb2.Gallery:
    return galleries_pb2.Gallery(
        name=record.name, model=record.model, model_version=record.model_version,
        index=INDEX_KIND_VALUES[record.index_kind], size=record.size, created_at=timestamp(record.created_at),
    )
