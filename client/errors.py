"""Errors raised by the SDK: one class per gRPC status, all under :class:`ConvergentError`.

Branch on :attr:`ConvergentError.reason` (a stable machine-readable string such as
``DIMENSION_MISMATCH`` or ``UNKNOWN_PARAMETER``; docs/api.md "Errors" lists them all), not on
the message: the server sends it as a ``google.rpc.Status`` with an ``ErrorInfo`` (and a
``BadRequest`` for invalid fields) in the ``grpc-status-details-bin`` trailer.
"""

from __future__ import annotations

import logging

import grpc
from google.rpc import error_details_pb2

from convergent.wire import REQUEST_ID_KEY

log = logging.getLogger("convergent.client")

#: ErrorInfo.domain of the errors convergent's server sends.
DOMAIN = "convergent.v1"


class ConvergentError(Exception):
    """An RPC failed. ``code`` is the ``grpc.StatusCode``, ``details`` the server's message,
    ``request_id`` the id the server logged the call under ("" if unknown).

    From the status details: ``reason`` (e.g. ``"DIMENSION_MISMATCH"``; "" when the server sent
    none, e.g. a transport error), ``domain`` (``"convergent.v1"``), ``metadata`` (str -> str,
    e.g. ``{"limit": "max_dim", "value": "4096"}``) and ``field_violations`` (the invalid
    request fields as (field, description) pairs)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, code: grpc.StatusCode | None = None, request_id: str = "", *, reason: str = "",
                 domain: str = "", metadata: dict[str, str] | None = None,
                 field_violations: list[tuple[str, str]] | None = None) -> None:
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code
        self.request_id = request_id
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations or [])

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        suffix = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.code.name}{reason}: {self.details}{suffix}"


class InvalidArgument(ConvergentError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ConvergentError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ConvergentError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ConvergentError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ConvergentError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(ConvergentError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ConvergentError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(ConvergentError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ConvergentError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ConvergentError):
    code = grpc.StatusCode.CANCELLED


class Internal(ConvergentError):
    code = grpc.StatusCode.INTERNAL


class Unimplemented(ConvergentError):
    code = grpc.StatusCode.UNIMPLEMENTED


class DataLoss(ConvergentError):
    """Stored data the call needs is damaged on the server (failed checksum or count); not served."""

    code = grpc.StatusCode.DATA_LOSS


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, ResourceExhausted,
        Unauthenticated, PermissionDenied, Unavailable, DeadlineExceeded, Cancelled, Internal,
        Unimplemented, DataLoss,
    )
}


def status_details(error: grpc.RpcError) -> tuple[str, str, dict[str, str], list[tuple[str, str]]]:
    """(reason, domain, metadata, field violations) from a failed call's ``google.rpc.Status``
    details; empty when it carries none (or ones that do not parse)."""
    from grpc_status import rpc_status  # only on an error: keeps the import of the SDK light

    reason, domain, metadata, violations = "", "", {}, []
    try:
        status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
    except (ValueError, TypeError, AttributeError) as exc:  # details inconsistent with the call, or no call
        log.debug("status details not read: %s", exc)
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and not reason:
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
    return reason, domain, metadata, violations


def from_rpc_error(error: grpc.RpcError) -> ConvergentError:
    """The SDK exception for a failed call (subclass chosen by status code), with the reason,
    metadata and field violations of its status details."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(code)
    request_id = ""
    metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY:
            request_id = value
    reason, domain, info, violations = status_details(error)
    cls = _BY_CODE.get(code, ConvergentError)
    return cls(details, code=code, request_id=request_id, reason=reason, domain=domain, metadata=info,
               field_violations=violations)
