"""Bad input across every RPC: each case gets its exact status, and the store is unchanged."""

from __future__ import annotations

import hashlib
import time

import grpc
import numpy as np
import pytest
import sqlalchemy as sa
from google.protobuf.struct_pb2 import Struct

from convergent.client import Client
from convergent.server.storage import schema
from convergent.v1 import (
    alignment_pb2,
    alignment_pb2_grpc,
    anchors_pb2,
    anchors_pb2_grpc,
    galleries_pb2,
    galleries_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
    types_pb2,
)
from convergent.wire import encode_matrix

IA, NF, FP, AE, RE = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                      grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.RESOURCE_EXHAUSTED)


def m(rows, cols, value=1.0):
    return encode_matrix(np.full((rows, cols), value, dtype=np.float32))


def raw(data: bytes, shape, dtype=types_pb2.DTYPE_FLOAT32):
    return types_pb2.Matrix(data=data, shape=shape, dtype=dtype)


def params(**kw):
    struct = Struct()
    struct.update(kw)
    return struct


def up(**kw):
    base = {"model": "a", "anchor_set": "s", "last": True}
    base.update(kw)
    return anchors_pb2.UploadAnchorsRequest(**base)


def en(**kw):
    base = {"gallery": "g", "model": "b", "last": True}
    base.update(kw)
    return galleries_pb2.EnrollRequest(**base)


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    from convergent.server.rpc.app import ConvergentServer
    from convergent.server.settings import ServerSettings

    settings = ServerSettings(host="127.0.0.1", port=0, data_dir=tmp_path_factory.mktemp("corpus"),
                              max_vectors_per_message=1000, max_dim=4096)
    rng = np.random.default_rng(0)
    with ConvergentServer(settings) as server, Client(server.address) as client:
        ids = [f"x{i}" for i in range(50)]
        for model in ("a", "b"):
            client.register_model(model, dim=8)
            client.upload_anchors(model, anchor_set="s", ids=ids, vectors=rng.standard_normal((50, 8)))
        fit = client.fit_alignment("a", "b", anchor_set="s", method="ridge")
        for model in ("a", "b"):
            client.upload_anchors(model, anchor_set="tiny", ids=ids[:5], vectors=rng.standard_normal((5, 8)))
        client.enroll(gallery="g", model="b", ids=ids[:10], vectors=rng.standard_normal((10, 8)))
        channel = grpc.insecure_channel(server.address)
        stubs = {
            "models": models_pb2_grpc.ModelServiceStub(channel), "anchors": anchors_pb2_grpc.AnchorServiceStub(channel),
            "align": alignment_pb2_grpc.AlignmentServiceStub(channel), "gal": galleries_pb2_grpc.GalleryServiceStub(channel),
            "tenant": tenant_pb2_grpc.TenantServiceStub(channel),
        }
        yield server, stubs, fit.id
        channel.close()


def fingerprint(server) -> str:
    """Every row of every table that holds user data (audit log excluded: reads are logged)."""
    digest = hashlib.sha256()
    with server.store.engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            if table.name == "audit_log":
                continue
            for row in conn.execute(sa.select(table).order_by(*table.primary_key.columns)):
                digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


CASES = [
    # --- models
    ("register: empty name", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="", dim=4), IA, "invalid model name"),
    ("register: bad characters", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="a b", dim=4), IA, "invalid model name"),
    ("register: reserved colon", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="shared:x", dim=4), IA, "invalid model name"),
    ("register: name too long", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="x" * 129, dim=4), IA, "1-128"),
    ("register: dim 0", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="new", dim=0), IA, "dim must be positive"),
    ("register: huge dim", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="new", dim=10**6), RE, "max_dim=4096"),
    ("register: duplicate", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="a", dim=8), AE, "already exists"),
    ("get: unknown model", "models", "GetModel", lambda f: models_pb2.GetModelRequest(name="ghost"), NF, "model 'ghost' not found"),
    ("delete: unknown model", "models", "DeleteModel", lambda f: models_pb2.DeleteModelRequest(name="ghost"), NF, "not found"),
    ("list: forged page token", "models", "ListModels", lambda f: models_pb2.ListModelsRequest(page=types_pb2.PageRequest(page_token="abc")), IA, "page_token"),
    # --- anchors (streams)
    ("upload: wrong dimension", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 5))]), IA, "dimension 5"),
    ("upload: NaN", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 8, np.nan))]), IA, "NaN or Inf"),
    ("upload: Inf", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 8, np.inf))]), IA, "NaN or Inf"),
    ("upload: empty stream", "anchors", "UploadAnchors", lambda f: iter([]), IA, "empty"),
    ("upload: no vectors", "anchors", "UploadAnchors", lambda f: iter([up()]), IA, "no vectors"),
    ("upload: ragged bytes", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=raw(b"\0" * 30, [1, 8]))]), IA, "30 bytes"),
    ("upload: 3-D shape", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=raw(b"\0" * 32, [1, 8, 1]))]), IA, "shape must be"),
    ("upload: dtype unspecified", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=raw(b"\0" * 32, [1, 8], 0))]), IA, "unsupported dtype"),
    ("upload: int64 dtype", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=raw(b"\0" * 64, [1, 8], types_pb2.DTYPE_INT64))]), IA, "unsupported dtype"),
    ("upload: duplicate ids in stream", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1", "n1"], vectors=m(2, 8))]), IA, "appears twice"),
    ("upload: ids/rows mismatch", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(2, 8))]), IA, "1 ids but 2"),
    ("upload: empty id", "anchors", "UploadAnchors", lambda f: iter([up(ids=[""], vectors=m(1, 8))]), IA, "1-256 characters"),
    ("upload: zero vector", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 8, 0.0))]), IA, "zero norm"),
    ("upload: bad anchor set name", "anchors", "UploadAnchors", lambda f: iter([up(anchor_set="bad/set", ids=["n1"], vectors=m(1, 8))]), IA, "anchor set name"),
    ("upload: unknown model", "anchors", "UploadAnchors", lambda f: iter([up(model="ghost", ids=["n1"], vectors=m(1, 8))]), NF, "ghost"),
    ("upload: stale model version", "anchors", "UploadAnchors", lambda f: iter([up(model_version=9, ids=["n1"], vectors=m(1, 8))]), FP, "version 9"),
    ("upload: too many rows in a message", "anchors", "UploadAnchors", lambda f: iter([up(ids=[str(i) for i in range(1001)], vectors=m(1001, 8))]), RE, "max_vectors_per_message=1000"),
    ("upload: changed vector without overwrite", "anchors", "UploadAnchors", lambda f: iter([up(ids=["new1"], vectors=m(1, 8), last=False), up(model="", anchor_set="", ids=["x0"], vectors=m(1, 8, 2.0))]), AE, "overwrite"),
    ("upload: second message names another set", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 8), last=False), up(anchor_set="t", ids=["n2"], vectors=m(1, 8))]), IA, "another model or anchor set"),
    ("upload: stream cut short (no last message)", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 8), last=False)]), IA, "cut short"),
    ("upload: message after the last one", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 8)), up(model="", anchor_set="", ids=["n2"], vectors=m(1, 8))]), IA, "follows the message marked last"),
    ("enroll: stream cut short", "gal", "Enroll", lambda f: iter([en(ids=["z"], vectors=m(1, 8), last=False)]), IA, "cut short"),
    ("count: unknown model", "anchors", "CountAnchors", lambda f: anchors_pb2.CountAnchorsRequest(model="ghost", anchor_set="s"), NF, "ghost"),
    ("delete anchors: unknown set", "anchors", "DeleteAnchors", lambda f: anchors_pb2.DeleteAnchorsRequest(model="a", anchor_set="nope"), NF, "anchor set 'nope'"),
    # --- alignment
    ("fit: unknown method", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="magic"), IA, "unknown method"),
    ("fit: unknown param", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="ridge", params=params(lam=1)), IA, "unknown parameters"),
    ("fit: param of the wrong type", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="procrustes", params=params(scale="yes")), IA, "boolean"),
    ("fit: negative alpha", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="ridge", params=params(alpha=-1)), IA, "in (0, 1e+12]"),
    # Hostile hyper-parameters: every one has an upper bound, checked before any math runs.
    ("fit: sparse max_iter 1e12", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="sparse", params=params(max_iter=1e12)), IA, "'max_iter' must be an integer in 1..100000"),
    ("fit: sparse n_alphas 1e8", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="sparse", params=params(n_alphas=1e8)), IA, "'n_alphas' must be an integer in 1..200"),
    ("fit: 200,000 ridge alphas", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="ridge", params=params(alphas=[1.0] * 200_000)), IA, "list of 1..100"),
    ("fit: alpha 1e300", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="ridge", params=params(alpha=1e300)), IA, "'alpha'"),
    ("fit: seed 1e20", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="procrustes", params=params(seed=1e20)), IA, "'seed' must be an integer"),
    ("fit: cca 1e9 components", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="cca", params=params(n_components=1e9)), IA, "'n_components'"),
    ("fit: spectral 0 groups", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="spectral", params=params(n_groups=0)), IA, "'n_groups'"),
    ("fit: 20 auto candidates", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="auto", params=params(candidates=["ridge"] * 20)), IA, "candidates"),
    ("shared: 1e9 components", "align", "FitSharedSpace", lambda f: alignment_pb2.FitSharedSpaceRequest(models=["a", "b"], anchor_set="s", params=params(n_components=1e9)), IA, "'n_components'"),
    ("fit: unknown anchor set", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="nope", method="ridge"), NF, "anchor set 'nope'"),
    ("fit: too few anchors", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="tiny", method="ridge"), FP, "needs at least 10"),
    ("delete fit: unknown id", "align", "DeleteFit", lambda f: alignment_pb2.DeleteFitRequest(id="nope"), NF, "not found"),
    ("fit: same model both sides", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="a", anchor_set="s"), IA, "different models"),
    ("shared: one model", "align", "FitSharedSpace", lambda f: alignment_pb2.FitSharedSpaceRequest(models=["a"], anchor_set="s"), IA, "at least 2"),
    ("get fit: unknown id", "align", "GetFit", lambda f: alignment_pb2.GetFitRequest(id="nope"), NF, "fit 'nope' not found"),
    ("transform: wrong dim", "align", "Transform", lambda f: alignment_pb2.TransformRequest(source="a", target="b", vectors=m(2, 3)), IA, "dimension 3"),
    ("transform: NaN", "align", "Transform", lambda f: alignment_pb2.TransformRequest(source="a", target="b", vectors=m(2, 8, np.nan)), IA, "NaN or Inf"),
    ("transform: no rows", "align", "Transform", lambda f: alignment_pb2.TransformRequest(source="a", target="b", vectors=m(0, 8)), IA, "no rows"),
    ("transform: no route", "align", "Transform", lambda f: alignment_pb2.TransformRequest(source="b", target="a", vectors=m(1, 8)), FP, "no fit from 'b' to 'a'"),
    ("transform: fit of another pair", "align", "Transform", lambda f: alignment_pb2.TransformRequest(source="b", fit_id=f, vectors=m(1, 8)), IA, "maps 'a' -> 'b'"),
    ("export: unknown fit", "align", "ExportFit", lambda f: alignment_pb2.ExportFitRequest(id="nope"), NF, "not found"),
    # --- galleries
    ("enroll: duplicate id", "gal", "Enroll", lambda f: iter([en(ids=["x0"], vectors=m(1, 8))]), AE, "already enrolled"),
    ("enroll: wrong dim", "gal", "Enroll", lambda f: iter([en(ids=["z"], vectors=m(1, 9))]), IA, "dimension 9"),
    ("enroll: unknown index kind", "gal", "Enroll", lambda f: iter([en(gallery="new", ids=["z"], vectors=m(1, 8), index=7)]), IA, "unknown index"),
    ("enroll: another model's gallery", "gal", "Enroll", lambda f: iter([en(model="a", ids=["z"], vectors=m(1, 8))]), FP, "holds model 'b'"),
    ("identify: k = 0", "gal", "Identify", lambda f: galleries_pb2.IdentifyRequest(gallery="g", model="b", vectors=m(1, 8), k=0), IA, "k must be"),
    ("identify: huge k", "gal", "Identify", lambda f: galleries_pb2.IdentifyRequest(gallery="g", model="b", vectors=m(1, 8), k=10**6), IA, "k must be"),
    ("identify: unknown gallery", "gal", "Identify", lambda f: galleries_pb2.IdentifyRequest(gallery="nope", model="b", vectors=m(1, 8), k=1), NF, "gallery 'nope'"),
    ("identify: Inf probes", "gal", "Identify", lambda f: galleries_pb2.IdentifyRequest(gallery="g", model="b", vectors=m(1, 8, np.inf), k=1), IA, "NaN or Inf"),
    ("fused: one model twice", "gal", "IdentifyFused", lambda f: galleries_pb2.IdentifyFusedRequest(gallery="g", k=1, parties=[galleries_pb2.PartyProbes(model="a", vectors=m(1, 8)), galleries_pb2.PartyProbes(model="a", vectors=m(1, 8))]), IA, "different model"),
    ("get gallery: unknown", "gal", "GetGallery", lambda f: galleries_pb2.GetGalleryRequest(name="nope"), NF, "gallery 'nope'"),
    ("delete gallery: unknown", "gal", "DeleteGallery", lambda f: galleries_pb2.DeleteGalleryRequest(name="nope"), NF, "gallery 'nope'"),
    ("list anchor sets: unknown model", "anchors", "ListAnchorSets", lambda f: anchors_pb2.ListAnchorSetsRequest(model="ghost"), NF, "ghost"),
    ("remove: no ids", "gal", "Remove", lambda f: galleries_pb2.RemoveRequest(gallery="g"), IA, "give the ids"),
    ("verify: far = 0", "gal", "Verify", lambda f: galleries_pb2.VerifyRequest(a_model="a", a=m(1, 8), b_model="b", b=m(1, 8), far=0), IA, "far must be"),
    ("verify: unresolvable far", "gal", "Verify", lambda f: galleries_pb2.VerifyRequest(a_model="a", a=m(1, 8), b_model="b", b=m(1, 8), far=1e-9), FP, "impostor"),
    ("calibrate: lengths differ", "gal", "Calibrate", lambda f: galleries_pb2.CalibrateRequest(a_model="a", a=m(2, 8), b_model="b", b=m(2, 8), same=[True]), IA, "same length"),
    ("erase: no ids", "tenant", "Erase", lambda f: tenant_pb2.EraseRequest(), IA, "give the ids"),
]




def _hostile_parameter_cases() -> list[tuple]:
    """From the method table: every parameter of every method (auto and shared spaces too)
    refuses a string and a number past every bound, naming the parameter."""
    from convergent.server.align import methods

    def request(method, key, value):
        if method == methods.COOPERATIVE:
            return lambda f: alignment_pb2.FitCooperativeRequest(space="x", anchor_set="s", teachers=["a"], params=params(**{key: value}))
        if method in (methods.SHARED, methods.SHARED_CONTRASTIVE):
            extra = {"method": "contrastive"} if method == methods.SHARED_CONTRASTIVE else {}
            return lambda f: alignment_pb2.FitSharedSpaceRequest(models=["a", "b"], anchor_set="s",
                                                                 params=params(**{**extra, key: value}))
        return lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method=method,
                                                           params=params(**{key: value}))

    cases = []
    for method in (*methods.PARAMS, *methods.OTHER_PARAMS):
        rpc = {methods.SHARED: "FitSharedSpace", methods.SHARED_CONTRASTIVE: "FitSharedSpace",
               methods.COOPERATIVE: "FitCooperative"}.get(method, "FitAlignment")
        for key, *_ in methods.describe(method):
            for shown, value in (("a string", "many"), ("1e300", 1e300)):
                cases.append((f"{method}: {key} = {shown}", "align", rpc, request(method, key, value), IA, f"parameter {key!r}"))
    return cases


CASES += _hostile_parameter_cases()


@pytest.mark.parametrize(("label", "stub", "method", "make", "code", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(populated, label, stub, method, make, code, fragment):
    server, stubs, fit_id = populated
    before = fingerprint(server)
    with pytest.raises(grpc.RpcError) as info:
        getattr(stubs[stub], method)(make(fit_id), timeout=10)
    assert info.value.code() is code, f"{label}: {info.value.code()} {info.value.details()}"
    assert fragment in info.value.details(), info.value.details()
    assert fingerprint(server) == before, f"{label} changed the store"


def test_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert len({c[2] for c in CASES}) >= 20  # RPCs covered


def test_cancelled_stream_stores_nothing(populated):
    server, stubs, _ = populated
    before = fingerprint(server)

    def slow():
        yield up(ids=["c1"], vectors=m(1, 8), last=False)
        time.sleep(2)
        yield up(model="", anchor_set="", ids=["c2"], vectors=m(1, 8))

    future = stubs["anchors"].UploadAnchors.future(slow(), timeout=10)
    time.sleep(0.3)
    future.cancel()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    time.sleep(0.5)
    assert fingerprint(server) == before


def test_deadline_exceeded_stores_nothing(populated):
    server, stubs, _ = populated
    before = fingerprint(server)

    def slow():
        yield up(ids=["d1"], vectors=m(1, 8), last=False)
        time.sleep(1.5)
        yield up(model="", anchor_set="", ids=["d2"], vectors=m(1, 8))

    with pytest.raises(grpc.RpcError) as info:
        stubs["anchors"].UploadAnchors(slow(), timeout=0.5)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(1.5)
    assert fingerprint(server) == before
