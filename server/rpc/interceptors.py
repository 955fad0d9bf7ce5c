"""Transport concerns as gRPC server interceptors, outermost first (:func:`interceptors`):

1. :class:`RequestIds`: the call's request id (the client's ``x-request-id`` or a new one) in
   the logs and the trailing metadata;
2. :class:`CallMetrics`: count and time every call by method and status;
3. :class:`Statuses`: raised errors become statuses by the one table
   (:data:`convergent.server.rpc.errors.STATUS_TABLE`), each with a ``google.rpc.Status`` in the
   ``grpc-status-details-bin`` trailer (ErrorInfo reason / metadata, BadRequest for an invalid
   field; :func:`convergent.server.rpc.errors.failure_for`); anything else is INTERNAL with a
   message that names only the request id, the traceback logged;
4. :class:`Authentication`: the caller's API key -> :class:`Principal`, its role checked
   against :data:`METHOD_ROLES`, the audited calls queued for the audit log. The servicer gets
   a :class:`CallContext`: the gRPC context plus ``principal`` and ``tenant``.

Only convergent's own services pass through them (health and reflection do not).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from convergent.server.logs import request_id_var
from convergent.server.rpc.auth import AUDITED, METHOD_ROLES, Principal
from convergent.server.rpc.errors import abort, failure_for, status_for
from convergent.server.rpc.faults import domain_error
from convergent.wire import REQUEST_ID_KEY

if TYPE_CHECKING:
    from convergent.server.metrics import Metrics
    from convergent.server.rpc.servicers import Backend

log = logging.getLogger("convergent.rpc")
OWN_SERVICES = "/convergent.v1."

Behaviour = Callable[[Any, Any], Any]


class CallContext:
    """What a servicer method gets as ``context``: the gRPC context (every attribute of it) and
    the authenticated caller."""

    def __init__(self, context: grpc.ServicerContext, principal: Principal) -> None:
        self._context = context
        self.principal = principal

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _Wrap(grpc.ServerInterceptor):
    """Applies :meth:`around` to the behaviour of every unary or client-streaming method of
    convergent's services."""

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        path = handler_call_details.method
        if handler is None or not path.startswith(OWN_SERVICES):
            return handler
        name = path.rsplit("/", 1)[-1]
        for kind in ("unary_unary", "stream_unary"):
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                return handler._replace(**{kind: self._bind(name, behaviour)})
        return handler  # no server-streaming methods in this API

    def _bind(self, name: str, behaviour: Behaviour) -> Behaviour:
        def wrapped(request: Any, context: Any) -> Any:
            return self.around(name, behaviour, request, context)

        return wrapped

    def around(self, name: str, behaviour: Behaviour, request: Any, context: Any) -> Any:  # pragma: no cover
        raise NotImplementedError


class RequestIds(_Wrap):
    def around(self, name: str, behaviour: Behaviour, request: Any, context: Any) -> Any:
        request_id = _request_id(context.invocation_metadata())
        token = request_id_var.set(request_id)
        try:
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            return behaviour(request, context)
        finally:
            request_id_var.reset(token)


class CallMetrics(_Wrap):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def around(self, name: str, behaviour: Behaviour, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        code = "OK"
        try:
            return behaviour(request, context)
        except BaseException:
            set_code = context.code()
            code = set_code.name if isinstance(set_code, grpc.StatusCode) else "UNKNOWN"
            raise
        finally:
            self.metrics.observe_call(name, code, time.perf_counter() - started)


class Statuses(_Wrap):
    def around(self, name: str, behaviour: Behaviour, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        try:
            response = behaviour(request, context)
        except Exception as exc:  # noqa: BLE001 - every error is mapped, none escapes raw
            fault = domain_error(exc)  # a full disk or a damaged file: the error it means
            code = status_for(fault)
            elapsed_ms = (time.perf_counter() - started) * 1e3
            if code is grpc.StatusCode.INTERNAL:
                if isinstance(exc, grpc.RpcError) or context.code() is not None:
                    raise  # already aborted (context.abort) or a cancelled stream
                log.exception("%s failed after %.1f ms", name, elapsed_ms)
            elif fault is not exc:
                log.error("%s -> %s after %.1f ms: storage fault: %s", name, code.name, elapsed_ms, exc)
            else:
                log.info("%s -> %s after %.1f ms: %s", name, code.name, elapsed_ms, exc)
            abort(context, failure_for(fault))
        log.info("%s -> OK after %.1f ms", name, (time.perf_counter() - started) * 1e3)
        return response


class Authentication(_Wrap):
    def __init__(self, backend: Backend, method_names: Iterable[str]) -> None:
        missing = sorted(set(method_names) - set(METHOD_ROLES))
        if missing:
            raise KeyError(f"{missing} have no entry in auth.METHOD_ROLES: declare the least role that may call each")
        self.backend = backend

    def around(self, name: str, behaviour: Behaviour, request: Any, context: Any) -> Any:
        principal = self.backend.authenticate(context.invocation_metadata())
        outcome = "OK"
        try:
            self.backend.authorize(principal, name)
            return behaviour(request, CallContext(context, principal))
        except BaseException as exc:
            outcome = status_for(exc).name if isinstance(exc, Exception) else "CANCELLED"
            if outcome == "INTERNAL" and (isinstance(exc, grpc.RpcError) or context.code() is not None):
                outcome = "CANCELLED"
            raise
        finally:
            if name in AUDITED:
                self.backend.audit(principal, name, _target(request), outcome, request_id_var.get())


def interceptors(backend: Backend, metrics: Metrics, method_names: Iterable[str]) -> list[grpc.ServerInterceptor]:
    """The server's interceptors, outermost first."""
    return [RequestIds(), CallMetrics(metrics), Statuses(), Authentication(backend, method_names)]


def _request_id(metadata: Any) -> str:
    for key, value in metadata or ():
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
