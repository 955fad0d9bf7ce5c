"""Domain errors of the convergent server.

Pure modules (``align``, ``inference``, ``registry``, ``storage``) raise these; the one
table in :mod:`convergent.server.rpc.errors` maps each class to a gRPC status. Messages are
meant for the caller: they say what was wrong and never contain internals, in words that do
not assume the caller's language (``set overwrite to true``, not ``overwrite=True``).

Every error also carries what a program branches on: a stable machine-readable ``reason``
(a key of :data:`REASONS`; each class has a default for raise sites with nothing more
specific), the request ``field`` that was wrong where one was (``"vectors"``, ``"params.k"``,
``"model"``), and string ``metadata`` (which limit, its value, which parameter). The server
sends them as a ``google.rpc.Status`` with ``ErrorInfo`` (and ``BadRequest`` for invalid
arguments) in the ``grpc-status-details-bin`` trailer; docs/api.md "Errors" lists the reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

#: ErrorInfo.domain of every error the server sends.
DOMAIN = "convergent.v1"

#: The one catalogue of reasons: reason -> "STATUS: what it means". A test checks that every
#: reason the server uses is here, that every one here is used, and that docs/api.md lists all.
REASONS: dict[str, str] = {
    # --- INVALID_ARGUMENT: the request itself is wrong; sending it again fails again
    "INVALID_INPUT": "INVALID_ARGUMENT: the request is malformed in a way no more specific reason names",
    "INVALID_NAME": "INVALID_ARGUMENT: a model, anchor set, gallery or fit name breaks the naming rule",
    "INVALID_ID": "INVALID_ARGUMENT: an anchor or item id is empty, too long or not a string",
    "DUPLICATE_ID": "INVALID_ARGUMENT: an id appears twice in one request or stream",
    "MALFORMED_MATRIX": "INVALID_ARGUMENT: a Matrix's dtype, shape or byte count does not decode",
    "NON_FINITE_VALUE": "INVALID_ARGUMENT: a vector or score holds NaN or Inf (or overflows float32)",
    "ZERO_VECTOR": "INVALID_ARGUMENT: a vector of a normalising model has zero norm",
    "DIMENSION_MISMATCH": "INVALID_ARGUMENT: vectors have another dimension than the model or map expects",
    "LENGTH_MISMATCH": "INVALID_ARGUMENT: lists that must pair up (ids and rows, a and b, parties) differ in length",
    "EMPTY_INPUT": "INVALID_ARGUMENT: a required list (rows, ids, parties) is empty or a required field is not set",
    "VALUE_OUT_OF_RANGE": "INVALID_ARGUMENT: a request field (k, far, fpir, dim, page_size) is outside its range",
    "UNKNOWN_OPTION": "INVALID_ARGUMENT: a choice (direction, scoring, index kind, role) is not one the server knows",
    "UNKNOWN_METHOD": "INVALID_ARGUMENT: the fit method is not one the server offers",
    "UNKNOWN_PARAMETER": "INVALID_ARGUMENT: params holds a key the method does not take",
    "PARAMETER_WRONG_TYPE": "INVALID_ARGUMENT: a parameter has the wrong type (a string for a number, ...)",
    "PARAMETER_OUT_OF_RANGE": "INVALID_ARGUMENT: a parameter is outside its range or not one of its allowed values",
    "CONFLICTING_PARAMETERS": "INVALID_ARGUMENT: two parameters that exclude each other are both set",
    "MODELS_NOT_DISTINCT": "INVALID_ARGUMENT: different models are needed (source = target, a model named twice, one model)",
    "WRONG_FIT": "INVALID_ARGUMENT: the fit named does not map this route or is not of the kind the call needs",
    "INVALID_PAGE_TOKEN": "INVALID_ARGUMENT: page_token is not one this server issued",
    "EMPTY_STREAM": "INVALID_ARGUMENT: a client stream sent no message",
    "STREAM_CUT_SHORT": "INVALID_ARGUMENT: a client stream ended without its message marked last",
    "MESSAGE_AFTER_LAST": "INVALID_ARGUMENT: a client stream sent a message after the one marked last",
    "STREAM_HEADER_CHANGED": "INVALID_ARGUMENT: a later stream message names another model, set or gallery than the first",
    # --- NOT_FOUND: the named object does not exist (or is another tenant's)
    "NOT_FOUND": "NOT_FOUND: a named object does not exist",
    "MODEL_NOT_FOUND": "NOT_FOUND: no model of that name",
    "ANCHOR_SET_NOT_FOUND": "NOT_FOUND: no anchor set of that name (for that model)",
    "FIT_NOT_FOUND": "NOT_FOUND: no fit with that id",
    "GALLERY_NOT_FOUND": "NOT_FOUND: no gallery of that name",
    # --- ALREADY_EXISTS
    "ALREADY_EXISTS": "ALREADY_EXISTS: the object to create exists already",
    "NAME_TAKEN": "ALREADY_EXISTS: a model (or key) of that name exists already",
    "ID_TAKEN": "ALREADY_EXISTS: an id is enrolled already (or sent twice in one enroll stream)",
    "VECTOR_DIFFERS": "ALREADY_EXISTS: an anchor is stored with another vector; set overwrite to true to replace it",
    # --- FAILED_PRECONDITION: the request is fine, the stored state does not allow it yet
    "FAILED_PRECONDITION": "FAILED_PRECONDITION: the system is not in a state to serve the call",
    "NOT_FITTED": "FAILED_PRECONDITION: an estimator was used before it was fitted",
    "SPACE_MISMATCH": "FAILED_PRECONDITION: vectors or a stored object belong to another model space",
    "STALE_MODEL_VERSION": "FAILED_PRECONDITION: vectors name a model version that is not the registered one",
    "STALE_FIT": "FAILED_PRECONDITION: the fit was computed for an older version of a model; fit again",
    "STALE_GALLERY": "FAILED_PRECONDITION: the gallery was enrolled with an older version of its model",
    "NO_ROUTE": "FAILED_PRECONDITION: no fit or shared space maps the requested direction",
    "TOO_FEW_ANCHORS": "FAILED_PRECONDITION: too few anchors embedded by the models involved",
    "GALLERY_MODEL_MISMATCH": "FAILED_PRECONDITION: the gallery holds vectors of another model",
    "UNRESOLVABLE_RATE": "FAILED_PRECONDITION: too few impostor pairs or searches to resolve the FAR / FPIR asked for",
    "CALIBRATION_UNAVAILABLE": "FAILED_PRECONDITION: nothing to calibrate a threshold on; send labelled pairs or non-mated probes",
    # --- RESOURCE_EXHAUSTED: a limit of the server (metadata: limit, value)
    "RESOURCE_EXHAUSTED": "RESOURCE_EXHAUSTED: a limit of the server would be exceeded",
    "QUOTA_EXCEEDED": "RESOURCE_EXHAUSTED: the tenant's vector quota (max_vectors_per_tenant) would be exceeded",
    "TOO_MANY_VECTORS": "RESOURCE_EXHAUSTED: a message holds more vectors than max_vectors_per_message",
    "DIMENSION_TOO_LARGE": "RESOURCE_EXHAUSTED: a model dimension over max_dim",
    "FIT_TOO_LARGE": "RESOURCE_EXHAUSTED: a fit's estimated memory is over max_fit_bytes",
    "TOO_MANY_STREAMS": "RESOURCE_EXHAUSTED: too many streaming calls open (max_streams, max_streams_per_client)",
    "STORAGE_FULL": "RESOURCE_EXHAUSTED: the server's storage is full; nothing of the call was stored",
    # --- DATA_LOSS
    "DATA_DAMAGED": "DATA_LOSS: stored data failed a check (checksum, count, unreadable page); it is not served",
    # --- UNAVAILABLE: retry later
    "UNAVAILABLE": "UNAVAILABLE: the server cannot serve this right now; retry later",
    "SERVER_NOT_READY": "UNAVAILABLE: the server is starting or stopping; storage is not open",
    "INDEX_UNAVAILABLE": "UNAVAILABLE: the gallery index service (Milvus) does not answer",
    # --- UNAUTHENTICATED / PERMISSION_DENIED
    "UNAUTHENTICATED": "UNAUTHENTICATED: the caller is not authenticated",
    "MISSING_API_KEY": "UNAUTHENTICATED: no API key was sent",
    "INVALID_API_KEY": "UNAUTHENTICATED: the API key is malformed, unknown or revoked",
    "PERMISSION_DENIED": "PERMISSION_DENIED: the key's role may not make this call",
    # --- CANCELLED / DEADLINE_EXCEEDED / INTERNAL
    "CANCELLED": "CANCELLED: the caller went away before the commit; nothing was stored",
    "STREAM_IDLE_TIMEOUT": "DEADLINE_EXCEEDED: a client stream sent no message for stream_idle_seconds; nothing was stored",
    "INTERNAL": "INTERNAL: a bug; the message and metadata name the request id the server log has the details under",
}


def reason_status(reason: str) -> str:
    """The gRPC status name a reason goes with (``"INVALID_ARGUMENT"`` ...)."""
    return REASONS[reason].split(":", 1)[0]


class ConvergentError(Exception):
    """Base class of every error the server reports to a caller on purpose.

    ``reason``: a key of :data:`REASONS` (the class's ``default_reason`` when not given);
    ``field``: the request field that was wrong, if one was; ``metadata``: string details
    (which limit and its value, which parameter)."""

    default_reason: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str = "", *, reason: str | None = None, field: str | None = None,
                 metadata: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason
        self.field = field
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}


class InvalidInput(ConvergentError, ValueError):
    """The request itself is malformed: shape, dtype, NaN/Inf, empty, bad name, bad k, bad params."""

    default_reason = "INVALID_INPUT"


class NotFound(ConvergentError, LookupError):
    """A named object (model, anchor set, fit, gallery) does not exist for this tenant."""

    default_reason = "NOT_FOUND"


class AlreadyExists(ConvergentError):
    """Creating an object whose name or id is taken, or re-writing a stored value without overwrite."""

    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ConvergentError):
    """The request is well-formed but the system is not in a state to serve it."""

    default_reason = "FAILED_PRECONDITION"


class NotFitted(FailedPrecondition):
    """No map exists for the requested route, or an estimator was used before ``fit``."""

    default_reason = "NOT_FITTED"


class SpaceMismatch(FailedPrecondition):
    """A vector claims a model, version or dimension that does not match what is stored."""

    default_reason = "SPACE_MISMATCH"


class ResourceExhausted(ConvergentError):
    """A limit (message size, vectors per request, dimension, quota) would be exceeded."""

    default_reason = "RESOURCE_EXHAUSTED"


class DataLoss(ConvergentError):
    """Stored data failed a check (a block's checksum, a count against its records, a page the
    database cannot read): the named object is damaged and is not served."""

    default_reason = "DATA_DAMAGED"


class Unavailable(ConvergentError):
    """The server cannot serve right now (storage not open yet, shutting down); retry later."""

    default_reason = "UNAVAILABLE"


class Unauthenticated(ConvergentError):
    """No API key, or one that is unknown, malformed or revoked."""

    default_reason = "UNAUTHENTICATED"


class PermissionDenied(ConvergentError):
    """A valid key whose role may not make this call."""

    default_reason = "PERMISSION_DENIED"


class StartupError(Exception):
    """The server cannot start (port in use, data folder not writable); never sent to a caller."""


class Cancelled(ConvergentError):
    """The caller went away (cancelled the call or its deadline passed) before the commit."""

    default_reason = "CANCELLED"
