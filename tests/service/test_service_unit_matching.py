"""Convergent Learning methods and the N-model shared space through a real server."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.stats import ortho_group

from convergent.client import Client, errors


def register_and_upload(client: Client, views: dict[str, np.ndarray], anchor_set="s", normalize=False, ids=None):
    n = len(next(iter(views.values())))
    ids = ids or [f"x{i:05d}" for i in range(n)]
    for name, data in views.items():
        client.register_model(name, dim=data.shape[1], normalize=normalize)
        client.upload_anchors(name, anchor_set=anchor_set, ids=ids, vectors=data)
    return ids


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)  # compute-bound: the database adds nothing
def test_permutation_recovers_hidden_units(client: Client, rng):
    n, d = 3000, 24
    X = rng.standard_normal((n, d))
    perm = rng.permutation(d)
    scales = rng.uniform(0.5, 2, d) * rng.choice([-1, 1], d)
    Y = np.empty_like(X)
    Y[:, perm] = X * scales
    Y += 0.1 * rng.standard_normal((n, d))
    register_and_upload(client, {"net1": X, "net2": Y})
    fit = client.fit_alignment("net1", "net2", anchor_set="s", method="permutation")
    exported = client.export_fit(fit.id)
    assert exported["permutation"].dtype == np.int64 and exported["permutation"].shape == (d,)
    np.testing.assert_array_equal(exported["permutation"], perm)
    np.testing.assert_allclose(exported["unit_scale"], scales, rtol=0.05)
    assert fit.metrics["mean_matched_correlation"] > 0.95 and fit.metrics["top1"] > 0.9
    Z = client.transform(X[:5], source="net1", target="net2")
    np.testing.assert_allclose(Z, Y[:5], atol=0.5)
    # auto sees that units correspond one to one and keeps the simplest map
    auto = client.fit_alignment("net1", "net2", anchor_set="s")
    assert auto.auto_winner == auto.params["candidate"] == "permutation", auto.metrics


@pytest.mark.parametrize("method", ["semi_matching", "sparse", "spectral"])
def test_other_unit_methods_fit_export_transform(client: Client, rng, method):
    n, d = 1500, 12
    X = rng.standard_normal((n, d))
    mix = np.zeros((d, d))
    for j in range(d):
        mix[rng.choice(d, 2, replace=False), j] = rng.uniform(0.5, 1.5, 2)
    Y = X @ mix + 0.05 * rng.standard_normal((n, d))
    register_and_upload(client, {"a": X, "b": Y})
    fit = client.fit_alignment("a", "b", anchor_set="s", method=method)
    assert fit.method == method and fit.converged
    exported = client.export_fit(fit.id)
    assert exported["W"].shape == (d, d) and exported["b"].shape == (d,)
    keys = {"semi_matching": "assignment", "sparse": "path_loss", "spectral": "source_groups"}
    assert keys[method] in exported
    Z = client.transform(X[:20], source="a", target="b")
    np.testing.assert_allclose(Z, (X[:20] @ exported["W"].T + exported["b"]).astype(np.float32), rtol=1e-4, atol=1e-4)
    if method == "sparse":
        assert fit.params["alpha"] > 0 and fit.metrics["r2"] > 0.9


def test_semi_matching_at_least_bipartite(client: Client, rng):
    n, d = 800, 16
    Z = rng.standard_normal((n, 6))
    X = Z @ rng.standard_normal((6, d)) + rng.standard_normal((n, d))
    Y = Z @ rng.standard_normal((6, d)) + rng.standard_normal((n, d))
    register_and_upload(client, {"a": X, "b": Y})
    bipartite = client.fit_alignment("a", "b", anchor_set="s", method="permutation", sign=False)
    semi = client.fit_alignment("a", "b", anchor_set="s", method="semi_matching", sign=False)
    assert semi.metrics["mean_matched_correlation"] >= bipartite.metrics["mean_matched_correlation"]


def test_shared_space_of_three_models(client: Client, rng):
    n, k = 1200, 10
    latent = rng.standard_normal((n, k))
    views = {}
    for name, d in (("m1", 10), ("m2", 14), ("m3", 10)):
        Q = ortho_group.rvs(d, random_state=len(name) * d)[:, :k] if d > k else ortho_group.rvs(d, random_state=d)
        views[name] = latent @ Q.T + 0.02 * rng.standard_normal((n, d))
    register_and_upload(client, views)
    shared = client.fit_shared_space(models=["m1", "m2", "m3"], anchor_set="s")
    assert shared.method == "shared" and shared.models == ["m1", "m2", "m3"]
    for a in views:
        for b in views:
            if a != b:
                assert shared.metrics[f"{a}->{b}.top1"] > 0.95, shared.metrics
    coords = client.transform(views["m1"][:50], source="m1", target=f"shared:{shared.id}")
    assert coords.shape == (50, shared.params["n_components"])
    coords3 = client.transform(views["m3"][:50], source="m3", target=f"shared:{shared.id}")
    np.testing.assert_allclose(coords, coords3, atol=0.2)

    # identify routes through the shared space when no direct fit exists
    client.enroll(gallery="g", model="m2", ids=[f"p{i}" for i in range(200)], vectors=views["m2"][:200])
    result = client.identify(gallery="g", vectors=views["m1"][:200], model="m1", k=1)
    assert result.route == f"fit:{shared.id}"
    assert np.mean([row[0] == f"p{i}" for i, row in enumerate(result.ids)]) > 0.95

    with pytest.raises(errors.InvalidArgument, match="at least 2 different models"):
        client.fit_shared_space(models=["m1"], anchor_set="s")
    with pytest.raises(errors.InvalidArgument, match="unknown parameters"):
        client.fit_shared_space(models=["m1", "m2"], anchor_set="s", k=3)
    with pytest.raises(errors.InvalidArgument, match="not a shared space"):
        client.transform(views["m1"][:2], source="m1", target=f"shared:{client.fit_alignment('m1', 'm2', anchor_set='s', method='ridge').id}")


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)  # compute-bound: the database adds nothing
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_convergent_learning_on_digits(client: Client):
    """Li et al. 2016 in miniature: two MLPs from different seeds, hidden units as the models."""
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    from convergent.server.align import hidden_activations

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    acts = {}
    for seed in (0, 1):
        mlp = MLPClassifier(hidden_layer_sizes=(64,), random_state=seed, max_iter=200).fit(X, y)
        acts[f"mlp{seed}"] = hidden_activations(mlp, X)
    register_and_upload(client, acts, anchor_set="digits")
    bipartite = client.fit_alignment("mlp0", "mlp1", anchor_set="digits", method="permutation", sign=False)
    semi = client.fit_alignment("mlp0", "mlp1", anchor_set="digits", method="semi_matching", sign=False)

    A, B = acts["mlp0"], acts["mlp1"]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(A.T, B.T)[:64, 64:]
    corr = np.nan_to_num(corr)  # a unit that never fires correlates with nothing (0)
    rows, cols = linear_sum_assignment(-corr)
    direct_bipartite = corr[rows, cols].mean()
    direct_semi = corr.max(axis=1).mean()
    assert bipartite.metrics["mean_matched_correlation"] == pytest.approx(direct_bipartite, abs=1e-6)
    assert semi.metrics["mean_matched_correlation"] == pytest.approx(direct_semi, abs=1e-6)
    assert semi.metrics["mean_matched_correlation"] >= bipartite.metrics["mean_matched_correlation"]
    per_unit = client.export_fit(bipartite.id)["matched_correlation"]
    assert per_unit.shape == (64,)
    # "a few units match well, many do not"
    assert (per_unit > 0.9).sum() >= 1 and (per_unit < 0.6).sum() >= 5
