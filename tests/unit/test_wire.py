"""The wire codec: matrices round-trip exactly, malformed payloads are refused precisely."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convergent.v1 import types_pb2
from convergent.wire import (
    WireError,
    check_finite,
    check_name,
    decode_matrix,
    encode_matrix,
    rows_per_chunk,
)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
@pytest.mark.parametrize("shape", [(0, 8), (1, 1), (3, 7), (257, 128)])
def test_encode_decode_round_trip(dtype, shape):
    array = (np.arange(np.prod(shape)).reshape(shape) / 7).astype(dtype)
    message = encode_matrix(array)
    assert message.dtype == types_pb2.DTYPE_FLOAT32
    assert list(message.shape) == list(shape)
    decoded = decode_matrix(message)
    assert decoded.dtype == np.float32 and decoded.shape == shape
    np.testing.assert_array_equal(decoded, array.astype(np.float32))


@pytest.mark.parametrize(
    ("dtype", "numpy_dtype"),
    [(types_pb2.DTYPE_FLOAT64, "<f8"), (types_pb2.DTYPE_FLOAT16, "<f2"), (types_pb2.DTYPE_FLOAT32, "<f4")],
)
def test_decode_other_float_dtypes(dtype, numpy_dtype):
    array = np.linspace(-1, 1, 12, dtype=numpy_dtype).reshape(3, 4)
    message = types_pb2.Matrix(data=array.tobytes(), shape=[3, 4], dtype=dtype)
    np.testing.assert_array_equal(decode_matrix(message), array)


def test_non_contiguous_and_big_endian_input_is_encoded_little_endian():
    array = np.arange(24, dtype=">f8").reshape(4, 6)[:, ::2]
    decoded = decode_matrix(encode_matrix(array))
    np.testing.assert_array_equal(decoded, array.astype(np.float32))


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        (types_pb2.Matrix(data=b"\0" * 12, shape=[3]), "unsupported dtype"),
        (types_pb2.Matrix(data=b"\0" * 12, shape=[3], dtype=types_pb2.DTYPE_FLOAT32), "shape must be"),
        (types_pb2.Matrix(data=b"\0" * 12, shape=[1, 2, 2], dtype=types_pb2.DTYPE_FLOAT32), "shape must be"),
        (types_pb2.Matrix(data=b"\0" * 13, shape=[1, 3], dtype=types_pb2.DTYPE_FLOAT32), "13 bytes"),
        (types_pb2.Matrix(data=b"\0" * 8, shape=[1, 3], dtype=types_pb2.DTYPE_FLOAT32), "8 bytes"),
        (types_pb2.Matrix(data=b"", shape=[2, 2], dtype=99), "unsupported dtype"),
    ],
)
def test_decode_rejects_malformed(message, fragment):
    with pytest.raises(WireError, match=fragment):
        decode_matrix(message)


def test_encode_rejects_non_matrix():
    with pytest.raises(WireError, match="2-D"):
        encode_matrix(np.zeros(3))
    with pytest.raises(WireError, match="numeric"):
        encode_matrix(np.array([["a"]]))


def test_check_finite_names_the_row():
    array = np.ones((5, 3), dtype=np.float32)
    array[3, 1] = np.inf
    with pytest.raises(WireError, match="row 3"):
        check_finite(array)
    check_finite(np.ones((2, 2)))


@pytest.mark.parametrize("name", ["a", "facenet", "model-v2.1_x", "A" * 128])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "a:b", "a b", "é", "x" * 129, "a/b", "shared:1"])
def test_invalid_names(name):
    with pytest.raises(WireError, match="invalid"):
        check_name(name)


def test_rows_per_chunk_respects_message_limit():
    ids = [f"id-{i}" for i in range(10)]
    assert rows_per_chunk(512, 512, 64 * 2**20, ids) == 512
    rows = rows_per_chunk(4096, 100000, 4 * 2**20, ids)
    assert rows * (4096 * 4) <= 2 * 2**20 and rows >= 1
    assert rows_per_chunk(10**7, 10, 2**20) == 1
    with pytest.raises(ValueError):
        rows_per_chunk(8, 0, 2**20)


@settings(derandomize=True, deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=64),
    shape=st.lists(st.integers(min_value=0, max_value=2**40), max_size=3),
    dtype=st.integers(min_value=0, max_value=5),
)
def test_decode_never_crashes_on_arbitrary_messages(data, shape, dtype):
    """Arbitrary payloads decode to a matching array or raise WireError, nothing else."""
    message = types_pb2.Matrix(data=data, shape=shape, dtype=dtype)
    try:
        array = decode_matrix(message)
    except WireError:
        return
    assert array.ndim == 2 and array.nbytes == len(data)
