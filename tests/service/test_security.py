"""API keys, roles, tenants, TLS / mTLS, quotas, audit and erasure against a real server."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from convergent.client import Client, TlsConfig, errors
from convergent.server.rpc.auth import METHOD_ROLES, hash_secret, new_key
from convergent.server.settings import ServerSettings
from convergent.server.storage.key_store import KeyStore
from convergent.v1 import (
    alignment_pb2,
    anchors_pb2,
    galleries_pb2,
    info_pb2,
    models_pb2,
    tenant_pb2,
)


def make_key(server, tenant: str, role: str) -> str:
    key_id, secret, key = new_key()
    KeyStore(server.store.engine).insert(key_id, tenant, f"{tenant}-{role}", role, hash_secret(secret))
    return key


@pytest.fixture
def secured(start_server):
    return start_server(require_auth=True)


@pytest.mark.parametrize(("host", "expected"), [("127.0.0.1", False), ("::1", False), ("localhost", False),
                                                 ("0.0.0.0", True), ("10.1.2.3", True), ("example.org", True)])
def test_auth_is_on_by_default_off_loopback(host, expected, tmp_path):
    assert ServerSettings(host=host, data_dir=tmp_path).auth_enabled() is expected
    assert ServerSettings(host=host, data_dir=tmp_path, require_auth=True).auth_enabled() is True


def test_every_rpc_declares_its_role():
    services = [models_pb2, anchors_pb2, info_pb2, alignment_pb2, galleries_pb2, tenant_pb2]
    rpcs = {m.name for module in services for s in module.DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert rpcs == set(METHOD_ROLES)


def test_missing_invalid_and_revoked_keys(secured):
    with Client(secured.address) as anonymous:
        assert anonymous.health() is True  # health is exempt
        with pytest.raises(errors.Unauthenticated, match="missing API key"):
            anonymous.list_models()
    with Client(secured.address, api_key="cvg.000000000000.not-a-real-secret-at-all") as forged:
        with pytest.raises(errors.Unauthenticated, match="invalid or revoked"):
            forged.list_models()
    key = make_key(secured, "acme", "reader")
    with Client(secured.address, api_key=key) as client:
        assert client.list_models() == []
        assert client.usage().tenant == "acme"
    wrong_secret = key.rsplit(".", 1)[0] + ".x" + key.rsplit(".", 1)[1][1:]
    with Client(secured.address, api_key=wrong_secret) as client, pytest.raises(errors.Unauthenticated):
        client.list_models()
    KeyStore(secured.store.engine).revoke(key.split(".")[1])
    with Client(secured.address, api_key=key) as client, pytest.raises(errors.Unauthenticated, match="revoked"):
        client.list_models()


def test_x_api_key_header(secured):
    key = make_key(secured, "acme", "reader")
    channel = grpc.insecure_channel(secured.address)
    from convergent.v1 import models_pb2_grpc

    response = models_pb2_grpc.ModelServiceStub(channel).ListModels(
        models_pb2.ListModelsRequest(), metadata=(("x-api-key", key),), timeout=5
    )
    channel.close()
    assert list(response.models) == []


def test_roles(secured, rng):
    keys = {role: make_key(secured, "acme", role) for role in ("reader", "party", "admin")}
    clients = {role: Client(secured.address, api_key=key) for role, key in keys.items()}
    try:
        with pytest.raises(errors.PermissionDenied, match="role 'reader' may not call RegisterModel"):
            clients["reader"].register_model("m", dim=4)
        clients["party"].register_model("m", dim=4)
        clients["party"].upload_anchors("m", anchor_set="s", ids=list("abc"), vectors=rng.standard_normal((3, 4)))
        with pytest.raises(errors.PermissionDenied, match="reader"):
            clients["reader"].upload_anchors("m", anchor_set="s", ids=["d"], vectors=rng.standard_normal((1, 4)))
        assert clients["reader"].count_anchors("m", anchor_set="s") == 3
        with pytest.raises(errors.PermissionDenied, match="needs 'admin'"):
            clients["party"].delete_model("m")
        assert clients["admin"].delete_model("m") == 3
    finally:
        for c in clients.values():
            c.close()


def test_tenants_share_nothing(secured, rng):
    a = Client(secured.address, api_key=make_key(secured, "tenant-a", "admin"))
    b = Client(secured.address, api_key=make_key(secured, "tenant-b", "admin"))
    try:
        for client, dim in ((a, 4), (b, 6)):  # the same names in two tenants
            client.register_model("m", dim=dim)
            client.register_model("n", dim=dim)
            ids = [f"x{i}" for i in range(40)]
            client.upload_anchors("m", anchor_set="s", ids=ids, vectors=rng.standard_normal((40, dim)))
            client.upload_anchors("n", anchor_set="s", ids=ids, vectors=rng.standard_normal((40, dim)))
        fit_a = a.fit_alignment("m", "n", anchor_set="s", method="ridge")
        a.enroll(gallery="private", model="n", ids=["p"], vectors=np.ones((1, 4)))
        assert b.get_model("m").dim == 6 and [g.name for g in b.list_galleries()] == []
        assert [f.id for f in b.list_fits()] != [fit_a.id]

        def message(call):  # noqa: ANN001, ANN202
            with pytest.raises(errors.NotFound) as info:
                call()
            return info.value.details

        assert message(lambda: b.get_fit(fit_a.id)) == f"fit {fit_a.id!r} not found"
        assert message(lambda: b.export_fit(fit_a.id)) == message(lambda: b.export_fit("0" * 20)).replace("0" * 20, fit_a.id)
        assert message(lambda: b.identify(gallery="private", vectors=np.ones((1, 6)), model="n")) == \
            message(lambda: b.identify(gallery="never-existed", vectors=np.ones((1, 6)), model="n")).replace("never-existed", "private")
        with pytest.raises(errors.NotFound):
            b.delete_fit(fit_a.id)
        assert a.get_fit(fit_a.id).id == fit_a.id  # untouched
        assert b.usage().stored_vectors == 80 and a.usage().stored_vectors == 81
    finally:
        a.close()
        b.close()


def test_bootstrap_keys_file(start_server, tmp_path):
    key_id, secret, key = new_key()
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([{"key_id": key_id, "tenant": "k8s", "role": "party", "secret_sha256": hash_secret(secret)}]))
    server = start_server(require_auth=True, bootstrap_keys_file=path)
    with Client(server.address, api_key=key) as client:
        assert client.usage().tenant == "k8s" and client.usage().role == "party"
        client.register_model("m", dim=2)


@pytest.mark.parametrize("mutual", [False, True])
def test_tls_and_mtls(start_server, tls_files, mutual):
    server = start_server(tls_cert=tls_files["server_cert"], tls_key=tls_files["server_key"],
                          tls_client_ca=tls_files["ca"] if mutual else None)
    address = f"localhost:{server.port}"
    config = TlsConfig(ca_cert=str(tls_files["ca"]),
                       client_cert=str(tls_files["client_cert"]) if mutual else None,
                       client_key=str(tls_files["client_key"]) if mutual else None)
    with Client(address, tls=config, timeout=5) as client:
        assert client.health() is True
        client.register_model("m", dim=2)
    with Client(address, timeout=3) as plaintext, pytest.raises(errors.Unavailable):
        plaintext.list_models()
    if mutual:  # right CA, no client certificate: the handshake fails
        with Client(address, tls=TlsConfig(ca_cert=str(tls_files["ca"])), timeout=3) as no_cert, \
                pytest.raises(errors.Unavailable):
            no_cert.list_models()


def test_quota_resource_exhausted_and_nothing_stored(start_server, rng):
    server = start_server(max_vectors_per_tenant=100)
    with Client(server.address) as client:
        client.register_model("m", dim=4)
        client.upload_anchors("m", anchor_set="s", ids=range(90), vectors=rng.standard_normal((90, 4)))
        with pytest.raises(errors.ResourceExhausted, match="max_vectors_per_tenant=100: the tenant stores 90 vectors and this would add 20"):
            client.upload_anchors("m", anchor_set="s", ids=range(90, 110), vectors=rng.standard_normal((20, 4)))
        with pytest.raises(errors.ResourceExhausted, match="max_vectors_per_tenant=100"):
            client.enroll(gallery="g", model="m", ids=range(11), vectors=rng.standard_normal((11, 4)))
        assert client.count_anchors("m", anchor_set="s") == 90 and client.list_galleries() == []
        assert client.usage().stored_vectors == 90 and client.usage().max_vectors == 100
        assert client.enroll(gallery="g", model="m", ids=range(10), vectors=rng.standard_normal((10, 4))) == 10


def test_rows_per_message_limit_on_unary_calls(start_server, rng):
    server = start_server(max_vectors_per_message=50)
    with Client(server.address) as client:
        client.register_model("m", dim=4)
        client.enroll(gallery="g", model="m", ids=range(10), vectors=rng.standard_normal((10, 4)))
        with pytest.raises(errors.ResourceExhausted, match="max_vectors_per_message=50"):
            client.identify(gallery="g", vectors=rng.standard_normal((51, 4)), model="m")


def test_audit_log_and_erasure(start_server, gallery_backend, rng):
    secured = start_server(require_auth=True, gallery_backend=gallery_backend)
    admin_key = make_key(secured, "acme", "admin")
    reader_key = make_key(secured, "acme", "reader")
    with Client(secured.address, api_key=admin_key) as admin, Client(secured.address, api_key=reader_key) as reader:
        for model in ("a", "b"):
            admin.register_model(model, dim=4)
            admin.upload_anchors(model, anchor_set="s", ids=[f"person{i}" for i in range(30)], vectors=rng.standard_normal((30, 4)))
        fit = admin.fit_alignment("a", "b", anchor_set="s", method="ridge")
        admin.enroll(gallery="g", model="b", ids=["person1", "person2", "other"], vectors=rng.standard_normal((3, 4)))
        reader.identify(gallery="g", vectors=rng.standard_normal((2, 4)), model="a", k=1)
        with pytest.raises(errors.PermissionDenied):
            reader.erase(["person1"])
        report = admin.erase(["person1", "person2", "nobody"])
        assert report.anchors_deleted == 4 and report.gallery_items_deleted == 2
        assert report.anchor_sets_changed == ["s"] and report.galleries_changed == ["g"] and report.stale_fits == [fit.id]
        assert admin.get_fit(fit.id).stale is True
        assert admin.count_anchors("a", anchor_set="s") == 28 and admin.count_gallery("g") == 1
        assert reader.identify(gallery="g", vectors=rng.standard_normal((1, 4)), model="b", k=5).ids == [["other"]]
    if gallery_backend == "milvus":  # gone from the Milvus collection itself, not only from answers
        from pymilvus import MilvusClient

        from convergent.server.inference.milvus_index import collection_name

        milvus = MilvusClient(secured.settings.resolved_milvus_uri())
        stored = milvus.query(collection_name("acme", "g"), filter="", output_fields=["id"], limit=100, consistency_level="Strong")
        assert [row["id"] for row in stored] == ["other"]
    assert secured.flush_audit()  # entries are written in batches, off the request path
    entries = KeyStore(secured.store.engine).audit_entries("acme")
    methods = [(e.method, e.key_id, e.outcome) for e in reversed(entries)]
    assert ("Identify", reader_key.split(".")[1], "OK") in methods
    assert ("Erase", reader_key.split(".")[1], "PERMISSION_DENIED") in methods
    assert ("Erase", admin_key.split(".")[1], "OK") in methods
