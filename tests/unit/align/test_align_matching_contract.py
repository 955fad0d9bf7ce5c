"""Estimator contract of the unit-matching maps: registry, state round trip, export, dtypes, errors."""

import json

import numpy as np
import pytest

from convergent.server.align import (
    PairedStats,
    PermutationMap,
    SemiMatchingMap,
    SparseMap,
    SpectralMatching,
    diagnostics,
    estimator_from_state,
)
from convergent.server.align.methods import METHODS
from convergent.server.errors import InvalidInput, NotFitted

NEW = [PermutationMap, SemiMatchingMap, SparseMap, SpectralMatching]
EXPORT_KEYS = {
    PermutationMap: {"permutation", "unit_scale", "matched_correlation"},
    SemiMatchingMap: {"assignment", "matched_correlation"},
    SparseMap: {"alphas", "path_loss", "path_nnz"},
    SpectralMatching: {"source_groups", "target_groups", "group_sizes", "group_correlation"},
}
INT_KEYS = {"permutation", "assignment", "source_groups", "target_groups", "group_sizes"}


def _data(n=400, d_x=12, d_y=10, seed=0):
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n, 4))
    X = F @ rng.normal(size=(4, d_x)) + 0.5 * rng.normal(size=(n, d_x)) + 1.0
    Y = F @ rng.normal(size=(4, d_y)) + 0.5 * rng.normal(size=(n, d_y)) - 2.0
    return X, Y


@pytest.mark.parametrize("cls", NEW)
def test_registered_state_round_trip_and_export(cls):
    assert any(cls in method.states for method in METHODS.values())
    X, Y = _data()
    m = cls().fit(X, Y)
    params, arrays = m.get_state()
    params = json.loads(json.dumps(params))
    for r in (cls.from_state(params, arrays), estimator_from_state(params, arrays)):
        assert type(r) is cls and r.get_params() == m.get_params()
        np.testing.assert_array_equal(r.transform(X), m.transform(X))
        ex, ref = r.export(), m.export()
        assert set(ex) == set(ref) == {"W", "b"} | EXPORT_KEYS[cls]
        for k in ex:
            np.testing.assert_array_equal(ex[k], ref[k])
            assert ex[k].dtype == (np.int64 if k in INT_KEYS else np.float64)
    assert ref["W"].shape == (10, 12) and ref["b"].shape == (10,)
    np.testing.assert_allclose(X @ ref["W"].T + ref["b"], m.transform(X), atol=1e-10)
    with pytest.raises(InvalidInput):
        (PermutationMap if cls is not PermutationMap else SparseMap).from_state(params, arrays)


@pytest.mark.parametrize("cls", NEW)
def test_contract_dtypes_streaming_diagnostics_and_errors(cls):
    m = cls()
    assert not any(k.endswith("_") for k in vars(m))  # __init__ stores hyper-parameters only
    with pytest.raises(NotFitted):
        m.transform(np.ones((2, 3)))
    with pytest.raises(NotFitted):
        m.export()
    X, Y = _data()
    bad = X.copy()
    bad[0, 0] = np.inf
    for args in [(bad, Y), (X[:, 0], Y), (X, Y[:-1]), (X[:1], Y[:1])]:
        with pytest.raises(InvalidInput):
            cls().fit(*args)
    with pytest.raises(InvalidInput):
        cls().fit_stats("not stats")
    s = PairedStats.empty(12, 10)
    for idx in np.array_split(np.arange(len(X)), 4):
        s.update(X[idx], Y[idx])
    m = cls().fit_stats(s)
    np.testing.assert_allclose(m.transform(X), cls().fit(X, Y).transform(X), atol=1e-8)
    assert m.transform(X.astype(np.float32)).dtype == np.float32 and m.transform(X).dtype == np.float64
    with pytest.raises(InvalidInput):
        m.transform(X[:, :5])
    d = diagnostics(m, X[:50], Y[:50], s.n, 12, fit_stats=s)
    assert -1.0 < d["r2"] <= 1.0 and 0.0 <= d["top1"] <= 1.0
    assert m.score(X, Y) > 0.2
