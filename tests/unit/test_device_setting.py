"""The device setting on a machine without CUDA: cpu works, cuda is refused clearly."""

from __future__ import annotations

import pytest

from convergent.server.align import resolve_device
from convergent.server.errors import InvalidInput


def test_device_resolution_without_a_gpu():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device (tests/unit/gpu covers it)")
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == "cpu"
    with pytest.raises(InvalidInput, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(InvalidInput, match="device must be one of"):
        resolve_device("tpu")
