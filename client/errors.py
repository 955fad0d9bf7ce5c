"""Errors raised by the SDK: one class per gRPC status, all under :class:`ConvergentError`."""

from __future__ import annotations

import grpc

from convergent.wire import REQUEST_ID_KEY


class ConvergentError(Exception):
    """An RPC failed. ``code`` is the ``grpc.StatusCode``, ``details`` the server's message,
    ``request_id`` the id the server logged the call under ("" if unknown)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, code: grpc.StatusCode | None = None, request_id: str = "") -> None:
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        suffix = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.code.name}: {self.details}{suffix}"


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


def from_rpc_error(error: grpc.RpcError) -> ConvergentError:
    """The SDK exception for a failed call (subclass chosen by status code)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(code)
    request_id = ""
    metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY:
            request_id = value
    cls = _BY_CODE.get(code, ConvergentError)
    return cls(details, code=code, request_id=request_id)
