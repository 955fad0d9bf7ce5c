"""Clients built from a released contract keep working against the current server.

Each released contract (``proto/released/*.binpb``, a buf image = a ``FileDescriptorSet``) is
loaded into its own descriptor pool, so the messages sent here are exactly the bytes a client
generated from that release would send (no field it did not know), over a generic channel.
A behaviour change that breaks them (e.g. making a new field required) fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from convergent.client import Client
from convergent.server.rpc.app import ConvergentServer
from convergent.v1 import anchors_pb2, anchors_pb2_grpc, galleries_pb2, galleries_pb2_grpc, types_pb2
from convergent.wire import encode_matrix
from tests.conftest import make_settings

RELEASED = Path(__file__).resolve().parents[2] / "proto" / "released"
IMAGES = sorted(RELEASED.glob("*.binpb"))


class ReleasedContract:
    """The messages and RPCs of one released contract, in a pool of their own."""

    def __init__(self, image: Path, channel: grpc.Channel) -> None:
        files = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes())
        self.pool = descriptor_pool.DescriptorPool()
        for file in files.file:  # dependencies first in a buf image
            self.pool.Add(file)
        self.files = {file.name for file in files.file}
        self.channel = channel

    def has(self, full_name: str) -> bool:
        try:
            self.pool.FindMessageTypeByName(full_name)
        except KeyError:
            return False
        return True

    def message(self, type_name: str, /, **fields: Any) -> Any:
        cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(f"convergent.v1.{type_name}"))
        return cls(**fields)

    def _method(self, service: str, rpc: str) -> tuple[str, Any]:
        method = self.pool.FindServiceByName(f"convergent.v1.{service}").FindMethodByName(rpc)
        response = message_factory.GetMessageClass(method.output_type)
        return f"/convergent.v1.{service}/{rpc}", response

    def unary(self, service: str, rpc: str, request: Any) -> Any:
        path, response = self._method(service, rpc)
        call = self.channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=response.FromString)
        return call(request, timeout=30)

    def stream(self, service: str, rpc: str, requests: Iterator[Any]) -> Any:
        path, response = self._method(service, rpc)
        call = self.channel.stream_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=response.FromString)
        return call(requests, timeout=30)

    def matrix(self, array: np.ndarray) -> Any:
        array = np.ascontiguousarray(array, dtype="<f4")
        return self.message("Matrix", data=array.tobytes(), shape=list(array.shape), dtype=1)  # DTYPE_FLOAT32


@pytest.fixture
def running(tmp_path: Path) -> Iterator[ConvergentServer]:
    with ConvergentServer(make_settings(tmp_path / "data")) as server:
        yield server


def test_there_is_a_released_contract():
    assert IMAGES, f"no released contract in {RELEASED}"


@pytest.mark.parametrize("image", IMAGES, ids=[i.stem for i in IMAGES])
def test_released_client_runs_the_anchor_flow(running, image):
    """Register two models, upload anchors in a multi-message stream exactly as that release's
    client sends it (0.1 clients end the stream by half-closing), count, list, delete; a wrong
    dimension is still INVALID_ARGUMENT."""
    rng = np.random.default_rng(3)
    with grpc.insecure_channel(running.address) as channel:
        old = ReleasedContract(image, channel)
        info = old.unary("InfoService", "GetServerInfo", old.message("GetServerInfoRequest"))
        assert info.api == "convergent.v1" and info.max_dim > 0
        for name in ("a", "b"):
            model = old.unary("ModelService", "RegisterModel", old.message("RegisterModelRequest", name=name, dim=8))
            assert (model.name, model.dim, model.version) == (name, 8, 1)
        ids = [f"x{i}" for i in range(30)]
        vectors = rng.standard_normal((30, 8))
        upload = old.message("UploadAnchorsRequest")
        knows_last = "last" in upload.DESCRIPTOR.fields_by_name

        def messages() -> Iterator[Any]:
            yield old.message("UploadAnchorsRequest", model="a", anchor_set="s", ids=ids[:20], vectors=old.matrix(vectors[:20]))
            yield old.message("UploadAnchorsRequest", ids=ids[20:], vectors=old.matrix(vectors[20:]))  # no last

        reply = old.stream("AnchorService", "UploadAnchors", messages())
        assert (reply.received, reply.inserted, reply.total) == (30, 30, 30)
        if knows_last:  # that release's SDK marks the final message: still accepted
            final = old.message("UploadAnchorsRequest", model="b", anchor_set="s", ids=ids, vectors=old.matrix(vectors), last=True)
            assert old.stream("AnchorService", "UploadAnchors", iter([final])).total == 30
        count = old.unary("AnchorService", "CountAnchors", old.message("CountAnchorsRequest", model="a", anchor_set="s"))
        assert count.count == 30
        sets = old.unary("AnchorService", "ListAnchorSets", old.message("ListAnchorSetsRequest"))
        assert [s.name for s in sets.anchor_sets] == ["s"]
        with pytest.raises(grpc.RpcError) as info_error:
            wrong = old.message("UploadAnchorsRequest", model="a", anchor_set="s", ids=["y"], vectors=old.matrix(np.ones((1, 5))))
            old.stream("AnchorService", "UploadAnchors", iter([wrong]))
        assert info_error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        deleted = old.unary("ModelService", "DeleteModel", old.message("DeleteModelRequest", name="a"))
        assert deleted.deleted_anchors == 30


@pytest.mark.parametrize("image", [i for i in IMAGES if "first" not in i.stem], ids=lambda i: i.stem)
def test_released_client_runs_the_face_flow(running, image):
    """Fit, enroll, identify and export with that release's messages: the identify answer is the
    current SDK's answer on the same server."""
    rng = np.random.default_rng(4)
    rotation, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    a = rng.standard_normal((120, 16))
    b = a @ rotation + 0.01 * rng.standard_normal((120, 16))
    ids = [f"p{i}" for i in range(120)]
    with grpc.insecure_channel(running.address) as channel, Client(running.address) as sdk:
        old = ReleasedContract(image, channel)
        if not old.has("convergent.v1.FitAlignmentRequest"):
            pytest.skip(f"{image.name} has no AlignmentService")
        for name, data in (("a", a), ("b", b)):
            old.unary("ModelService", "RegisterModel", old.message("RegisterModelRequest", name=name, dim=16))
            message = old.message("UploadAnchorsRequest", model=name, anchor_set="s", ids=ids[:100],
                                  vectors=old.matrix(data[:100]), last=True)
            old.stream("AnchorService", "UploadAnchors", iter([message]))
        fit = old.unary("AlignmentService", "FitAlignment",
                        old.message("FitAlignmentRequest", source="a", target="b", anchor_set="s", method="procrustes"))
        assert fit.method == "procrustes" and fit.id
        enroll = old.message("EnrollRequest", gallery="g", model="b", ids=ids[100:], vectors=old.matrix(b[100:]), last=True)
        assert old.stream("GalleryService", "Enroll", iter([enroll])).size == 20
        answer = old.unary("GalleryService", "Identify", old.message(
            "IdentifyRequest", gallery="g", model="a", vectors=old.matrix(a[100:]), k=1, scoring="cosine"))
        top1 = list(answer.ids)
        assert top1 == ids[100:]
        assert top1 == [row[0] for row in sdk.identify("g", a[100:], model="a", k=1, scoring="cosine").ids]
        exported = old.unary("AlignmentService", "ExportFit", old.message("ExportFitRequest", id=fit.id))
        assert exported.arrays, "ExportFit returned no arrays"
        for key, value in exported.arrays.items():  # the contract: float arrays float64, indexes int64
            assert value.dtype in (types_pb2.DTYPE_FLOAT64, types_pb2.DTYPE_INT64), (key, value.dtype)


def test_half_close_ends_a_stream_without_the_promise(running):
    """Current stubs: without ends_with_last the half-close ends the stream (the 0.1 behaviour);
    with it, a final last=true message may be empty, and a stream that stops short stores nothing."""
    rng = np.random.default_rng(5)
    with Client(running.address) as sdk, grpc.insecure_channel(running.address) as channel:
        sdk.register_model("m", dim=4)
        sdk.enroll("g", "m", ids=["e0"], vectors=rng.standard_normal((1, 4)))
        stub = anchors_pb2_grpc.AnchorServiceStub(channel)
        half_closed = [anchors_pb2.UploadAnchorsRequest(model="m", anchor_set="s", ids=["a", "b"],
                                                        vectors=encode_matrix(rng.standard_normal((2, 4)).astype(np.float32)))]
        assert stub.UploadAnchors(iter(half_closed), timeout=10).total == 2
        promised = [
            anchors_pb2.UploadAnchorsRequest(model="m", anchor_set="s", ids=["c"], ends_with_last=True,
                                             vectors=encode_matrix(rng.standard_normal((1, 4)).astype(np.float32))),
            anchors_pb2.UploadAnchorsRequest(last=True),  # empty final message
        ]
        assert stub.UploadAnchors(iter(promised), timeout=10).total == 3
        with pytest.raises(grpc.RpcError) as cut:
            stub.UploadAnchors(iter(promised[:1]), timeout=10)
        assert cut.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "cut short" in cut.value.details()
        assert sdk.count_anchors("m", "s") == 3
        gallery = galleries_pb2.EnrollRequest(gallery="g", model="m", ids=["e1"], ends_with_last=True,
                                              vectors=encode_matrix(rng.standard_normal((1, 4)).astype(np.float32)))
        galleries = galleries_pb2_grpc.GalleryServiceStub(channel)
        assert galleries.Enroll(iter([gallery, galleries_pb2.EnrollRequest(last=True)]), timeout=10).size == 2
