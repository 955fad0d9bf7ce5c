"""Protobuf messages <-> domain records and arrays. No logic beyond translation."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

import convergent
from convergent.server.registry.cooperation import Prediction
from convergent.server.registry.galleries import EnrollChunk, FusedIdentifyResult, IdentifyResult
from convergent.server.records import (AnchorSetRecord, AtlasRecord, ErasureReport, FitRecord, GalleryRecord, ModelRecord, Page,
                                       UploadResult)
from convergent.server.registry.service import UploadChunk
from convergent.server.registry.verification import VerificationReport, VerifyResult
from convergent.server.rpc.auth import Principal
from convergent.server.settings import ServerSettings
from convergent.v1 import alignment_pb2, anchors_pb2, galleries_pb2, info_pb2, models_pb2, tenant_pb2
from convergent.wire import MAX_NAME_LENGTH, decode_matrix, encode_array, encode_matrix

_EMPTY = np.zeros((0, 0), dtype=np.float32)

if TYPE_CHECKING:  # the method table loads the estimators: only ListMethods needs it
    from convergent.server.align.catalogue import MethodInfo


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
            ids=list(request.ids), vectors=vectors, last=request.last, ends_with_last=request.ends_with_last,
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
        models=record.params.get("models", []) if record.method in ("shared", "cooperative") else [],
        auto_winner=str(record.params.get("candidate", "")) if record.requested_method == "auto" else "",
    )


def audit_to_pb(rows: list) -> tenant_pb2.ListAuditLogResponse:
    return tenant_pb2.ListAuditLogResponse(entries=[
        tenant_pb2.AuditEntry(at=timestamp(r.at), key_id=r.key_id, method=r.method, target=r.target, outcome=r.outcome,
                              request_id=r.request_id) for r in rows])


def atlas_to_pb(record: AtlasRecord) -> alignment_pb2.GetAtlasResponse:
    return alignment_pb2.GetAtlasResponse(
        anchor_set=record.anchor_set, data_version=record.data_version, models=record.models,
        entries=[alignment_pb2.AtlasEntry(**entry.model_dump()) for entry in record.entries],
        clusters=[alignment_pb2.AtlasCluster(models=group) for group in record.clusters],
        cluster_distance=record.cluster_distance,
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
            index_kind=index_kind(request.index), ids=list(request.ids), vectors=vectors, last=request.last, ends_with_last=request.ends_with_last,
        )


def gallery_to_pb(record: GalleryRecord) -> galleries_pb2.Gallery:
    return galleries_pb2.Gallery(
        name=record.name, model=record.model, model_version=record.model_version,
        index=INDEX_KIND_VALUES[record.index_kind], size=record.size, created_at=timestamp(record.created_at),
    )


# ---------------------------------------------------------------- pages
def models_page_to_pb(page: Page) -> models_pb2.ListModelsResponse:
    return models_pb2.ListModelsResponse(models=[model_to_pb(m) for m in page.items], next_page_token=page.next_token)


def anchor_sets_page_to_pb(page: Page) -> anchors_pb2.ListAnchorSetsResponse:
    return anchors_pb2.ListAnchorSetsResponse(
        anchor_sets=[anchor_set_to_pb(s) for s in page.items], next_page_token=page.next_token
    )


def fits_page_to_pb(page: Page) -> alignment_pb2.ListFitsResponse:
    return alignment_pb2.ListFitsResponse(fits=[fit_to_pb(f) for f in page.items], next_page_token=page.next_token)


def galleries_page_to_pb(page: Page) -> galleries_pb2.ListGalleriesResponse:
    return galleries_pb2.ListGalleriesResponse(
        galleries=[gallery_to_pb(g) for g in page.items], next_page_token=page.next_token
    )


# ---------------------------------------------------------------- replies of the use cases
def server_info_to_pb(s: ServerSettings) -> info_pb2.ServerInfo:
    return info_pb2.ServerInfo(
        version=convergent.__version__, api="convergent.v1",
        max_receive_message_bytes=s.max_receive_message_bytes, max_send_message_bytes=s.max_send_message_bytes,
        max_vectors_per_message=s.max_vectors_per_message, max_dim=s.max_dim, max_name_length=MAX_NAME_LENGTH,
        max_page_size=s.max_page_size,
    )


def transform_to_pb(Z: np.ndarray, record: FitRecord, target: ModelRecord | None) -> alignment_pb2.TransformResponse:
    """``target`` None: the vectors are coordinates in the shared space ``record``."""
    return alignment_pb2.TransformResponse(
        vectors=encode_matrix(Z), fit_id=record.id,
        target=target.name if target else f"shared:{record.id}", target_version=target.version if target else 0,
    )


def export_to_pb(record: FitRecord, arrays: dict[str, np.ndarray]) -> alignment_pb2.ExportFitResponse:
    return alignment_pb2.ExportFitResponse(fit=fit_to_pb(record), arrays={k: encode_array(v) for k, v in arrays.items()})


def identify_result_to_pb(result: IdentifyResult) -> galleries_pb2.IdentifyResponse:
    """Ids flattened row by row (the scores matrix gives the row length)."""
    response = galleries_pb2.IdentifyResponse(
        ids=[i for row in result.ids for i in row], scores=encode_matrix(result.scores), route=result.route,
        scoring=result.scoring, direction=result.direction, direction_reason=result.direction_reason,
    )
    if result.accepted is not None:
        response.open_set.CopyFrom(galleries_pb2.OpenSetDecision(
            accepted=result.accepted.tolist(), threshold=result.threshold, fpir_requested=result.fpir_requested,
            fpir_calibration=result.fpir_calibration, n_searches=result.n_calibration_searches,
            calibration=result.calibration, calibration_searches=result.calibration_searches,
            n_excluded=result.n_excluded,
        ))
    return response


def fused_result_to_pb(result: FusedIdentifyResult) -> galleries_pb2.IdentifyFusedResponse:
    return galleries_pb2.IdentifyFusedResponse(
        ids=[i for row in result.ids for i in row], scores=encode_matrix(result.scores), scoring=result.scoring,
        parties=[
            galleries_pb2.PartyContribution(model=w.model, route=w.route, weight=w.weight, weight_source=w.weight_source)
            for w in result.parties
        ],
    )


def verify_result_to_pb(r: VerifyResult) -> galleries_pb2.VerifyResponse:
    return galleries_pb2.VerifyResponse(
        scores=encode_matrix(r.scores[:, None]), accept=r.accept.tolist(), threshold=r.threshold,
        far_requested=r.far_requested, far_calibration=r.far_calibration, tar_calibration=r.tar_calibration,
        calibration=r.calibration, n_genuine=r.n_genuine, n_impostor=r.n_impostor, route=r.route,
        calibration_pairs=r.calibration_pairs, n_excluded=r.n_excluded, direction=r.direction,
        direction_reason=r.direction_reason,
    )


def verification_report_to_pb(r: VerificationReport) -> galleries_pb2.VerificationReportResponse:
    return galleries_pb2.VerificationReportResponse(
        calibration=r.calibration, calibration_pairs=r.calibration_pairs, route=r.route,
        points=[galleries_pb2.OperatingPoint(requested_far=p.requested_far, threshold=p.threshold, far=p.far, tar=p.tar)
                for p in r.points],
        eer=r.eer.eer, eer_threshold=r.eer.threshold, n_genuine=r.n_genuine, n_impostor=r.n_impostor,
        n_excluded=r.n_excluded, direction=r.direction, direction_reason=r.direction_reason,
    )


def erase_report_to_pb(report: ErasureReport) -> tenant_pb2.EraseResponse:
    return tenant_pb2.EraseResponse(
        anchors_deleted=report.anchors_deleted, gallery_items_deleted=report.gallery_items_deleted,
        anchor_sets_changed=report.anchor_sets_changed, galleries_changed=report.galleries_changed,
        stale_fits=report.stale_fits,
    )


def usage_to_pb(principal: Principal, stored_vectors: int, max_vectors: int | None) -> tenant_pb2.Usage:
    """``max_vectors`` None or 0: no quota (sent as 0)."""
    return tenant_pb2.Usage(
        tenant=principal.tenant, stored_vectors=stored_vectors, max_vectors=max_vectors or 0,
        role=principal.role, key_id=principal.key_id,
    )


def prediction_to_pb(prediction: Prediction) -> alignment_pb2.PredictResponse:
    return alignment_pb2.PredictResponse(
        probabilities=encode_matrix(prediction.probabilities), parties=prediction.parties, rule=prediction.rule
    )


def methods_to_pb(catalogue: Iterable[MethodInfo]) -> info_pb2.ListMethodsResponse:
    """The method catalogue (:func:`convergent.server.align.catalogue.catalogue`), each schema as JSON text."""
    return info_pb2.ListMethodsResponse(methods=[
        info_pb2.FitMethod(name=m.name, rpc=m.rpc, summary=m.summary, params_schema=json.dumps(m.params_schema, ensure_ascii=False),
                           candidates=list(m.candidates))
        for m in catalogue
    ])
