"""gRPC servicers: decode -> use case -> encode. Tenancy arrives with authentication."""

from __future__ import annotations

import grpc

import convergent
from convergent.server.errors import Unavailable
from convergent.server.registry.service import DEFAULT_TENANT, Registry
from convergent.server.rpc import codec
from convergent.server.rpc.errors import rpc_method
from convergent.server.settings import ServerSettings
from convergent.v1 import anchors_pb2, anchors_pb2_grpc, info_pb2, info_pb2_grpc, models_pb2, models_pb2_grpc


class Backend:
    """Holds the registry once storage is open; until then every RPC is UNAVAILABLE."""

    def __init__(self) -> None:
        self._registry: Registry | None = None

    def open(self, registry: Registry) -> None:
        self._registry = registry

    def close(self) -> None:
        self._registry = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise Unavailable("the server is starting or stopping; storage is not open")
        return self._registry


def tenant_of(context: grpc.ServicerContext) -> str:  # noqa: ARG001 - keys decide the tenant later
    return DEFAULT_TENANT


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @rpc_method
    def RegisterModel(self, request, context):  # noqa: ANN001, N802
        normalize = request.normalize if request.HasField("normalize") else True
        record = self.backend.registry.register_model(tenant_of(context), request.name, request.dim, normalize)
        return codec.model_to_pb(record)

    @rpc_method
    def GetModel(self, request, context):  # noqa: ANN001, N802
        return codec.model_to_pb(self.backend.registry.get_model(tenant_of(context), request.name))

    @rpc_method
    def ListModels(self, request, context):  # noqa: ANN001, N802
        page = self.backend.registry.list_models(
            tenant_of(context), request.page.page_size, request.page.page_token
        )
        return models_pb2.ListModelsResponse(
            models=[codec.model_to_pb(m) for m in page.items], next_page_token=page.next_token
        )

    @rpc_method
    def DeleteModel(self, request, context):  # noqa: ANN001, N802
        deleted = self.backend.registry.delete_model(tenant_of(context), request.name)
        return models_pb2.DeleteModelResponse(deleted_anchors=deleted)


class AnchorServicer(anchors_pb2_grpc.AnchorServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @rpc_method
    def UploadAnchors(self, request_iterator, context):  # noqa: ANN001, N802
        result = self.backend.registry.upload_anchors(
            tenant_of(context), codec.upload_chunks(request_iterator)
        )
        return codec.upload_result_to_pb(result)

    @rpc_method
    def CountAnchors(self, request, context):  # noqa: ANN001, N802
        count = self.backend.registry.count_anchors(tenant_of(context), request.model, request.anchor_set)
        return anchors_pb2.CountAnchorsResponse(count=count)

    @rpc_method
    def ListAnchorSets(self, request, context):  # noqa: ANN001, N802
        page = self.backend.registry.list_anchor_sets(
            tenant_of(context), request.page.page_size, request.page.page_token, request.model
        )
        return anchors_pb2.ListAnchorSetsResponse(
            anchor_sets=[codec.anchor_set_to_pb(s) for s in page.items], next_page_token=page.next_token
        )

    @rpc_method
    def DeleteAnchors(self, request, context):  # noqa: ANN001, N802
        deleted, version = self.backend.registry.delete_anchors(
            tenant_of(context), request.model, request.anchor_set, list(request.ids)
        )
        return anchors_pb2.DeleteAnchorsResponse(deleted=deleted, data_version=version)


class InfoServicer(info_pb2_grpc.InfoServiceServicer):
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings

    @rpc_method
    def GetServerInfo(self, request, context):  # noqa: ANN001, N802, ARG002
        s = self.settings
        return info_pb2.ServerInfo(
            version=convergent.__version__, api="convergent.v1",
            max_receive_message_bytes=s.max_receive_message_bytes,
            max_send_message_bytes=s.max_send_message_bytes,
            max_vectors_per_message=s.max_vectors_per_message,
            max_dim=s.max_dim, max_name_length=128, max_page_size=s.max_page_size,
        )
