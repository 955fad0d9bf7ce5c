"""gRPC servicers: decode -> use case -> encode. Request ids, metrics, the status table,
authentication and audit are interceptors (:mod:`convergent.server.rpc.interceptors`); a
method's ``context`` is a :class:`~convergent.server.rpc.interceptors.CallContext`, whose
``tenant`` comes from the caller's API key."""

from __future__ import annotations

from convergent.server.errors import ResourceExhausted, Unavailable
from convergent.server.metrics import Metrics
from convergent.server.registry.alignment import Alignment
from convergent.server.registry.cooperation import Cooperation
from convergent.server.registry.galleries import Galleries
from convergent.server.registry.service import Registry
from convergent.server.registry.tenancy import Tenancy
from convergent.server.rpc.audit import AuditWriter
from convergent.server.rpc.auth import Authenticator, Principal
from convergent.server.rpc import codec
from convergent.server.settings import ServerSettings
from convergent.v1 import (
    alignment_pb2,
    alignment_pb2_grpc,
    anchors_pb2,
    anchors_pb2_grpc,
    galleries_pb2,
    galleries_pb2_grpc,
    info_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    tenant_pb2_grpc,
)
from convergent.wire import decode_matrix


class Backend:
    """Holds the use cases once storage is open; until then every RPC is UNAVAILABLE."""

    def __init__(self) -> None:
        self._registry: Registry | None = None
        self._alignment: Alignment | None = None
        self._galleries: Galleries | None = None
        self._authenticator: Authenticator | None = None
        self._tenancy: Tenancy | None = None
        self._cooperation: Cooperation | None = None
        self.max_rows: int | None = None
        self.metrics: Metrics | None = None
        self.audit_writer: AuditWriter | None = None

    def open(
        self, registry: Registry, alignment: Alignment, galleries: Galleries, authenticator: Authenticator
    ) -> None:
        self._registry, self._alignment, self._galleries = registry, alignment, galleries
        self._authenticator = authenticator
        if authenticator.keys is not None:
            self.audit_writer = AuditWriter(authenticator.keys)
        self._tenancy = Tenancy(registry.store, galleries)
        self._cooperation = Cooperation(registry.store, alignment)
        self.max_rows = registry.settings.max_vectors_per_message

    def close(self) -> None:
        """After the last call: write the queued audit entries, release the galleries' indexes."""
        if self.audit_writer is not None:
            self.audit_writer.close()
            self.audit_writer = None
        if self._galleries is not None:
            self._galleries.close()
        self._registry = self._alignment = self._galleries = self._authenticator = self._tenancy = None
        self._cooperation = None

    @property
    def tenancy(self) -> Tenancy:
        return self._ready(self._tenancy)

    def rows(self, matrix, what: str):  # noqa: ANN001, ANN201
        """Decode a request's matrix, refusing more rows than one message may carry."""
        array = decode_matrix(matrix, what=what)
        if self.max_rows is not None and array.shape[0] > self.max_rows:
            raise ResourceExhausted(
                f"{what}: {array.shape[0]} rows in one message; the limit is max_vectors_per_message={self.max_rows}",
                reason="TOO_MANY_VECTORS", field=what, metadata={"limit": "max_vectors_per_message", "value": self.max_rows},
            )
        return array

    def authenticate(self, metadata) -> Principal:  # noqa: ANN001
        """The caller (UNAUTHENTICATED without a valid key; UNAVAILABLE before storage is open)."""
        return self._ready(self._authenticator).authenticate(metadata)

    def authorize(self, principal: Principal, method: str) -> None:
        """PERMISSION_DENIED unless the caller's role may call ``method``."""
        self._ready(self._authenticator).authorize(principal, method)

    def audit(self, principal: Principal, method: str, target: str, outcome: str, request_id: str) -> None:
        """Queue the call's audit entry (written in batches off the request path)."""
        writer = self.audit_writer
        if writer is not None:
            writer.submit(principal.tenant, principal.key_id, method, target, outcome, request_id)

    @staticmethod
    def _ready(use_case):  # noqa: ANN001, ANN205
        if use_case is None:
            raise Unavailable("the server is starting or stopping; storage is not open", reason="SERVER_NOT_READY")
        return use_case

    @property
    def registry(self) -> Registry:
        return self._ready(self._registry)

    @property
    def alignment(self) -> Alignment:
        return self._ready(self._alignment)

    @property
    def cooperation(self) -> Cooperation:
        return self._ready(self._cooperation)

    @property
    def galleries(self) -> Galleries:
        return self._ready(self._galleries)


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def RegisterModel(self, request, context):  # noqa: ANN001, N802
        normalize = request.normalize if request.HasField("normalize") else True
        record = self.backend.registry.register_model(context.tenant, request.name, request.dim, normalize)
        return codec.model_to_pb(record)

    def GetModel(self, request, context):  # noqa: ANN001, N802
        return codec.model_to_pb(self.backend.registry.get_model(context.tenant, request.name))

    def ListModels(self, request, context):  # noqa: ANN001, N802
        page = self.backend.registry.list_models(
            context.tenant, request.page.page_size, request.page.page_token
        )
        return codec.models_page_to_pb(page)

    def DeleteModel(self, request, context):  # noqa: ANN001, N802
        deleted = self.backend.registry.delete_model(context.tenant, request.name)
        return models_pb2.DeleteModelResponse(deleted_anchors=deleted)


class AnchorServicer(anchors_pb2_grpc.AnchorServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def UploadAnchors(self, request_iterator, context):  # noqa: ANN001, N802
        result = self.backend.registry.upload_anchors(
            context.tenant, codec.upload_chunks(request_iterator), still_wanted=context.is_active
        )
        return codec.upload_result_to_pb(result)

    def CountAnchors(self, request, context):  # noqa: ANN001, N802
        count = self.backend.registry.count_anchors(context.tenant, request.model, request.anchor_set)
        return anchors_pb2.CountAnchorsResponse(count=count)

    def ListAnchorSets(self, request, context):  # noqa: ANN001, N802
        page = self.backend.registry.list_anchor_sets(
            context.tenant, request.page.page_size, request.page.page_token, request.model
        )
        return codec.anchor_sets_page_to_pb(page)

    def DeleteAnchors(self, request, context):  # noqa: ANN001, N802
        deleted, version = self.backend.registry.delete_anchors(
            context.tenant, request.model, request.anchor_set, list(request.ids)
        )
        return anchors_pb2.DeleteAnchorsResponse(deleted=deleted, data_version=version)


class InfoServicer(info_pb2_grpc.InfoServiceServicer):
    def __init__(self, settings: ServerSettings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend

    def GetServerInfo(self, request, context):  # noqa: ANN001, N802, ARG002
        return codec.server_info_to_pb(self.settings)

    def ListMethods(self, request, context):  # noqa: ANN001, N802, ARG002
        from convergent.server.align.catalogue import catalogue

        return codec.methods_to_pb(catalogue())


class AlignmentServicer(alignment_pb2_grpc.AlignmentServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def FitAlignment(self, request, context):  # noqa: ANN001, N802
        record = self.backend.alignment.fit(
            context.tenant, request.source, request.target, request.anchor_set,
            request.method, codec.struct_to_dict(request.params),
        )
        if self.backend.metrics is not None:
            self.backend.metrics.fit_seconds.labels(record.method).observe(record.metrics["fit_seconds"])
        return codec.fit_to_pb(record)

    def GetFit(self, request, context):  # noqa: ANN001, N802
        return codec.fit_to_pb(self.backend.alignment.get_fit(context.tenant, request.id))

    def GetAtlas(self, request, context):  # noqa: ANN001, N802
        return codec.atlas_to_pb(self.backend.alignment.atlas(context.tenant, request.anchor_set))

    def ListFits(self, request, context):  # noqa: ANN001, N802
        page = self.backend.alignment.list_fits(
            context.tenant, request.page.page_size, request.page.page_token, request.source, request.target
        )
        return codec.fits_page_to_pb(page)

    def DeleteFit(self, request, context):  # noqa: ANN001, N802
        self.backend.alignment.delete_fit(context.tenant, request.id)
        return alignment_pb2.DeleteFitResponse()

    def Transform(self, request, context):  # noqa: ANN001, N802
        vectors = self.backend.rows(request.vectors, "vectors")
        Z, record, target = self.backend.alignment.transform(
            context.tenant, request.source, request.source_version, request.target, request.fit_id, vectors
        )
        return codec.transform_to_pb(Z, record, target)

    def FitSharedSpace(self, request, context):  # noqa: ANN001, N802
        record = self.backend.alignment.fit_shared(
            context.tenant, list(request.models), request.anchor_set, codec.struct_to_dict(request.params)
        )
        return codec.fit_to_pb(record)

    def ExportFit(self, request, context):  # noqa: ANN001, N802
        record, arrays = self.backend.alignment.export(context.tenant, request.id)
        return codec.export_to_pb(record, arrays)

    def FitCooperative(self, request, context):  # noqa: ANN001, N802
        record = self.backend.cooperation.fit(
            context.tenant, request.space, request.anchor_set, list(request.teachers), codec.struct_to_dict(request.params)
        )
        return codec.fit_to_pb(record)

    def Predict(self, request, context):  # noqa: ANN001, N802
        parties = [
            (p.model, p.model_version, self.backend.rows(p.vectors, f"{p.model or 'party'} vectors"))
            for p in request.parties
        ]
        return codec.prediction_to_pb(self.backend.cooperation.predict(context.tenant, request.head, parties))


class GalleryServicer(galleries_pb2_grpc.GalleryServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def Enroll(self, request_iterator, context):  # noqa: ANN001, N802
        enrolled, size = self.backend.galleries.enroll(
            context.tenant, codec.enroll_chunks(request_iterator), still_wanted=context.is_active
        )
        return galleries_pb2.EnrollResponse(enrolled=enrolled, size=size)

    def Remove(self, request, context):  # noqa: ANN001, N802
        removed, size = self.backend.galleries.remove(context.tenant, request.gallery, list(request.ids))
        return galleries_pb2.RemoveResponse(removed=removed, size=size)

    def GetGallery(self, request, context):  # noqa: ANN001, N802
        return codec.gallery_to_pb(self.backend.galleries.get(context.tenant, request.name))

    def ListGalleries(self, request, context):  # noqa: ANN001, N802
        page = self.backend.galleries.list(context.tenant, request.page.page_size, request.page.page_token)
        return codec.galleries_page_to_pb(page)

    def DeleteGallery(self, request, context):  # noqa: ANN001, N802
        self.backend.galleries.delete(context.tenant, request.name)
        return galleries_pb2.DeleteGalleryResponse()

    def Identify(self, request, context):  # noqa: ANN001, N802
        result = self.backend.galleries.identify(
            context.tenant, request.gallery, request.model, request.model_version,
            self.backend.rows(request.vectors, "probes"), request.k, request.fit_id, request.scoring, request.direction,
            request.fpir, self.backend.rows(request.non_mated, "non_mated") if request.HasField("non_mated") else None,
        )
        return codec.identify_result_to_pb(result)

    def IdentifyFused(self, request, context):  # noqa: ANN001, N802
        parties = [
            (p.model, p.model_version, self.backend.rows(p.vectors, f"{p.model or 'party'} probes"))
            for p in request.parties
        ]
        result = self.backend.galleries.identify_fused(context.tenant, request.gallery, parties, request.k, request.scoring)
        return codec.fused_result_to_pb(result)

    def Verify(self, request, context):  # noqa: ANN001, N802
        r = self.backend.galleries.verification.verify(
            context.tenant, request.a_model, self.backend.rows(request.a, "a"),
            request.b_model, self.backend.rows(request.b, "b"), request.far, request.direction,
        )
        return codec.verify_result_to_pb(r)

    def VerificationReport(self, request, context):  # noqa: ANN001, N802
        r = self.backend.galleries.verification.verification_report(
            context.tenant, request.a_model, request.b_model, request.direction)
        return codec.verification_report_to_pb(r)

    def Calibrate(self, request, context):  # noqa: ANN001, N802
        n_genuine, n_impostor, route = self.backend.galleries.verification.calibrate(
            context.tenant, request.a_model, self.backend.rows(request.a, "a"),
            request.b_model, self.backend.rows(request.b, "b"), list(request.same),
        )
        return galleries_pb2.CalibrateResponse(n_genuine=n_genuine, n_impostor=n_impostor, route=route)


class TenantServicer(tenant_pb2_grpc.TenantServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def Erase(self, request, context):  # noqa: ANN001, N802
        report = self.backend.tenancy.erase(context.tenant, list(request.ids))
        return codec.erase_report_to_pb(report)

    def ListAuditLog(self, request, context):  # noqa: ANN001, N802
        rows = self.backend.tenancy.audit_log(context.tenant, request.limit, self.backend.registry.settings.max_page_size)
        return codec.audit_to_pb(rows)

    def GetUsage(self, request, context):  # noqa: ANN001, N802, ARG002
        principal = context.principal
        return codec.usage_to_pb(principal, self.backend.tenancy.usage(principal.tenant),
                                 self.backend.registry.settings.max_vectors_per_tenant)
