"""Machine-readable errors (issue 30, part 4): every failed call carries a ``google.rpc.Status``
in ``grpc-status-details-bin`` with an ``ErrorInfo`` (a reason of the one catalogue, domain
convergent.v1, metadata) and, for an invalid field, a ``BadRequest``; the SDK exposes them; the
catalogue, the raise sites and docs/api.md agree."""

from __future__ import annotations

import ast
import errno
import re
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from convergent.client import Client, errors
from convergent.server import errors as server_errors
from convergent.server.errors import DOMAIN, REASONS, reason_status
from convergent.server.logs import request_id_var
from convergent.server.registry.service import Registry
from convergent.server.rpc.errors import STATUS_TABLE, failure_for, status_for, status_message
from convergent.v1 import anchors_pb2, anchors_pb2_grpc, models_pb2, models_pb2_grpc
from convergent.wire import REQUEST_ID_KEY, WireError, encode_matrix

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((ROOT / "server").rglob("*.py")), ROOT / "proto" / "convergent" / "wire.py"]
REASON_PATTERN = re.compile(r"[A-Z][A-Z0-9_]*")


def details_of(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, list[tuple[str, str]]]:
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()} without status details: {error.details()}"
    info, violations = None, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
    assert info is not None and info.domain == DOMAIN, status
    return info, violations


# ---------------------------------------------------------------- the catalogue
def _constants(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _reasons_in_source() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """(reason -> files using it, [(where, class raised, reason)] of raise sites naming a class
    of convergent.server.errors): ``reason="..."`` keywords (either branch of a conditional),
    ``default_reason`` of a class, and a ``reason`` argument's default."""
    used: dict[str, set[str]] = {}
    raised: list[tuple[str, str, str]] = []
    classes = {name for name, value in vars(server_errors).items() if isinstance(value, type)}
    for path in SOURCES:
        where = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg == "reason":
                        names = {c for c in _constants(keyword.value) if REASON_PATTERN.fullmatch(c)}
                        found |= names
                        func = node.func
                        cls = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                        if cls in classes:
                            raised += [(f"{where}:{node.lineno}", cls, n) for n in names]
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "default_reason" for t in node.targets):
                found |= _constants(node.value)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "default_reason":
                found |= _constants(node.value) if node.value is not None else set()
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                positional = args.posonlyargs + args.args
                pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
                pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
                found |= {c for a, d in pairs if a.arg == "reason" for c in _constants(d) if REASON_PATTERN.fullmatch(c)}
        for name in found:
            used.setdefault(name, set()).add(where)
    return used, raised


def _errors_section() -> str:
    text = (ROOT / "docs" / "api.md").read_text()
    start = text.index("### Errors")
    end = text.find("\n## ", start)
    return text[start:end if end >= 0 else None]


def test_every_reason_used_is_catalogued_every_catalogued_one_is_used_and_documented():
    used, _ = _reasons_in_source()
    assert set(used) - set(REASONS) == set(), {r: sorted(used[r]) for r in set(used) - set(REASONS)}
    assert set(REASONS) - set(used) == set(), "catalogued but never used"
    section = _errors_section()
    undocumented = [r for r in REASONS if f"`{r}`" not in section]
    assert not undocumented, f"docs/api.md 'Errors' lacks {undocumented}"
    for reason, meaning in REASONS.items():
        assert REASON_PATTERN.fullmatch(reason) and len(reason) <= 40, reason
        status = reason_status(reason)
        assert status in grpc.StatusCode.__members__ and meaning[len(status) + 2:], reason
        row = next(line for line in section.splitlines() if line.startswith(f"| `{reason}`"))
        assert f"`{status}`" in row, row
    assert 30 <= len(REASONS) <= 70


def test_each_raise_site_and_class_default_goes_with_its_status():
    """A reason is sent with the status of the class raised: no NOT_FOUND reason on an INVALID_ARGUMENT."""
    _, raised = _reasons_in_source()
    assert len(raised) > 100
    wrong = []
    for where, cls, reason in raised:
        code = status_for(getattr(server_errors, cls)("x"))
        if reason in REASONS and reason_status(reason) != code.name:
            wrong.append((where, cls, reason, code.name))
    assert not wrong, wrong
    for cls, code in STATUS_TABLE:
        default = getattr(cls, "default_reason", None)
        if default is not None:
            assert reason_status(default) == code.name, (cls, default)


def test_failures_of_the_storage_and_of_bugs():
    """A full disk and a damaged store are read as their reasons; anything else is INTERNAL
    naming the request id; WireError keeps its own reason and field."""
    full = failure_for(OSError(errno.ENOSPC, "No space left on device"))
    assert (full.code, full.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STORAGE_FULL")
    damaged = failure_for(server_errors.DataLoss("gallery 'g' is damaged"))
    assert (damaged.code, damaged.reason) == (grpc.StatusCode.DATA_LOSS, "DATA_DAMAGED")
    wire = failure_for(WireError("vectors: 30 bytes do not hold shape [1, 8]", field="vectors"))
    assert (wire.code, wire.reason, wire.field) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_MATRIX", "vectors")
    token = request_id_var.set("req-42")
    try:
        bug = failure_for(ZeroDivisionError("secret internals"))
    finally:
        request_id_var.reset(token)
    assert (bug.code, bug.reason, dict(bug.metadata)) == (grpc.StatusCode.INTERNAL, "INTERNAL", {"request_id": "req-42"})
    assert "secret" not in bug.message and "req-42" in bug.message
    status = status_message(failure_for(server_errors.InvalidInput("k must be in 1..100, got 0", reason="VALUE_OUT_OF_RANGE",
                                                                   field="k", metadata={"limit": "max_k", "value": 100})))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and len(status.details) == 2


# ---------------------------------------------------------------- on the wire and in the SDK
@pytest.fixture
def one_server(start_server):
    return start_server()


def test_sdk_exposes_reason_metadata_and_field_violations(one_server):
    rng = np.random.default_rng(0)
    with Client(one_server.address) as client:
        client.register_model("a", dim=8)
        client.register_model("b", dim=8)
        with pytest.raises(errors.InvalidArgument) as info:
            client.upload_anchors("a", anchor_set="s", ids=["x"], vectors=rng.standard_normal((1, 5)))
        error = info.value
        assert error.reason == "DIMENSION_MISMATCH" and error.domain == DOMAIN
        assert error.metadata["expected"] == "8" and error.metadata["got"] == "5" and error.metadata["model"] == "a"
        assert [field for field, _ in error.field_violations] == ["vectors"]
        assert error.request_id and "[DIMENSION_MISMATCH]" in str(error)

        ids = [f"x{i}" for i in range(20)]
        for model in ("a", "b"):
            client.upload_anchors(model, anchor_set="s", ids=ids, vectors=rng.standard_normal((20, 8)))
        with pytest.raises(errors.InvalidArgument) as info:
            client.fit_alignment("a", "b", anchor_set="s", method="ridge", lam=1.0)
        assert info.value.reason == "UNKNOWN_PARAMETER"
        assert info.value.field_violations == [("params.lam", info.value.details)]
        assert info.value.metadata["parameters"] == "lam" and info.value.request_id

        with pytest.raises(errors.InvalidArgument) as info:
            client.fit_alignment("a", "b", anchor_set="s", method="ridge", alpha="big")
        assert (info.value.reason, info.value.field_violations[0][0]) == ("PARAMETER_WRONG_TYPE", "params.alpha")

        with pytest.raises(errors.NotFound) as info:
            client.get_model("ghost")
        assert (info.value.reason, info.value.metadata, info.value.field_violations) == ("MODEL_NOT_FOUND", {"name": "ghost"}, [])

        with pytest.raises(errors.FailedPrecondition) as info:
            client.transform(rng.standard_normal((1, 8)), "b", "a")
        assert info.value.reason == "NO_ROUTE" and info.value.metadata == {"source": "b", "target": "a"}

        with pytest.raises(errors.ResourceExhausted) as info:
            client.register_model("huge", dim=10**7)
        assert info.value.reason == "DIMENSION_TOO_LARGE"
        assert info.value.metadata == {"limit": "max_dim", "value": str(one_server.settings.max_dim), "field": "dim"}


def test_errors_keep_the_request_id_in_the_trailing_metadata(one_server):
    with grpc.insecure_channel(one_server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            models_pb2_grpc.ModelServiceStub(channel).GetModel(models_pb2.GetModelRequest(name="ghost"),
                                                               metadata=((REQUEST_ID_KEY, "trace-1"),), timeout=5)
    assert dict(info.value.trailing_metadata())[REQUEST_ID_KEY] == "trace-1"
    error, violations = details_of(info.value)
    assert (error.reason, violations) == ("MODEL_NOT_FOUND", [])


def test_internal_errors_carry_reason_internal_and_the_request_id(one_server, monkeypatch):
    def broken(self, tenant, name):  # noqa: ANN001, ANN202
        raise RuntimeError("a bug with internals in its message")

    monkeypatch.setattr(Registry, "get_model", broken)
    with grpc.insecure_channel(one_server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            models_pb2_grpc.ModelServiceStub(channel).GetModel(models_pb2.GetModelRequest(name="m"),
                                                               metadata=((REQUEST_ID_KEY, "trace-2"),), timeout=5)
    assert info.value.code() is grpc.StatusCode.INTERNAL and "internals" not in info.value.details()
    assert dict(info.value.trailing_metadata())[REQUEST_ID_KEY] == "trace-2"
    error, violations = details_of(info.value)
    assert (error.reason, dict(error.metadata), violations) == ("INTERNAL", {"request_id": "trace-2"}, [])
    with Client(one_server.address) as client, pytest.raises(errors.Internal) as sdk:
        client.get_model("m")
    assert sdk.value.reason == "INTERNAL" and sdk.value.metadata["request_id"] == sdk.value.request_id != ""


def test_authentication_errors_carry_details(start_server):
    from convergent.server.rpc.auth import hash_secret, new_key
    from convergent.server.storage.key_store import KeyStore

    secured = start_server(require_auth=True)
    key_id, secret, key = new_key()
    KeyStore(secured.store.engine).insert(key_id, "acme", "acme-reader", "reader", hash_secret(secret))
    with Client(secured.address) as anonymous, pytest.raises(errors.Unauthenticated) as info:
        anonymous.list_models()
    assert info.value.reason == "MISSING_API_KEY" and info.value.request_id
    with Client(secured.address, api_key="cvg.000000000000.not-a-real-secret-at-all") as forged:
        with pytest.raises(errors.Unauthenticated) as info:
            forged.list_models()
    assert info.value.reason == "INVALID_API_KEY"
    with Client(secured.address, api_key=key) as reader, pytest.raises(errors.PermissionDenied) as info:
        reader.register_model("m", dim=4)
    assert info.value.reason == "PERMISSION_DENIED"
    assert info.value.metadata == {"role": "reader", "needed": "party", "method": "RegisterModel"}


def test_stream_limits_carry_details(start_server):
    """The stream guard's refusals: a stream over max_streams_per_client and one that goes idle."""
    server = start_server(stream_idle_seconds=1.0, max_streams_per_client=1)
    with Client(server.address) as client:
        client.register_model("m", dim=4)
    stop = threading.Event()

    def idle():  # one message, never last=true, then silence
        yield anchors_pb2.UploadAnchorsRequest(model="m", anchor_set="s", ids=["a"],
                                               vectors=encode_matrix(np.ones((1, 4), np.float32)))
        stop.wait(10)

    try:
        with grpc.insecure_channel(server.address) as channel:
            upload = anchors_pb2_grpc.AnchorServiceStub(channel).UploadAnchors
            held = upload.future(idle(), metadata=((REQUEST_ID_KEY, "trace-3"),), timeout=10)
            deadline = threading.Event()
            while server.streams.total < 1 and not deadline.wait(0.02):
                pass
            with pytest.raises(grpc.RpcError) as over:
                upload(iter([anchors_pb2.UploadAnchorsRequest(model="m", anchor_set="s")]), timeout=5)
            with pytest.raises(grpc.RpcError) as ended:
                held.result()
    finally:
        stop.set()
    assert over.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    error, _ = details_of(over.value)
    assert (error.reason, dict(error.metadata)) == ("TOO_MANY_STREAMS", {"limit": "max_streams_per_client", "value": "1"})
    assert ended.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    error, _ = details_of(ended.value)
    assert (error.reason, dict(error.metadata)) == ("STREAM_IDLE_TIMEOUT", {"limit": "stream_idle_seconds", "value": "1"})
    assert dict(ended.value.trailing_metadata())[REQUEST_ID_KEY] == "trace-3"
