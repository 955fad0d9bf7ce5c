"""The one table from domain errors to gRPC status codes, and the decorator that applies it.

Every servicer method is wrapped by :func:`rpc_method`: it gives the call a request id
(the client's ``x-request-id`` metadata or a new one), returns it in the trailing
metadata, logs the outcome, and turns raised errors into statuses. Anything not in the
table is INTERNAL with a message that names only the request id; the traceback is logged.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from convergent.server import errors
from convergent.server.logs import request_id_var
from convergent.server.rpc.auth import AUDITED, METHOD_ROLES, principal_var
from convergent.wire import REQUEST_ID_KEY, WireError

log = logging.getLogger("convergent.rpc")

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
)


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status a raised exception is reported with (INTERNAL when not in the table)."""
    for error_class, code in STATUS_TABLE:
        if isinstance(exc, error_class):
            return code
    return grpc.StatusCode.INTERNAL


def _request_id(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex[:16]


def _target(request: Any) -> str:
    """What an audited call acted on, for the audit log (streams: "-")."""
    parts = []
    for field in ("gallery", "name", "id", "model", "a_model", "b_model", "anchor_set"):
        value = getattr(request, field, "")
        if isinstance(value, str) and value:
            parts.append(f"{field}={value}")
    ids = getattr(request, "ids", None)
    if ids is not None and not isinstance(ids, str) and len(ids):
        parts.append(f"ids={len(ids)}")
    return " ".join(parts) or "-"


def rpc_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a servicer method (unary or client-streaming request): request id, authentication
    and role check (:mod:`convergent.server.rpc.auth`), audit, logs, and the status table."""
    name = method.__name__
    if name not in METHOD_ROLES:
        raise KeyError(f"{name} has no entry in auth.METHOD_ROLES: declare the least role that may call it")

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        request_id = _request_id(context)
        token = request_id_var.set(request_id)
        principal_token = None
        principal = None
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            principal = self.backend.authenticate(context.invocation_metadata())
            principal_token = principal_var.set(principal)
            self.backend.authorize(principal, name)
            response = method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error is mapped, none escapes raw
            code = status_for(exc)
            elapsed_ms = (time.perf_counter() - started) * 1e3
            if code is grpc.StatusCode.INTERNAL:
                if isinstance(exc, grpc.RpcError) or context.code() is not None:
                    code = grpc.StatusCode.CANCELLED
                    raise  # already aborted (context.abort) or a cancelled stream
                log.exception("%s failed after %.1f ms", name, elapsed_ms)
                message = f"internal error; the server log has the details under request id {request_id}"
            else:
                log.info("%s -> %s after %.1f ms: %s", name, code.name, elapsed_ms, exc)
                message = str(exc)
            context.abort(code, message)
        else:
            log.info("%s -> OK after %.1f ms", name, (time.perf_counter() - started) * 1e3)
            return response
        finally:
            if self.backend.metrics is not None:
                self.backend.metrics.observe_call(name, code.name, time.perf_counter() - started)
            if principal is not None and name in AUDITED:
                self.backend.audit(principal, name, _target(request), code.name, request_id)
            if principal_token is not None:
                principal_var.reset(principal_token)
            request_id_var.reset(token)

    return wrapper
