"""The one table from domain errors to gRPC status codes (applied by
:class:`convergent.server.rpc.interceptors.Statuses`). Anything not in the table is INTERNAL."""

from __future__ import annotations

import grpc

from convergent.server import errors
from convergent.server.rpc.faults import domain_error
from convergent.wire import WireError

# Most specific first: the first matching class wins.
STATUS_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (WireError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),  # NotFitted, SpaceMismatch
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Cancelled, grpc.StatusCode.CANCELLED),
    (errors.DataLoss, grpc.StatusCode.DATA_LOSS),
)


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status a raised exception is reported with (INTERNAL when not in the table).
    Faults of the storage under the server (disk full, a damaged file) are read as the domain
    errors they mean first (:func:`convergent.server.rpc.faults.domain_error`)."""
    exc = domain_error(exc)
    for error_class, code in STATUS_TABLE:
        if isinstance(exc, error_class):
            return code
    return grpc.StatusCode.INTERNAL
