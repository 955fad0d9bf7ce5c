"""The CUDA paths agree with the CPU ones (skipped without a CUDA device; run on a lent GPU with
``pytest --noconftest tests/unit/gpu``)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_statistics_on_cuda_equal_cpu():
    from convergent.server.align import PairedStats, RidgeMap

    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((20_000, 256)), rng.standard_normal((20_000, 128))
    cpu, gpu = PairedStats.empty(256, 128), PairedStats.empty(256, 128)
    for start in range(0, 20_000, 4096):
        cpu.update(X[start : start + 4096], Y[start : start + 4096])
        gpu.update(X[start : start + 4096], Y[start : start + 4096], device="cuda")
    for name in ("sum_x", "sum_y", "xtx", "xty", "yty"):
        np.testing.assert_allclose(getattr(gpu, name), getattr(cpu, name), rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(RidgeMap().fit_stats(gpu).coef_, RidgeMap().fit_stats(cpu).coef_, rtol=1e-8, atol=1e-10)


def test_exact_search_on_cuda_equals_cpu():
    from convergent.server.inference import ExactIndex

    rng = np.random.default_rng(1)
    G = rng.standard_normal((50_000, 128)).astype(np.float32)
    Q = rng.standard_normal((300, 128)).astype(np.float32)
    ids = [f"g{i}" for i in range(len(G))]
    cpu, gpu = ExactIndex(128, backend="numpy"), ExactIndex(128, backend="cuda")
    cpu.add(ids, G)
    gpu.add(ids, G)
    (ci, cs), (gi, gs) = cpu.search(Q, 10), gpu.search(Q, 10)
    assert ci == gi
    np.testing.assert_allclose(gs, cs, rtol=1e-4, atol=1e-4)
    gpu.remove(ids[:1000])  # the device copy follows the index
    cpu.remove(ids[:1000])
    assert gpu.search(Q, 5)[0] == cpu.search(Q, 5)[0]


def test_resolve_device():
    from convergent.server.align import resolve_device

    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda" and resolve_device("cpu") == "cpu"
