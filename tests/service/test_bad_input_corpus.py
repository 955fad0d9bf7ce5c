"""Bad input across every RPC: each case gets its exact status, and the store is unchanged."""

from __future__ import annotations

import hashlib
import time

import grpc
import numpy as np
import pytest
import sqlalchemy as sa
from google.protobuf.struct_pb2 import Struct
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from convergent.client import Client
from convergent.server.errors import DOMAIN, REASONS, reason_status
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
    ("register: empty name", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="", dim=4), IA, "invalid model name", "INVALID_NAME"),
    ("register: bad characters", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="a b", dim=4), IA, "invalid model name", "INVALID_NAME"),
    ("register: reserved colon", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="shared:x", dim=4), IA, "invalid model name", "INVALID_NAME"),
    ("register: name too long", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="x" * 129, dim=4), IA, "1-128", "INVALID_NAME"),
    ("register: dim 0", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="new", dim=0), IA, "dim must be positive", "VALUE_OUT_OF_RANGE"),
    ("register: huge dim", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="new", dim=10**6), RE, "max_dim=4096", "DIMENSION_TOO_LARGE"),
    ("register: duplicate", "models", "RegisterModel", lambda f: models_pb2.RegisterModelRequest(name="a", dim=8), AE, "already exists", "NAME_TAKEN"),
    ("get: unknown model", "models", "GetModel", lambda f: models_pb2.GetModelRequest(name="ghost"), NF, "model 'ghost' not found", "MODEL_NOT_FOUND"),
    ("delete: unknown model", "models", "DeleteModel", lambda f: models_pb2.DeleteModelRequest(name="ghost"), NF, "not found", "MODEL_NOT_FOUND"),
    ("list: forged page token", "models", "ListModels", lambda f: models_pb2.ListModelsRequest(page=types_pb2.PageRequest(page_token="abc")), IA, "page_token", "INVALID_PAGE_TOKEN"),
    # --- anchors (streams)
    ("upload: wrong dimension", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 5))]), IA, "dimension 5", "DIMENSION_MISMATCH"),
    ("upload: NaN", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 8, np.nan))]), IA, "NaN or Inf", "NON_FINITE_VALUE"),
    ("upload: Inf", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 8, np.inf))]), IA, "NaN or Inf", "NON_FINITE_VALUE"),
    ("upload: empty stream", "anchors", "UploadAnchors", lambda f: iter([]), IA, "empty", "EMPTY_STREAM"),
    ("upload: no vectors", "anchors", "UploadAnchors", lambda f: iter([up()]), IA, "no vectors", "EMPTY_INPUT"),
    ("upload: ragged bytes", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=raw(b"\0" * 30, [1, 8]))]), IA, "30 bytes", "MALFORMED_MATRIX"),
    ("upload: 3-D shape", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=raw(b"\0" * 32, [1, 8, 1]))]), IA, "shape must be", "MALFORMED_MATRIX"),
    ("upload: dtype unspecified", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=raw(b"\0" * 32, [1, 8], 0))]), IA, "unsupported dtype", "MALFORMED_MATRIX"),
    ("upload: int64 dtype", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=raw(b"\0" * 64, [1, 8], types_pb2.DTYPE_INT64))]), IA, "unsupported dtype", "MALFORMED_MATRIX"),
    ("upload: duplicate ids in stream", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1", "n1"], vectors=m(2, 8))]), IA, "appears twice", "DUPLICATE_ID"),
    ("upload: ids/rows mismatch", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(2, 8))]), IA, "1 ids but 2", "LENGTH_MISMATCH"),
    ("upload: empty id", "anchors", "UploadAnchors", lambda f: iter([up(ids=[""], vectors=m(1, 8))]), IA, "1-256 characters", "INVALID_ID"),
    ("upload: zero vector", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 8, 0.0))]), IA, "zero norm", "ZERO_VECTOR"),
    ("upload: bad anchor set name", "anchors", "UploadAnchors", lambda f: iter([up(anchor_set="bad/set", ids=["n1"], vectors=m(1, 8))]), IA, "anchor set name", "INVALID_NAME"),
    ("upload: unknown model", "anchors", "UploadAnchors", lambda f: iter([up(model="ghost", ids=["n1"], vectors=m(1, 8))]), NF, "ghost", "MODEL_NOT_FOUND"),
    ("upload: stale model version", "anchors", "UploadAnchors", lambda f: iter([up(model_version=9, ids=["n1"], vectors=m(1, 8))]), FP, "version 9", "STALE_MODEL_VERSION"),
    ("upload: too many rows in a message", "anchors", "UploadAnchors", lambda f: iter([up(ids=[str(i) for i in range(1001)], vectors=m(1001, 8))]), RE, "max_vectors_per_message=1000", "TOO_MANY_VECTORS"),
    ("upload: changed vector without overwrite", "anchors", "UploadAnchors", lambda f: iter([up(ids=["new1"], vectors=m(1, 8), last=False), up(model="", anchor_set="", ids=["x0"], vectors=m(1, 8, 2.0))]), AE, "overwrite", "VECTOR_DIFFERS"),
    ("upload: second message names another set", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 8), last=False), up(anchor_set="t", ids=["n2"], vectors=m(1, 8))]), IA, "another model or anchor set", "STREAM_HEADER_CHANGED"),
    ("upload: stream cut short (no last message)", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 8), last=False, ends_with_last=True)]), IA, "cut short", "STREAM_CUT_SHORT"),
    ("upload: message after the last one", "anchors", "UploadAnchors", lambda f: iter([up(ids=["n1"], vectors=m(1, 8)), up(model="", anchor_set="", ids=["n2"], vectors=m(1, 8))]), IA, "follows the message marked last", "MESSAGE_AFTER_LAST"),
    ("enroll: stream cut short", "gal", "Enroll", lambda f: iter([en(ids=["z"], vectors=m(1, 8), last=False, ends_with_last=True)]), IA, "cut short", "STREAM_CUT_SHORT"),
    ("count: unknown model", "anchors", "CountAnchors", lambda f: anchors_pb2.CountAnchorsRequest(model="ghost", anchor_set="s"), NF, "ghost", "MODEL_NOT_FOUND"),
    ("delete anchors: unknown set", "anchors", "DeleteAnchors", lambda f: anchors_pb2.DeleteAnchorsRequest(model="a", anchor_set="nope"), NF, "anchor set 'nope'", "ANCHOR_SET_NOT_FOUND"),
    # --- alignment
    ("fit: unknown method", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="magic"), IA, "unknown method", "UNKNOWN_METHOD"),
    ("fit: unknown param", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="ridge", params=params(lam=1)), IA, "unknown parameters", "UNKNOWN_PARAMETER"),
    ("fit: param of the wrong type", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="procrustes", params=params(scale="yes")), IA, "boolean", "PARAMETER_WRONG_TYPE"),
    ("fit: negative alpha", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="ridge", params=params(alpha=-1)), IA, "in (0, 1e+12]", "PARAMETER_OUT_OF_RANGE"),
    # Hostile hyper-parameters: every one has an upper bound, checked before any math runs.
    ("fit: sparse max_iter 1e12", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="sparse", params=params(max_iter=1e12)), IA, "'max_iter' must be an integer in 1..100000", "PARAMETER_OUT_OF_RANGE"),
    ("fit: sparse n_alphas 1e8", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="sparse", params=params(n_alphas=1e8)), IA, "'n_alphas' must be an integer in 1..200", "PARAMETER_OUT_OF_RANGE"),
    ("fit: 200,000 ridge alphas", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="ridge", params=params(alphas=[1.0] * 200_000)), IA, "list of 1..100", "PARAMETER_OUT_OF_RANGE"),
    ("fit: alpha 1e300", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="ridge", params=params(alpha=1e300)), IA, "'alpha'", "PARAMETER_OUT_OF_RANGE"),
    ("fit: seed 1e20", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="procrustes", params=params(seed=1e20)), IA, "'seed' must be an integer", "PARAMETER_OUT_OF_RANGE"),
    ("fit: cca 1e9 components", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="cca", params=params(n_components=1e9)), IA, "'n_components'", "PARAMETER_OUT_OF_RANGE"),
    ("fit: spectral 0 groups", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="spectral", params=params(n_groups=0)), IA, "'n_groups'", "PARAMETER_OUT_OF_RANGE"),
    ("fit: 20 auto candidates", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="auto", params=params(candidates=["ridge"] * 20)), IA, "candidates", "PARAMETER_OUT_OF_RANGE"),
    ("shared: 1e9 components", "align", "FitSharedSpace", lambda f: alignment_pb2.FitSharedSpaceRequest(models=["a", "b"], anchor_set="s", params=params(n_components=1e9)), IA, "'n_components'", "PARAMETER_OUT_OF_RANGE"),
    ("fit: unknown anchor set", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="nope", method="ridge"), NF, "anchor set 'nope'", "ANCHOR_SET_NOT_FOUND"),
    ("fit: too few anchors", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="tiny", method="ridge"), FP, "needs at least 10", "TOO_FEW_ANCHORS"),
    ("delete fit: unknown id", "align", "DeleteFit", lambda f: alignment_pb2.DeleteFitRequest(id="nope"), NF, "not found", "FIT_NOT_FOUND"),
    ("fit: same model both sides", "align", "FitAlignment", lambda f: alignment_pb2.FitAlignmentRequest(source="a", target="a", anchor_set="s"), IA, "different models", "MODELS_NOT_DISTINCT"),
    ("shared: one model", "align", "FitSharedSpace", lambda f: alignment_pb2.FitSharedSpaceRequest(models=["a"], anchor_set="s"), IA, "at least 2", "MODELS_NOT_DISTINCT"),
    ("get fit: unknown id", "align", "GetFit", lambda f: alignment_pb2.GetFitRequest(id="nope"), NF, "fit 'nope' not found", "FIT_NOT_FOUND"),
    ("transform: wrong dim", "align", "Transform", lambda f: alignment_pb2.TransformRequest(source="a", target="b", vectors=m(2, 3)), IA, "dimension 3", "DIMENSION_MISMATCH"),
    ("transform: NaN", "align", "Transform", lambda f: alignment_pb2.TransformRequest(source="a", target="b", vectors=m(2, 8, np.nan)), IA, "NaN or Inf", "NON_FINITE_VALUE"),
    ("transform: no rows", "align", "Transform", lambda f: alignment_pb2.TransformRequest(source="a", target="b", vectors=m(0, 8)), IA, "no rows", "EMPTY_INPUT"),
    ("transform: no route", "align", "Transform", lambda f: alignment_pb2.TransformRequest(source="b", target="a", vectors=m(1, 8)), FP, "no fit from 'b' to 'a'", "NO_ROUTE"),
    ("transform: fit of another pair", "align", "Transform", lambda f: alignment_pb2.TransformRequest(source="b", fit_id=f, vectors=m(1, 8)), IA, "maps 'a' -> 'b'", "WRONG_FIT"),
    ("export: unknown fit", "align", "ExportFit", lambda f: alignment_pb2.ExportFitRequest(id="nope"), NF, "not found", "FIT_NOT_FOUND"),
    # --- galleries
    ("enroll: duplicate id", "gal", "Enroll", lambda f: iter([en(ids=["x0"], vectors=m(1, 8))]), AE, "already enrolled", "ID_TAKEN"),
    ("enroll: wrong dim", "gal", "Enroll", lambda f: iter([en(ids=["z"], vectors=m(1, 9))]), IA, "dimension 9", "DIMENSION_MISMATCH"),
    ("enroll: unknown index kind", "gal", "Enroll", lambda f: iter([en(gallery="new", ids=["z"], vectors=m(1, 8), index=7)]), IA, "unknown index", "UNKNOWN_OPTION"),
    ("enroll: another model's gallery", "gal", "Enroll", lambda f: iter([en(model="a", ids=["z"], vectors=m(1, 8))]), FP, "holds model 'b'", "GALLERY_MODEL_MISMATCH"),
    ("identify: k = 0", "gal", "Identify", lambda f: galleries_pb2.IdentifyRequest(gallery="g", model="b", vectors=m(1, 8), k=0), IA, "k must be", "VALUE_OUT_OF_RANGE"),
    ("identify: huge k", "gal", "Identify", lambda f: galleries_pb2.IdentifyRequest(gallery="g", model="b", vectors=m(1, 8), k=10**6), IA, "k must be", "VALUE_OUT_OF_RANGE"),
    ("identify: unknown gallery", "gal", "Identify", lambda f: galleries_pb2.IdentifyRequest(gallery="nope", model="b", vectors=m(1, 8), k=1), NF, "gallery 'nope'", "GALLERY_NOT_FOUND"),
    ("identify: Inf probes", "gal", "Identify", lambda f: galleries_pb2.IdentifyRequest(gallery="g", model="b", vectors=m(1, 8, np.inf), k=1), IA, "NaN or Inf", "NON_FINITE_VALUE"),
    ("fused: one model twice", "gal", "IdentifyFused", lambda f: galleries_pb2.IdentifyFusedRequest(gallery="g", k=1, parties=[galleries_pb2.PartyProbes(model="a", vectors=m(1, 8)), galleries_pb2.PartyProbes(model="a", vectors=m(1, 8))]), IA, "different model", "MODELS_NOT_DISTINCT"),
    ("get gallery: unknown", "gal", "GetGallery", lambda f: galleries_pb2.GetGalleryRequest(name="nope"), NF, "gallery 'nope'", "GALLERY_NOT_FOUND"),
    ("delete gallery: unknown", "gal", "DeleteGallery", lambda f: galleries_pb2.DeleteGalleryRequest(name="nope"), NF, "gallery 'nope'", "GALLERY_NOT_FOUND"),
    ("list anchor sets: unknown model", "anchors", "ListAnchorSets", lambda f: anchors_pb2.ListAnchorSetsRequest(model="ghost"), NF, "ghost", "MODEL_NOT_FOUND"),
    ("remove: no ids", "gal", "Remove", lambda f: galleries_pb2.RemoveRequest(gallery="g"), IA, "give the ids", "EMPTY_INPUT"),
    ("verify: far = 0", "gal", "Verify", lambda f: galleries_pb2.VerifyRequest(a_model="a", a=m(1, 8), b_model="b", b=m(1, 8), far=0), IA, "far must be", "VALUE_OUT_OF_RANGE"),
    ("verify: unresolvable far", "gal", "Verify", lambda f: galleries_pb2.VerifyRequest(a_model="a", a=m(1, 8), b_model="b", b=m(1, 8), far=1e-9), FP, "impostor", "UNRESOLVABLE_RATE"),
    ("calibrate: lengths differ", "gal", "Calibrate", lambda f: galleries_pb2.CalibrateRequest(a_model="a", a=m(2, 8), b_model="b", b=m(2, 8), same=[True]), IA, "same length", "LENGTH_MISMATCH"),
    ("erase: no ids", "tenant", "Erase", lambda f: tenant_pb2.EraseRequest(), IA, "give the ids", "EMPTY_INPUT"),
]




def _hostile_reason(accepted: str, value) -> str:
    """What a hostile value is for a parameter that accepts ``accepted`` (the docs' words): out of
    range when it is of the parameter's JSON type (a number for a number, a string for a choice
    of names), of the wrong type otherwise."""
    numeric = accepted.startswith(("integer", "number"))
    named = " / " in accepted and not accepted.startswith("true")
    right_type = numeric if isinstance(value, float) else named
    return "PARAMETER_OUT_OF_RANGE" if right_type else "PARAMETER_WRONG_TYPE"


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
        for key, accepted, *_ in methods.describe(method):
            for shown, value in (("a string", "many"), ("1e300", 1e300)):
                cases.append((f"{method}: {key} = {shown}", "align", rpc, request(method, key, value), IA, f"parameter {key!r}",
                              _hostile_reason(accepted, value)))
    return cases


CASES += _hostile_parameter_cases()


# The request field the details name (BadRequest for INVALID_ARGUMENT), for a sample of cases.
FIELDS = {
    "register: empty name": "name", "register: dim 0": "dim", "list: forged page token": "page_token",
    "upload: wrong dimension": "vectors", "upload: NaN": "vectors", "upload: ragged bytes": "vectors",
    "upload: duplicate ids in stream": "ids", "upload: bad anchor set name": "anchor_set", "fit: unknown method": "method",
    "fit: unknown param": "params.lam", "fit: param of the wrong type": "params.scale", "fit: negative alpha": "params.alpha",
    "transform: wrong dim": "vectors", "identify: k = 0": "k", "verify: far = 0": "far", "remove: no ids": "ids",
}


def error_details(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, list[tuple[str, str]]]:
    """The ErrorInfo and the BadRequest field violations of a failed call's status details."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no grpc-status-details-bin on {error.code()} {error.details()}"
    infos, violations = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            infos.append(error_details_pb2.ErrorInfo())
            detail.Unpack(infos[-1])
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
    assert len(infos) == 1, status
    return infos[0], violations


@pytest.mark.parametrize(("label", "stub", "method", "make", "code", "fragment", "reason"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(populated, label, stub, method, make, code, fragment, reason):
    server, stubs, fit_id = populated
    before = fingerprint(server)
    with pytest.raises(grpc.RpcError) as info:
        getattr(stubs[stub], method)(make(fit_id), timeout=10)
    assert info.value.code() is code, f"{label}: {info.value.code()} {info.value.details()}"
    assert fragment in info.value.details(), info.value.details()
    error, violations = error_details(info.value)
    assert (error.reason, error.domain) == (reason, DOMAIN), f"{label}: {error.reason} {info.value.details()}"
    assert reason in REASONS and reason_status(reason) == code.name, reason
    if label in FIELDS:
        assert violations == [(FIELDS[label], info.value.details())], violations
    if code is grpc.StatusCode.INVALID_ARGUMENT and error.metadata.get("field"):
        assert [field for field, _ in violations] == [error.metadata["field"]]
    assert fingerprint(server) == before, f"{label} changed the store"


def test_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert len({c[2] for c in CASES}) >= 20  # RPCs covered
    assert len({c[6] for c in CASES}) >= 30  # reasons covered


def test_cancelled_stream_stores_nothing(populated):
    server, stubs, _ = populated
    before = fingerprint(server)

    def slow():
        yield up(ids=["c1"], vectors=m(1, 8), last=False, ends_with_last=True)
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
        yield up(ids=["d1"], vectors=m(1, 8), last=False, ends_with_last=True)
        time.sleep(1.5)
        yield up(model="", anchor_set="", ids=["d2"], vectors=m(1, 8))

    with pytest.raises(grpc.RpcError) as info:
        stubs["anchors"].UploadAnchors(slow(), timeout=0.5)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(1.5)
    assert fingerprint(server) == before
