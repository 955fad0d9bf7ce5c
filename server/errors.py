"""Domain errors of the convergent server.

Pure modules (``align``, ``inference``, ``registry``, ``storage``) raise these; the one
table in :mod:`convergent.server.rpc.errors` maps each class to a gRPC status. Messages are
meant for the caller: they say what was wrong and never contain internals.
"""

from __future__ import annotations


class ConvergentError(Exception):
    """Base class of every error the server reports to a caller on purpose."""


class InvalidInput(ConvergentError, ValueError):
    """The request itself is malformed: shape, dtype, NaN/Inf, empty, bad name, bad k, bad params."""


class NotFound(ConvergentError, LookupError):
    """A named object (model, anchor set, fit, gallery) does not exist for this tenant."""


class AlreadyExists(ConvergentError):
    """Creating an object whose name or id is taken, or re-writing a stored value without overwrite."""


class FailedPrecondition(ConvergentError):
    """The request is well-formed but the system is not in a state to serve it."""


class NotFitted(FailedPrecondition):
    """No map exists for the requested route, or an estimator was used before ``fit``."""


class SpaceMismatch(FailedPrecondition):
    """A vector claims a model, version or dimension that does not match what is stored."""


class ResourceExhausted(ConvergentError):
    """A limit (message size, vectors per request, dimension, quota) would be exceeded."""


class DataLoss(ConvergentError):
    """Stored data failed a check (a block's checksum, a count against its records, a page the
    database cannot read): the named object is damaged and is not served."""


class Unavailable(ConvergentError):
    """The server cannot serve right now (storage not open yet, shutting down); retry later."""


class Unauthenticated(ConvergentError):
    """No API key, or one that is unknown, malformed or revoked."""


class PermissionDenied(ConvergentError):
    """A valid key whose role may not make this call."""


class StartupError(Exception):
    """The server cannot start (port in use, data folder not writable); never sent to a caller."""


class Cancelled(ConvergentError):
    """The caller went away (cancelled the call or its deadline passed) before the commit."""
