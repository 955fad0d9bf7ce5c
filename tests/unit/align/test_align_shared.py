"""SharedSpace (MAXVAR generalised CCA): three models related by rotations share one space."""

import json

import numpy as np
import pytest

from convergent.server.align import PairedStats, RidgeMap, SharedSpace, retrieval_topk
from convergent.server.errors import InvalidInput, NotFitted


def _views(n=1500, d=24, dims=(24, 32, 24), noise=0.05, seed=0):
    """A latent (n, d) seen by each model through its own rotation/embedding, noise and offset."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, d)) * np.linspace(0.5, 2.0, d)
    out = {}
    for name, dm in zip("abc", dims):
        Q, _ = np.linalg.qr(rng.normal(size=(dm, dm)))
        out[name] = Z @ Q[:d] + noise * rng.normal(size=(n, dm)) + rng.normal(size=dm)
    return out


def test_shared_space_aligns_every_pair_on_unseen_anchors():
    views = _views()
    fit = {k: v[:1000] for k, v in views.items()}
    test = {k: v[1000:] for k, v in views.items()}
    s = SharedSpace().fit(fit)
    assert s.n_components_ == 24 and s.models_ == ["a", "b", "c"]
    assert np.all(s.eigenvalues_ > 2.9) and np.all(s.eigenvalues_ <= 3 + 1e-9)  # 24 fully shared directions
    assert np.all(s.shared_correlation_ > 0.95)
    for a in "abc":
        Za = s.transform(a, test[a])
        assert Za.shape == (500, 24)
        for b in "abc":
            if a == b:
                continue
            Zb = s.transform(b, test[b])
            assert np.mean(np.sum((Za - Zb) ** 2, 1)) < 0.05 * np.mean(np.sum(Zb**2, 1))
            assert s.score(a, b, test[a], test[b]) > 0.99
            assert retrieval_topk(s.translate(a, b, test[a]), test[b])["top1"] > 0.99
            pm = s.pair_map(a, b)
            np.testing.assert_allclose(test[a] @ pm["W"].T + pm["b"], s.translate(a, b, test[a]), atol=1e-9)
    assert s.translate("a", "b", test["a"].astype(np.float32)).dtype == np.float32


def test_shared_space_from_pairwise_statistics_equals_in_memory():
    views = _views(n=600)
    s = SharedSpace(n_components=10).fit(views)
    pairs = {
        ("a", "b"): PairedStats.from_arrays(views["a"], views["b"]),
        ("c", "a"): PairedStats.from_arrays(views["c"], views["a"]),
        ("b", "c"): PairedStats.from_arrays(views["b"], views["c"]),
    }
    t = SharedSpace(n_components=10).fit_stats(pairs)
    np.testing.assert_allclose(t.eigenvalues_, s.eigenvalues_, atol=1e-10)
    for a, b in (("a", "b"), ("c", "a"), ("b", "c")):
        np.testing.assert_allclose(t.translate(a, b, views[a]), s.translate(a, b, views[a]), atol=1e-8)
    with pytest.raises(InvalidInput):
        SharedSpace().fit_stats({k: v for k, v in pairs.items() if k != ("b", "c")})  # a pair missing
    with pytest.raises(InvalidInput):
        SharedSpace().fit_stats({**pairs, ("b", "a"): pairs[("a", "b")]})  # a pair twice


def test_two_noise_free_models_give_least_squares_and_state_round_trip():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(400, 10))
    B = A @ rng.normal(size=(10, 10)) + 2.0
    s = SharedSpace(reg=0.0).fit({"A": A, "B": B})
    np.testing.assert_allclose(s.pair_map("A", "B")["W"], RidgeMap(alphas=[1e-12]).fit(A, B).coef_, atol=1e-6)
    np.testing.assert_allclose(s.to_model("A", s.transform("A", A)), A, atol=1e-8)  # all shared: exact inverse
    params, arrays = s.get_state()
    r = SharedSpace.from_state(json.loads(json.dumps(params)), arrays)
    np.testing.assert_array_equal(r.translate("A", "B", A), s.translate("A", "B", A))
    assert r.get_params() == s.get_params() and r.models_ == ["A", "B"]
    with pytest.raises(InvalidInput):
        SharedSpace.from_state({**params, "class": "RidgeMap"}, arrays)
    with pytest.raises(InvalidInput):
        SharedSpace.from_state(params, {k: v for k, v in arrays.items() if k != "W_1"})


def test_shared_space_bad_input():
    views = _views(n=50)
    with pytest.raises(NotFitted):
        SharedSpace().transform("a", views["a"])
    for bad in ({"a": views["a"]}, [views["a"], views["b"]], {"a": views["a"], "b": views["b"][:-1]},
                {"a": views["a"], 3: views["b"]}, {"a": views["a"], "b": views["b"][:, 0]}):
        with pytest.raises(InvalidInput):
            SharedSpace().fit(bad)
    for kw in (dict(n_components=0), dict(n_components=50), dict(reg=1.0)):
        with pytest.raises(InvalidInput):
            SharedSpace(**kw).fit(views)
    s = SharedSpace(n_components=5).fit(views)
    with pytest.raises(InvalidInput):
        s.transform("zzz", views["a"])
    with pytest.raises(InvalidInput):
        s.transform("a", views["b"])
    with pytest.raises(InvalidInput):
        s.to_model("a", np.ones((3, 4)))
    with pytest.raises(InvalidInput):
        s.set_params(k=3)
