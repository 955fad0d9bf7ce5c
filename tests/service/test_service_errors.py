"""A real gRPC server on a free port: every error class gets its exact status, stores nothing."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from convergent.client import Client, errors
from convergent.v1 import anchors_pb2, anchors_pb2_grpc, models_pb2, models_pb2_grpc, types_pb2
from convergent.wire import REQUEST_ID_KEY, encode_matrix


@pytest.fixture
def stubs(server):
    channel = grpc.insecure_channel(server.address)
    yield models_pb2_grpc.ModelServiceStub(channel), anchors_pb2_grpc.AnchorServiceStub(channel)
    channel.close()


def raw_upload(stub, messages):
    return stub.UploadAnchors(iter(messages), timeout=10)


def header(**kw):
    base = {"model": "m", "anchor_set": "s", "last": True}
    base.update(kw)
    return anchors_pb2.UploadAnchorsRequest(**base)


def f32(rows, cols, value=1.0):
    return encode_matrix(np.full((rows, cols), value, dtype=np.float32))


def test_unknown_model_is_not_found(client: Client):
    with pytest.raises(errors.NotFound, match="model 'ghost' not found") as info:
        client.get_model("ghost")
    assert info.value.code is grpc.StatusCode.NOT_FOUND
    assert info.value.request_id  # the server's request id travels back
    with pytest.raises(errors.NotFound):
        client.delete_model("ghost")
    with pytest.raises(errors.NotFound):
        client.upload_anchors("ghost", anchor_set="s", ids=["a"], vectors=np.ones((1, 4)))
    with pytest.raises(errors.NotFound):
        client.count_anchors("ghost", anchor_set="s")


def test_duplicate_register_already_exists(client: Client):
    client.register_model("m", dim=4)
    with pytest.raises(errors.AlreadyExists, match="model 'm' already exists"):
        client.register_model("m", dim=4)


@pytest.mark.parametrize("name", ["", "bad name", "a:b", "x" * 129, "ü"])
def test_bad_model_name_invalid_argument(client: Client, name):
    with pytest.raises(errors.InvalidArgument, match="invalid model name"):
        client.register_model(name, dim=4)


def test_bad_dim(client: Client, server):
    with pytest.raises(errors.InvalidArgument, match="dim must be an integer in 1..4294967295"):
        client.register_model("m", dim=0)  # refused by the SDK before sending
    import grpc

    from convergent.v1 import models_pb2, models_pb2_grpc

    with grpc.insecure_channel(server.address) as channel:  # the server refuses it as well
        with pytest.raises(grpc.RpcError) as info:
            models_pb2_grpc.ModelServiceStub(channel).RegisterModel(models_pb2.RegisterModelRequest(name="m", dim=0), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "dim must be positive" in info.value.details()
    with pytest.raises(errors.ResourceExhausted, match="max_dim=8192"):
        client.register_model("m", dim=100_000)


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([header(ids=["a", "b"], vectors=f32(2, 3))], "dimension 3"),
        ([header(ids=["a", "b"], vectors=f32(2, 4, np.nan))], "row 0 contains NaN or Inf"),
        ([header(ids=["a"], vectors=f32(1, 4), last=False),
          anchors_pb2.UploadAnchorsRequest(ids=["b"], vectors=f32(1, 4, np.inf), last=True)], "row 1 contains NaN"),
        ([header(ids=["a", "b"], vectors=types_pb2.Matrix(data=b"\0" * 31, shape=[2, 4], dtype=types_pb2.DTYPE_FLOAT32))], "31 bytes"),
        ([header(ids=["a"], vectors=types_pb2.Matrix(data=b"\0" * 16, shape=[1, 4]))], "unsupported dtype"),
        ([header(ids=["a", "b"], vectors=f32(3, 4))], "2 ids but 3 vector rows"),
        ([header()], "holds no vectors"),
        ([], "stream is empty"),
        ([header(ids=["a", "a"], vectors=f32(2, 4))], "appears twice"),
        ([header(anchor_set="no good", ids=["a"], vectors=f32(1, 4))], "invalid anchor set name"),
        ([header(ids=["a"], vectors=f32(1, 4), last=False), header(model="other", ids=["b"], vectors=f32(1, 4))], "another model"),
        ([header(ids=["a"], vectors=f32(1, 4), last=False, ends_with_last=True)], "cut short"),
        ([header(ids=["a"], vectors=f32(1, 4, 0.0))], "zero norm"),
    ],
)
def test_bad_upload_invalid_argument_and_nothing_stored(client: Client, stubs, messages, fragment):
    client.register_model("m", dim=4)
    client.upload_anchors("m", anchor_set="s", ids=["keep"], vectors=np.ones((1, 4)))
    with pytest.raises(grpc.RpcError) as info:
        raw_upload(stubs[1], messages)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert fragment in info.value.details()
    assert client.count_anchors("m", anchor_set="s") == 1
    assert client.list_anchor_sets()[0].data_version == 1


def test_wrong_model_version_failed_precondition(client: Client, stubs):
    client.register_model("m", dim=4)
    with pytest.raises(grpc.RpcError) as info:
        raw_upload(stubs[1], [header(model_version=2, ids=["a"], vectors=f32(1, 4))])
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "registered version is 1" in info.value.details()


def test_changed_vector_already_exists_unless_overwrite(client: Client, rng):
    client.register_model("m", dim=4)
    X = rng.standard_normal((6, 4))
    ids = list("abcdef")
    assert client.upload_anchors("m", anchor_set="s", ids=ids, vectors=X) == 6
    assert client.upload_anchors("m", anchor_set="s", ids=ids, vectors=X) == 6  # same: no-op
    Y = X.copy()
    Y[2] += 1
    with pytest.raises(errors.AlreadyExists, match="set overwrite to true"):
        client.upload_anchors("m", anchor_set="s", ids=ids + ["g"], vectors=np.vstack([Y, X[:1] * 2]))
    assert client.count_anchors("m", anchor_set="s") == 6
    assert client.upload_anchors("m", anchor_set="s", ids=ids, vectors=Y, overwrite=True) == 6


def test_message_size_limit(start_server, rng):
    """A raw message over the server's limit is RESOURCE_EXHAUSTED; the SDK cuts chunks to fit."""
    server = start_server(max_receive_message_bytes=1024 * 1024, max_send_message_bytes=1024 * 1024)
    with Client(server.address) as client:
        assert client.server_info().max_receive_message_bytes == 1024 * 1024
        client.register_model("m", dim=512)
        channel = grpc.insecure_channel(server.address)
        big = [header(ids=[str(i) for i in range(1024)], vectors=f32(1024, 512))]  # 2 MiB
        with pytest.raises(grpc.RpcError) as info:
            raw_upload(anchors_pb2_grpc.AnchorServiceStub(channel), big)
        channel.close()
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert client.count_anchors("m", anchor_set="s") == 0
        X = rng.standard_normal((3000, 512))
        assert client.upload_anchors("m", anchor_set="s", ids=range(3000), vectors=X, chunk_size=4096) == 3000


def test_request_id_is_echoed(server, stubs):
    call = stubs[0].GetModel.with_call
    with pytest.raises(grpc.RpcError) as info:
        call(models_pb2.GetModelRequest(name="ghost"), metadata=((REQUEST_ID_KEY, "my-trace-1"),), timeout=5)
    assert dict(info.value.trailing_metadata())[REQUEST_ID_KEY] == "my-trace-1"
    _, ok = stubs[0].ListModels.with_call(models_pb2.ListModelsRequest(), timeout=5)
    assert len(dict(ok.trailing_metadata())[REQUEST_ID_KEY]) == 16
