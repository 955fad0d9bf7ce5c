"""The one table from domain errors to gRPC status codes, and the status details every error
carries (applied by :class:`convergent.server.rpc.interceptors.Statuses`; the stream limits of
:mod:`convergent.server.rpc.streams` use :func:`abort` too). Anything not in the table is INTERNAL.

Every failed call ends with a ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer:
an ``ErrorInfo`` (``reason`` from :data:`convergent.server.errors.REASONS`, domain
``convergent.v1``, string metadata) and, for INVALID_ARGUMENT with a known field, a
``BadRequest`` naming it. The trailing metadata set before (``x-request-id``) is kept.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from convergent.server import errors
from convergent.server.errors import DOMAIN
from convergent.server.logs import request_id_var
from convergent.server.rpc.faults import domain_error
from convergent.wire import WireError

DETAILS_KEY = "grpc-status-details-bin"

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


@dataclasses.dataclass(frozen=True)
class Failure:
    """What a failed call answers: status code, message, and the details' reason, field, metadata."""

    code: grpc.StatusCode
    message: str
    reason: str
    field: str | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status a raised exception is reported with (INTERNAL when not in the table).
    Faults of the storage under the server (disk full, a damaged file) are read as the domain
    errors they mean first (:func:`convergent.server.rpc.faults.domain_error`)."""
    exc = domain_error(exc)
    for error_class, code in STATUS_TABLE:
        if isinstance(exc, error_class):
            return code
    return grpc.StatusCode.INTERNAL


def failure_for(exc: BaseException) -> Failure:
    """The answer to a call that raised ``exc`` (a storage fault read as the error it means).
    INTERNAL: a message that names only the request id (reason INTERNAL, metadata request_id)."""
    fault = domain_error(exc)
    code = status_for(fault)
    if code is grpc.StatusCode.INTERNAL:
        request_id = request_id_var.get()
        return Failure(code, f"internal error; the server log has the details under request id {request_id}",
                       reason="INTERNAL", metadata={"request_id": request_id})
    if not isinstance(fault, (errors.ConvergentError, WireError)):  # the table holds only these two families
        raise TypeError(f"{type(fault).__name__} is in STATUS_TABLE but carries no reason")
    metadata = fault.metadata if isinstance(fault, errors.ConvergentError) else {}
    return Failure(code, str(fault), fault.reason, fault.field, dict(metadata))


def status_message(failure: Failure) -> status_pb2.Status:
    """``failure`` as a ``google.rpc.Status``: ErrorInfo always, BadRequest for an invalid field."""
    metadata = dict(failure.metadata)
    if failure.field:
        metadata.setdefault("field", failure.field)
    status = status_pb2.Status(code=failure.code.value[0], message=failure.message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=failure.reason, domain=DOMAIN, metadata=metadata))
    if failure.code is grpc.StatusCode.INVALID_ARGUMENT and failure.field:
        violation = error_details_pb2.BadRequest.FieldViolation(field=failure.field, description=failure.message,
                                                                reason=failure.reason)
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return status


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    pass


def grpc_status(failure: Failure, trailing_metadata: Sequence[tuple[str, Any]] = ()) -> grpc.Status:
    """The ``grpc.Status`` to abort with: ``failure``'s code and message, the details in
    ``grpc-status-details-bin`` after ``trailing_metadata`` (any older details dropped)."""
    status = rpc_status.to_status(status_message(failure))
    kept = tuple((key, value) for key, value in trailing_metadata if key != DETAILS_KEY)
    return _Status(status.code, status.details, (*kept, *status.trailing_metadata))


def abort(context: grpc.ServicerContext, failure: Failure) -> NoReturn:
    """End the call with ``failure`` and its details, keeping the trailing metadata set so far
    (the ``x-request-id`` of :class:`convergent.server.rpc.interceptors.RequestIds`)."""
    current = getattr(context, "trailing_metadata", None)
    kept = tuple(current() or ()) if callable(current) else ()
    context.abort_with_status(grpc_status(failure, kept))
    raise AssertionError("abort_with_status raises")  # pragma: no cover
