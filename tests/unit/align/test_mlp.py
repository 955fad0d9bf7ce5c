"""The residual MLP map: wins where the relation is not linear, and only there."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convergent.server.align import PairedStats, RidgeMap, ResidualMLPMap, fit_auto, methods, r2_score, retrieval_topk
from convergent.server.errors import InvalidInput

D_X, D_Y = 8, 32


def _relation(kind: str, seed: int = 0):
    """Known ground truth: y = tanh(3 x A) B + noise (kind "tanh") or y = x A B + noise ("linear")."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(D_X, D_X)) * 3 / np.sqrt(D_X)
    B = rng.normal(size=(D_X, D_Y)) / np.sqrt(D_X)
    f = (lambda X: np.tanh(X @ A) @ B) if kind == "tanh" else (lambda X: X @ A @ B / 3)

    def pairs(n: int, s: int):
        q = np.random.default_rng(s)
        X = q.normal(size=(n, D_X))
        return X, f(X) + 0.2 * q.normal(size=(n, D_Y))

    return pairs


def _top1(estimator, X, Y) -> float:
    return retrieval_topk(estimator.transform(X), Y, ks=(1,))["top1"]


@pytest.mark.parametrize("seed", [0, 1])
def test_mlp_beats_ridge_by_020_top1_on_new_pairs_of_a_nonlinear_relation(seed):
    pairs = _relation("tanh", seed)
    X, Y = pairs(3000, 10 + seed)
    Xt, Yt = pairs(1000, 20 + seed)
    ridge, mlp = RidgeMap().fit(X, Y), ResidualMLPMap(random_state=seed).fit(X, Y)
    print(f"\nseed {seed}: top-1 among 1000 new pairs ridge {_top1(ridge, Xt, Yt):.3f} mlp {_top1(mlp, Xt, Yt):.3f}; "
          f"R2 ridge {r2_score(Yt, ridge.transform(Xt)):.3f} mlp {r2_score(Yt, mlp.transform(Xt)):.3f}; "
          f"best epoch {mlp.best_epoch_}/{mlp.epochs_run_}")
    assert _top1(mlp, Xt, Yt) >= _top1(ridge, Xt, Yt) + 0.2
    assert mlp.best_epoch_ > 0


def test_auto_picks_mlp_for_the_nonlinear_relation_and_ridge_for_the_linear_one():
    for kind, expected in (("tanh", "mlp"), ("linear", "ridge")):
        X, Y = _relation(kind)(2500, 3)
        result = fit_auto(X, Y, refit=False)  # 2,000 fitting pairs: mlp is a default candidate
        assert "mlp" in result.scores
        print(f"\n{kind}: auto -> {result.name}; margins " + ", ".join(f"{k}={v:.3f}" for k, v in result.scores.items()))
        assert result.name == expected


def test_below_2000_pairs_auto_does_not_try_it_unless_named():
    X, Y = _relation("tanh")(600, 4)
    assert "mlp" not in fit_auto(X, Y, refit=False).scores
    assert "mlp" in fit_auto(X, Y, refit=False, candidates=("ridge", "mlp")).scores


def test_state_round_trip_and_the_exported_formula_in_numpy():
    X, Y = _relation("tanh")(800, 5)
    m = ResidualMLPMap(hidden=32, depth=2, epochs=40).fit(X, Y)
    params, arrays = m.get_state()
    rebuilt = methods.estimator_from_state(json.loads(json.dumps(params)), arrays)
    np.testing.assert_array_equal(rebuilt.transform(X[:50]), m.transform(X[:50]))
    e = m.export()
    h = (X[:50] - e["mlp_mean"]) / e["mlp_scale"][0]
    for layer in range(2):
        h = np.maximum(h @ e[f"mlp_layer{layer}_weight"].T + e[f"mlp_layer{layer}_bias"], 0)
    y = X[:50] @ e["W"].T + e["b"] + e["mlp_out_scale"][0] * (h @ e["mlp_out_weight"].T + e["mlp_out_bias"])
    np.testing.assert_allclose(y, m.transform(X[:50]), rtol=1e-12, atol=1e-12)


def test_seeded_fits_repeat_and_bad_use_is_refused():
    X, Y = _relation("tanh")(400, 6)
    a = ResidualMLPMap(hidden=16, epochs=20, random_state=7).fit(X, Y)
    b = ResidualMLPMap(hidden=16, epochs=20, random_state=7).fit(X, Y)
    np.testing.assert_allclose(a.transform(X[:20]), b.transform(X[:20]), rtol=1e-6, atol=1e-6)
    with pytest.raises(InvalidInput, match="trained on anchor pairs"):
        ResidualMLPMap().fit_stats(PairedStats.from_arrays(X, Y))
    with pytest.raises(InvalidInput, match="at least"):
        ResidualMLPMap().fit(X[:15], Y[:15])
    with pytest.raises(InvalidInput, match="cuda"):
        methods.validate_params("mlp", {"device": "tpu"})
