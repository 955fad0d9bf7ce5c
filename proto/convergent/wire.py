"""Wire conventions shared by the client and the server (numpy + protobuf only).

* Matrices travel as :class:`convergent.v1.types_pb2.Matrix`: little-endian bytes, a
  ``[rows, cols]`` shape and a dtype; decoding is one ``np.frombuffer``, no Python loop.
* Names of models, anchor sets, galleries and tenants follow :data:`NAME_PATTERN`;
  ``:`` is reserved for qualified names such as ``shared:<fit id>``.
* Uploads are chunked by bytes so that no message exceeds the receiver's limit.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from convergent.v1 import types_pb2

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_NAME_LENGTH = 128
REQUEST_ID_KEY = "x-request-id"

# The map methods FitAlignment accepts (the server's parameter table covers exactly these).
FIT_METHODS: dict[str, str] = {
    "auto": "held-out choice among permutation, procrustes, scaled procrustes, ridge (and mlp from 2,000 anchors)",
    "ridge": "affine least squares with a GCV-chosen penalty",
    "procrustes": "orthogonal rotation (optionally scaled) + offset",
    "cca": "canonical correlation subspace",
    "permutation": "one-to-one unit matching (Hungarian)",
    "semi_matching": "each unit to its best-correlated unit (may repeat)",
    "sparse": "one-to-many L1 (Lasso) prediction of units",
    "spectral": "many-to-many groups of units (spectral clustering)",
    "mlp": "ridge plus a small residual MLP trained on the anchors (torch)",
}

_DTYPES: dict[int, np.dtype] = {
    types_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    types_pb2.DTYPE_FLOAT64: np.dtype("<f8"),
    types_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
}
_ARRAY_DTYPES: dict[int, np.dtype] = {**_DTYPES, types_pb2.DTYPE_INT64: np.dtype("<i8")}


class WireError(ValueError):
    """A message does not follow the wire conventions (the server answers INVALID_ARGUMENT).

    ``reason`` and ``field`` are what the server's error details carry (docs/api.md "Errors"):
    ``MALFORMED_MATRIX`` unless said otherwise, and the request field at fault if known."""

    def __init__(self, message: str, *, reason: str = "MALFORMED_MATRIX", field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it matches ``[A-Za-z0-9._-]{1,128}``, else raise :class:`WireError`."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        shown = name if isinstance(name, str) and len(name) <= 40 else f"{str(name)[:40]}..."
        raise WireError(
            f"invalid {what} {shown!r}: use 1-{MAX_NAME_LENGTH} characters of A-Z a-z 0-9 . _ -",
            reason="INVALID_NAME", field=what.removesuffix(" name").removesuffix(" model").replace(" ", "_"),
        )
    return name


def encode_matrix(array: np.ndarray) -> types_pb2.Matrix:
    """Encode a 2-D float array as a float32 :class:`Matrix` (any float or int dtype is cast)."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise WireError(f"expected a 2-D array (rows, dim), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise WireError(f"expected a numeric array, got dtype {array.dtype}")
    data = np.ascontiguousarray(array, dtype="<f4")
    return types_pb2.Matrix(
        data=data.tobytes(), shape=list(data.shape), dtype=types_pb2.DTYPE_FLOAT32
    )


def decode_matrix(message: types_pb2.Matrix, *, what: str = "vectors") -> np.ndarray:
    """Decode a :class:`Matrix` into a read-only ``(rows, cols)`` array of its own dtype.

    Raises :class:`WireError` for an unknown dtype, a shape that is not 2-D, or a byte
    count that does not equal rows * cols * itemsize (ragged or truncated data).
    Finiteness is not checked here; callers that need it use :func:`check_finite`.
    """
    dtype = _DTYPES.get(message.dtype)
    if dtype is None:
        raise WireError(
            f"{what}: unsupported dtype {message.dtype} (send DTYPE_FLOAT32, FLOAT64 or FLOAT16)", field=what
        )
    shape = tuple(int(s) for s in message.shape)
    if len(shape) != 2:
        raise WireError(f"{what}: shape must be [rows, cols], got {list(shape)}", field=what)
    rows, cols = shape
    expected = rows * cols * dtype.itemsize
    if len(message.data) != expected:
        raise WireError(
            f"{what}: {len(message.data)} bytes do not hold shape {list(shape)} of "
            f"{dtype.name} ({expected} bytes expected)", field=what
        )
    return np.frombuffer(message.data, dtype=dtype).reshape(rows, cols)


def encode_array(array: np.ndarray) -> types_pb2.Matrix:
    """Encode an array of any rank for export (the contract of ExportFit): every float array as
    float64 (no precision lost, whatever the fit computed in), integers and booleans as int64."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        dtype, code = "<i8", types_pb2.DTYPE_INT64
    elif np.issubdtype(array.dtype, np.floating):
        dtype, code = "<f8", types_pb2.DTYPE_FLOAT64
    else:
        raise WireError(f"cannot encode an array of dtype {array.dtype}")
    data = np.ascontiguousarray(array, dtype=dtype)
    return types_pb2.Matrix(data=data.tobytes(), shape=list(data.shape), dtype=code)


def decode_array(message: types_pb2.Matrix) -> np.ndarray:
    """Decode an exported array of any rank (inverse of :func:`encode_array`)."""
    dtype = _ARRAY_DTYPES.get(message.dtype)
    if dtype is None:
        raise WireError(f"unsupported dtype {message.dtype}")
    shape = tuple(int(s) for s in message.shape)
    if len(message.data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise WireError(f"{len(message.data)} bytes do not hold shape {list(shape)} of {dtype.name}")
    return np.frombuffer(message.data, dtype=dtype).reshape(shape)


def check_finite(array: np.ndarray, what: str = "vectors", first_row: int = 0) -> None:
    """Raise :class:`WireError` naming the first row (counted from ``first_row``) with NaN or Inf."""
    finite = np.isfinite(array)
    if not finite.all():
        bad_row = first_row + int(np.flatnonzero(~finite.all(axis=1))[0])
        raise WireError(f"{what}: row {bad_row} contains NaN or Inf", reason="NON_FINITE_VALUE", field=what)


def rows_per_chunk(dim: int, requested: int, max_message_bytes: int, ids: Sequence[str] = ()) -> int:
    """How many rows of ``dim`` float32 values (plus their ids) fit one message.

    Keeps each message under half of ``max_message_bytes`` (room for protobuf framing
    and the other fields), and never more than ``requested`` rows.
    """
    if requested <= 0:
        raise ValueError("chunk_size must be positive")
    id_bytes = max((len(i.encode()) for i in ids), default=16) + 4
    per_row = dim * 4 + id_bytes
    return max(1, min(requested, (max_message_bytes // 2) // per_row))
