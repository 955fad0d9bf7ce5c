"""The convergent Python SDK: a thin, typed wrapper around the gRPC stubs (numpy in, numpy out).

Never imports torch or the server; needs numpy, grpcio, protobuf and tqdm only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.struct_pb2 import Struct
from grpc_health.v1 import health_pb2, health_pb2_grpc

from convergent.client import errors
from convergent.client._convert import _count, _fit_info, _matrix, _model_info
from convergent.client.overview import OverviewMixin
from convergent.client.federation import FederationMixin
from convergent.client.galleries import GalleryMixin
from convergent.client.types import (
    AnchorSetInfo,
    ErasureReport,
    TlsConfig,
    Usage,
    FitInfo,
    MethodInfo,
    ModelInfo,
    ServerInfo,
)
from convergent.v1 import (
    alignment_pb2,
    alignment_pb2_grpc,
    anchors_pb2,
    anchors_pb2_grpc,
    galleries_pb2_grpc,
    info_pb2,
    info_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
    types_pb2,
)
from convergent.wire import decode_array, decode_matrix, encode_matrix, rows_per_chunk

T = TypeVar("T")
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Calls that are safe to repeat: gRPC retries them on UNAVAILABLE with backoff.
_IDEMPOTENT = {
    "convergent.v1.ModelService": ("GetModel", "ListModels"),
    "convergent.v1.AnchorService": ("CountAnchors", "ListAnchorSets"),
    "convergent.v1.InfoService": ("GetServerInfo", "ListMethods"),
    "convergent.v1.AlignmentService": ("GetFit", "ListFits", "Transform", "ExportFit"),
    "convergent.v1.GalleryService": ("GetGallery", "ListGalleries", "Identify", "IdentifyFused", "Verify", "VerificationReport"),
    "grpc.health.v1.Health": ("Check",),
}
_SERVICE_CONFIG = json.dumps(
    {
        # With a target that resolves to several replicas (dns:///host:port), spread calls.
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": s, "method": m} for s, methods in _IDEMPOTENT.items() for m in methods],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def _pem(value: bytes | str | None) -> bytes | None:
    """PEM bytes as given, or read from a path."""
    if value is None or isinstance(value, bytes):
        return value
    from pathlib import Path

    return Path(value).read_bytes()


class Client(GalleryMixin, FederationMixin, OverviewMixin):
    """Connection to one convergent server.

    >>> with Client("127.0.0.1:50051") as c:
    ...     c.register_model("facenet", dim=128)

    ``timeout`` is the deadline in seconds of each call (uploads get more, in proportion to
    their size). Every failed call raises a subclass of
    :class:`convergent.client.errors.ConvergentError`.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        api_key: str | None = None,
        timeout: float = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: bool | TlsConfig | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        self._max_message_bytes = max_message_bytes
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _SERVICE_CONFIG),
        ]
        if tls:
            config = tls if isinstance(tls, TlsConfig) else TlsConfig()
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_pem(config.ca_cert), private_key=_pem(config.client_key),
                certificate_chain=_pem(config.client_cert),
            )
            if config.server_name:
                options.append(("grpc.ssl_target_name_override", config.server_name))
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._models = models_pb2_grpc.ModelServiceStub(self._channel)
        self._anchors = anchors_pb2_grpc.AnchorServiceStub(self._channel)
        self._info = info_pb2_grpc.InfoServiceStub(self._channel)
        self._alignment = alignment_pb2_grpc.AlignmentServiceStub(self._channel)
        self._galleries = galleries_pb2_grpc.GalleryServiceStub(self._channel)
        self._tenant = tenant_pb2_grpc.TenantServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._server_info: ServerInfo | None = None

    # ----------------------------------------------------------------- plumbing
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise errors.from_rpc_error(exc) from None

    # ----------------------------------------------------------------- server
    def health(self) -> bool:
        """True if the server reports SERVING; False if NOT_SERVING or unreachable (no answer
        within the client's timeout)."""
        try:
            response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=""))
        except (errors.Unavailable, errors.DeadlineExceeded):
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def wait_until_serving(self, timeout: float = 30.0) -> None:
        """Poll :meth:`health` until SERVING; :class:`Unavailable` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self.health():
                return
            if time.monotonic() > deadline:
                raise errors.Unavailable(f"{self.address} is not SERVING after {timeout:.0f} s")
            time.sleep(0.1)

    def server_info(self) -> ServerInfo:
        """Version and limits of the server (cached after the first call)."""
        if self._server_info is None:
            pb = self._call(self._info.GetServerInfo, info_pb2.GetServerInfoRequest())
            self._server_info = ServerInfo(
                version=pb.version, api=pb.api,
                max_receive_message_bytes=pb.max_receive_message_bytes,
                max_send_message_bytes=pb.max_send_message_bytes,
                max_vectors_per_message=pb.max_vectors_per_message,
                max_dim=pb.max_dim, max_name_length=pb.max_name_length, max_page_size=pb.max_page_size,
            )
        return self._server_info

    def list_methods(self) -> list[MethodInfo]:
        """The fit methods the server offers, FitAlignment's first, each with the JSON Schema of
        its ``params`` (parsed into a dict): build and check parameters before sending them."""
        response = self._call(self._info.ListMethods, info_pb2.ListMethodsRequest())
        return [MethodInfo(name=m.name, rpc=m.rpc, summary=m.summary, params_schema=json.loads(m.params_schema or "{}"),
                           candidates=list(m.candidates)) for m in response.methods]

    # ----------------------------------------------------------------- models
    def register_model(self, name: str, dim: int, normalize: bool = True) -> ModelInfo:
        """Register a model. ``normalize=True``: the server L2-normalises its vectors on every path."""
        request = models_pb2.RegisterModelRequest(name=name, dim=_count(dim, "dim"), normalize=bool(normalize))
        return _model_info(self._call(self._models.RegisterModel, request))

    def get_model(self, name: str) -> ModelInfo:
        return _model_info(self._call(self._models.GetModel, models_pb2.GetModelRequest(name=name)))

    def list_models(self) -> list[ModelInfo]:
        """Every model, following pages."""
        return [_model_info(m) for m in self._pages(self._models.ListModels, models_pb2.ListModelsRequest(), "models")]

    def delete_model(self, name: str) -> int:
        """Delete a model and its anchors; returns how many anchors were deleted."""
        return self._call(self._models.DeleteModel, models_pb2.DeleteModelRequest(name=name)).deleted_anchors

    def _pages(self, method: Callable[..., Any], request: Any, field: str) -> Iterator[Any]:
        token = ""
        while True:
            request.page.CopyFrom(types_pb2.PageRequest(page_token=token))
            response = self._call(method, request)
            yield from getattr(response, field)
            token = response.next_page_token
            if not token:
                return

    # ----------------------------------------------------------------- anchors
    def upload_anchors(
        self,
        model: str,
        anchor_set: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        chunk_size: int = 512,
        overwrite: bool = False,
        progress: bool = False,
        model_version: int = 0,
    ) -> int:
        """Stream ``vectors`` (n, dim) with their ``ids`` (n,) in one transaction.
        ``model_version``: 0 = the model's current version, else it must be it (FAILED_PRECONDITION).

        Returns the number of anchors stored for (model, anchor set) after the commit.
        Chunks hold at most ``chunk_size`` rows and are cut smaller when needed so that no
        message exceeds the server's limit. Any float dtype is sent as float32. The upload
        is idempotent (same ids and vectors store nothing new), so it is retried whole on
        UNAVAILABLE.
        """
        header = anchors_pb2.UploadAnchorsRequest(
            model=model, anchor_set=anchor_set, overwrite=overwrite, model_version=_count(model_version, "model_version", 0),
            ends_with_last=True,
        )
        response = self._stream(
            self._anchors.UploadAnchors, anchors_pb2.UploadAnchorsRequest, header, ids, vectors,
            chunk_size, progress and f"upload {model}/{anchor_set}", retry=True,
        )
        return response.total

    def _stream(
        self, method: Callable[..., Any], message: type, header: Any, ids: Sequence[Any], vectors: np.ndarray,
        chunk_size: int, progress: str | bool, retry: bool,
    ) -> Any:
        """Send (ids, vectors) as one client stream of chunks, the first carrying ``header``'s fields.

        ``retry``: the call is idempotent (a repeated upload changes nothing), so it is sent again
        whole on UNAVAILABLE. Enrolment is not (a lost acknowledgement would turn into
        ALREADY_EXISTS), so it is not retried.
        """
        ids = [str(i) for i in ids]
        chunk_size = _count(chunk_size, "chunk_size")
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise errors.InvalidArgument(f"vectors must be 2-D (n, dim), got shape {vectors.shape}")
        if len(ids) != vectors.shape[0]:
            raise errors.InvalidArgument(f"{len(ids)} ids for {vectors.shape[0]} vectors")
        limit = min(self.server_info().max_receive_message_bytes, self._max_message_bytes)
        rows = rows_per_chunk(vectors.shape[1], chunk_size, limit, ids)
        rows = min(rows, self.server_info().max_vectors_per_message)
        timeout = self.timeout + vectors.size * 4 / 5e6  # at least 5 MB/s

        def requests() -> Iterator[Any]:
            starts = range(0, max(len(ids), 1), rows)
            if progress:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc=str(progress), unit="chunk")
            final = max(len(ids) - 1, 0) // rows
            for number, start in enumerate(starts):
                request = message(ids=ids[start : start + rows], vectors=encode_matrix(vectors[start : start + rows]))
                if number == 0:
                    request.MergeFrom(header)
                request.last = number == final  # a stream cut short is refused, never half-stored
                yield request

        for attempt in range(3):
            try:
                return method(requests(), timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                error = errors.from_rpc_error(exc)
                if not retry or not isinstance(error, errors.Unavailable) or attempt == 2:
                    raise error from None
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def count_anchors(self, model: str, anchor_set: str) -> int:
        """Anchors of ``model`` in ``anchor_set`` (0 if the set holds none of that model)."""
        request = anchors_pb2.CountAnchorsRequest(model=model, anchor_set=anchor_set)
        return self._call(self._anchors.CountAnchors, request).count

    def list_anchor_sets(self, model: str | None = None) -> list[AnchorSetInfo]:
        """Every anchor set (only those holding ``model`` when given), following pages."""
        request = anchors_pb2.ListAnchorSetsRequest(model=model or "")
        return [
            AnchorSetInfo(name=s.name, models={m.model: m.count for m in s.models}, data_version=s.data_version)
            for s in self._pages(self._anchors.ListAnchorSets, request, "anchor_sets")
        ]

    def delete_anchors(self, model: str, anchor_set: str, ids: Sequence[str] | None = None) -> int:
        """Delete ``ids`` (or every anchor) of ``model`` from the set; returns how many were deleted."""
        request = anchors_pb2.DeleteAnchorsRequest(model=model, anchor_set=anchor_set, ids=list(ids or ()))
        return self._call(self._anchors.DeleteAnchors, request).deleted

    # ----------------------------------------------------------------- alignment
    def fit_alignment(
        self, source: str, target: str, anchor_set: str, method: str = "auto", **params: Any
    ) -> FitInfo:
        """Fit a ``source`` -> ``target`` map on the anchors of ``anchor_set`` both embedded.

        ``method``: "auto" (the best of procrustes / ridge on held-out anchors), "ridge",
        "procrustes" or "cca"; ``params`` are that method's hyper-parameters (README). Fits can
        take a while on big sets: the deadline is ``max(timeout, 600 s)``.
        """
        struct = Struct()
        struct.update(params)
        request = alignment_pb2.FitAlignmentRequest(
            source=source, target=target, anchor_set=anchor_set, method=method, params=struct
        )
        return _fit_info(self._call(self._alignment.FitAlignment, request, timeout=max(self.timeout, 600.0)))

    def fit_shared_space(self, models: Sequence[str], anchor_set: str, **params: Any) -> FitInfo:
        """One shared space for N >= 2 ``models`` (MAXVAR generalised CCA) on ``anchor_set``.

        Map into it with ``transform(X, source=m, target=f"shared:{fit.id}")``; identify and
        verify route through it when no direct fit exists. ``params``: ``n_components``, ``reg``, ``seed``.
        """
        struct = Struct()
        struct.update(params)
        request = alignment_pb2.FitSharedSpaceRequest(models=list(models), anchor_set=anchor_set, params=struct)
        return _fit_info(self._call(self._alignment.FitSharedSpace, request, timeout=max(self.timeout, 600.0)))

    def get_fit(self, fit_id: str) -> FitInfo:
        return _fit_info(self._call(self._alignment.GetFit, alignment_pb2.GetFitRequest(id=fit_id)))

    def list_fits(self, source: str | None = None, target: str | None = None) -> list[FitInfo]:
        """Every fit (optionally of one source and/or target), oldest first."""
        request = alignment_pb2.ListFitsRequest(source=source or "", target=target or "")
        return [_fit_info(f) for f in self._pages(self._alignment.ListFits, request, "fits")]

    def delete_fit(self, fit_id: str) -> None:
        self._call(self._alignment.DeleteFit, alignment_pb2.DeleteFitRequest(id=fit_id))

    def transform(
        self, vectors: np.ndarray, source: str, target: str | None = None, fit_id: str | None = None,
        batch_size: int = 4096, source_version: int = 0,
    ) -> np.ndarray:
        """Map ``vectors`` (n, d_source) of model ``source`` into ``target``'s space: (n, d_target) float32.

        Uses the latest ``source`` -> ``target`` fit unless ``fit_id`` is given (reverse fits
        are never used). ``target="shared:<fit id>"`` maps into a shared space (n, k). Rows go
        in batches of ``batch_size`` (cut to the message limit). ``source_version``: 0 = current.
        """
        vectors = _matrix(vectors, "vectors")
        source_version = _count(source_version, "source_version", 0)
        rows = min(_count(batch_size, "batch_size"), rows_per_chunk(max(vectors.shape[1], 1), batch_size, self._max_message_bytes))
        outputs = []
        for start in range(0, max(len(vectors), 1), rows):
            request = alignment_pb2.TransformRequest(
                source=source, source_version=source_version, target=target or "", fit_id=fit_id or "",
                vectors=encode_matrix(vectors[start : start + rows]),
            )
            outputs.append(decode_matrix(self._call(self._alignment.Transform, request).vectors))
        return np.vstack(outputs)

    def export_fit(self, fit_id: str) -> dict[str, np.ndarray]:
        """The fitted arrays by name (keys per method, see the README), e.g. "W", "b"; "R", "s"."""
        response = self._call(self._alignment.ExportFit, alignment_pb2.ExportFitRequest(id=fit_id))
        return {name: decode_array(array).copy() for name, array in response.arrays.items()}

    # ----------------------------------------------------------------- tenant
    def usage(self) -> Usage:
        """The caller's tenant, its stored vectors against the quota, and the key's role."""
        u = self._call(self._tenant.GetUsage, tenant_pb2.GetUsageRequest())
        return Usage(tenant=u.tenant, stored_vectors=u.stored_vectors, max_vectors=u.max_vectors, role=u.role, key_id=u.key_id)

    def erase(self, ids: Sequence[str]) -> ErasureReport:
        """Erase subjects: delete these ids from every anchor set and gallery of the tenant (admin).
        Fits built on the changed anchor sets become stale (listed in the report)."""
        r = self._call(self._tenant.Erase, tenant_pb2.EraseRequest(ids=[str(i) for i in ids]))
        return ErasureReport(
            anchors_deleted=r.anchors_deleted, gallery_items_deleted=r.gallery_items_deleted,
            anchor_sets_changed=list(r.anchor_sets_changed), galleries_changed=list(r.galleries_changed),
            stale_fits=list(r.stale_fits),
        )
