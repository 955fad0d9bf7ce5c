"""Happy paths through the SDK against a real server: models, anchors, paging, health, info."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

import convergent
from convergent.client import AnchorSetInfo, Client, ModelInfo, errors


def test_model_lifecycle(client: Client):
    info = client.register_model("facenet", dim=128)
    assert info == ModelInfo(name="facenet", dim=128, version=1, normalize=True)
    assert client.register_model("acts", dim=64, normalize=False).normalize is False
    assert client.get_model("facenet") == info
    assert [m.name for m in client.list_models()] == ["acts", "facenet"]
    assert client.delete_model("acts") == 0
    assert [m.name for m in client.list_models()] == ["facenet"]


def test_list_models_follows_pages(start_server):
    server = start_server(default_page_size=3, max_page_size=3)
    with Client(server.address) as client:
        for i in range(8):
            client.register_model(f"m{i}", dim=2)
        assert [m.name for m in client.list_models()] == [f"m{i}" for i in range(8)]


def test_anchor_sets_count_list_delete(client: Client, rng):
    client.register_model("a", dim=8)
    client.register_model("b", dim=16)
    ids = [f"img-{i}" for i in range(300)]
    assert client.upload_anchors("a", anchor_set="att", ids=ids, vectors=rng.standard_normal((300, 8)), chunk_size=64) == 300
    assert client.upload_anchors("b", anchor_set="att", ids=ids[:200], vectors=rng.standard_normal((200, 16))) == 200
    assert client.upload_anchors("b", anchor_set="other", ids=ids[:5], vectors=rng.standard_normal((5, 16))) == 5
    assert client.count_anchors("a", anchor_set="att") == 300
    assert client.count_anchors("a", anchor_set="never-uploaded") == 0
    sets = client.list_anchor_sets()
    assert sets == [
        AnchorSetInfo(name="att", models={"a": 300, "b": 200}, data_version=2),
        AnchorSetInfo(name="other", models={"b": 5}, data_version=1),
    ]
    assert [s.name for s in client.list_anchor_sets(model="a")] == ["att"]
    assert client.delete_anchors("b", anchor_set="att", ids=ids[:50]) == 50
    assert client.count_anchors("b", anchor_set="att") == 150
    assert client.delete_model("b") == 155
    assert client.list_anchor_sets()[0].models == {"a": 300}


def test_float64_and_float16_are_sent_as_float32(client: Client, rng):
    client.register_model("raw", dim=4, normalize=False)
    X = rng.standard_normal((10, 4))
    client.upload_anchors("raw", anchor_set="s", ids=range(10), vectors=X)
    # Same values as float32 -> unchanged (no-op); float16 rounds differently -> conflict.
    assert client.upload_anchors("raw", anchor_set="s", ids=range(10), vectors=X.astype(np.float32)) == 10
    with pytest.raises(errors.AlreadyExists):
        client.upload_anchors("raw", anchor_set="s", ids=range(10), vectors=X.astype(np.float16))


def test_sdk_checks_shapes_locally(client: Client):
    with pytest.raises(errors.InvalidArgument, match="2-D"):
        client.upload_anchors("m", anchor_set="s", ids=["a"], vectors=np.ones(4))
    with pytest.raises(errors.InvalidArgument, match="2 ids for 1 vectors"):
        client.upload_anchors("m", anchor_set="s", ids=["a", "b"], vectors=np.ones((1, 4)))


def test_health_and_info(server, client: Client):
    assert client.health() is True
    info = client.server_info()
    assert info.version == convergent.__version__ and info.api == "convergent.v1"
    server.stop(grace=0.5)
    assert Client(server.address, timeout=2).health() is False  # unreachable


def test_not_serving_until_storage_open(tmp_path):
    """Before start() opens storage, health is NOT_SERVING and RPCs are UNAVAILABLE."""
    from convergent.server.registry.alignment import Alignment
    from convergent.server.registry.galleries import Galleries
    from convergent.server.registry.service import Registry
    from convergent.server.rpc.auth import Authenticator
    from convergent.server.rpc.app import ConvergentServer
    from convergent.server.settings import ServerSettings
    from convergent.server.storage.sql import SqlStore

    server = ConvergentServer(ServerSettings(host="127.0.0.1", port=0, data_dir=tmp_path))
    server.port = server._server.add_insecure_port("127.0.0.1:0")
    server._server.start()
    try:
        with Client(server.address, timeout=5) as client:
            assert client.health() is False
            with pytest.raises(errors.Unavailable, match="storage is not open"):
                client.list_models()
            store = SqlStore(server.settings.resolved_database_url())
            alignment = Alignment(store, server.settings)
            server._backend.open(
                Registry(store, server.settings), alignment, Galleries(store, alignment, server.settings),
                Authenticator(False, None),
            )
            assert client.list_models() == []
            store.close()
    finally:
        server._server.stop(0)


def test_reflection_lists_services(start_server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    server = start_server(reflection=True)
    channel = grpc.insecure_channel(server.address)
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    channel.close()
    assert {"convergent.v1.ModelService", "convergent.v1.AnchorService", "grpc.health.v1.Health"} <= services


def test_reflection_answers_v1_as_well_as_v1alpha(start_server):
    """grpcurl and Postman ask grpc.reflection.v1 first: it lists the services and hands out the
    contract's descriptors (ListMethods included), byte for byte as v1alpha does."""
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2  # v1's messages are the same fields

    server = start_server(reflection=True)
    with grpc.insecure_channel(server.address) as channel:
        answers = {}
        for version in ("v1", "v1alpha"):
            call = channel.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol="convergent.v1.InfoService")]
            answers[version] = list(call(iter(requests), timeout=10))
    listed, described = answers["v1"]
    assert "convergent.v1.GalleryService" in {s.name for s in listed.list_services_response.service}
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw) for raw in described.file_descriptor_response.file_descriptor_proto]
    info = next(f for f in files if f.name == "convergent/v1/info.proto")
    assert "ListMethods" in {m.name for m in info.service[0].method}
    assert [a.SerializeToString() for a in answers["v1"]] == [a.SerializeToString() for a in answers["v1alpha"]]


def test_sdk_checks_arguments_before_sending(client: Client, rng):
    for bad in (-3, 0, 2.5, True, 2**32):
        with pytest.raises(errors.InvalidArgument, match="dim must be an integer"):
            client.register_model("m", dim=bad)
    client.register_model("m", dim=4)
    client.enroll(gallery="g", model="m", ids=["a", "b", "c"], vectors=rng.standard_normal((3, 4)))
    for bad in (-1, 0, 1.0):
        with pytest.raises(errors.InvalidArgument, match="k must be an integer"):
            client.identify(gallery="g", vectors=np.ones((1, 4)), model="m", k=bad)
    with pytest.raises(errors.InvalidArgument, match="model_version"):
        client.identify(gallery="g", vectors=np.ones((1, 4)), model="m", model_version=-1)
    with pytest.raises(errors.InvalidArgument, match="chunk_size"):
        client.upload_anchors("m", anchor_set="s", ids=["a"], vectors=np.ones((1, 4)), chunk_size=0)
    assert client.list_anchor_sets() == []  # nothing reached the server


def test_identify_sends_probes_in_batches(client: Client, rng):
    """More probes than one message may hold: batched like transform, answers in probe order."""
    client.register_model("m", dim=8)
    G = rng.standard_normal((50, 8))
    client.enroll(gallery="g", model="m", ids=[f"p{i}" for i in range(50)], vectors=G)
    probes = G[rng.integers(0, 50, size=700)] + 0.01 * rng.standard_normal((700, 8))
    whole = client.identify(gallery="g", vectors=probes, model="m", k=3)
    batched = client.identify(gallery="g", vectors=probes, model="m", k=3, batch_size=64)
    assert batched.ids == whole.ids and batched.scores.shape == (700, 3)
    np.testing.assert_allclose(batched.scores, whole.scores, rtol=0, atol=1e-6)
    fused = client.identify(gallery="g", vectors={"m": probes}, k=2, batch_size=100)
    assert [row[0] for row in fused.ids] == [row[0] for row in whole.ids]
    with pytest.raises(errors.InvalidArgument, match="no rows"):
        client.identify(gallery="g", vectors=probes[:0], model="m")
