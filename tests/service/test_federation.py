"""CE-FI federated inference through a real server, on a non-IID federation of two digit
classifiers: a consensus (shared) space from unlabeled anchors, a cooperative head trained by
distillation from the parties' own predicted probabilities, prediction by one or both parties."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from convergent.client import Client, errors

N_TRAIN, N_ANCHORS = 900, 400  # of sklearn's 1,797 digits; the rest (497) are the unseen test digits


def _federation(seed: int):
    """Two scikit-learn MLPs trained on different class ranges (0-5 and 4-9, plus 3 digits of
    each other class); their hidden activations are the parties' embeddings."""
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    from convergent.server.align import hidden_activations

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    order = np.random.default_rng(seed).permutation(len(X))
    train, anchors, test = order[:N_TRAIN], order[N_TRAIN : N_TRAIN + N_ANCHORS], order[N_TRAIN + N_ANCHORS :]

    def party(classes: set[int], s: int) -> MLPClassifier:
        rows = [i for i in train if y[i] in classes]
        rng = np.random.default_rng(s)
        for c in sorted(set(range(10)) - classes):
            rows += list(rng.choice([i for i in train if y[i] == c], size=3, replace=False))
        from threadpoolctl import threadpool_limits

        # one BLAS thread: these small products ran 14x slower with two threads on a busy 2-core machine
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            return MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=s).fit(X[rows], y[rows])

    nets = {"a": party(set(range(0, 6)), seed + 1), "b": party(set(range(4, 10)), seed + 2)}
    return X, y, anchors, test, nets, {m: hidden_activations(net, X) for m, net in nets.items()}


def _accuracy(P: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(P.argmax(axis=1) == y))


def _run(client: Client, seed: int) -> dict[str, float]:
    X, y, anchors, test, nets, H = _federation(seed)
    ids = [f"digit{i}" for i in anchors]
    for m in ("a", "b"):
        client.register_model(f"{m}{seed}", dim=64, normalize=False)
        client.register_model(f"{m}{seed}_probs", dim=10, normalize=False)
        client.upload_anchors(f"{m}{seed}", anchor_set=f"digits{seed}", ids=ids, vectors=H[m][anchors])
        client.upload_anchors(f"{m}{seed}_probs", anchor_set=f"digits{seed}", ids=ids, vectors=nets[m].predict_proba(X[anchors]))
    # the default consensus dimension: all of the smaller model's (64); k = 12 missed the 0.03 below
    space = client.fit_shared_space([f"a{seed}", f"b{seed}"], anchor_set=f"digits{seed}")
    head = client.fit_cooperative(space=space.id, anchor_set=f"digits{seed}", teachers=[f"a{seed}_probs", f"b{seed}_probs"])
    assert head.method == "cooperative" and head.models == [f"a{seed}", f"b{seed}"]
    assert head.metrics["n_anchors"] == N_ANCHORS and 0 < head.metrics["fused.agreement"] <= 1
    both = client.predict(head.id, {f"a{seed}": H["a"][test], f"b{seed}": H["b"][test]})
    assert both.shape == (len(test), 10) and np.allclose(both.sum(axis=1), 1, atol=1e-5)
    own = {m: _accuracy(nets[m].predict_proba(X[test]), y[test]) for m in ("a", "b")}
    return {
        "own_a": own["a"], "own_b": own["b"],
        "head_a": _accuracy(client.predict(head.id, {f"a{seed}": H["a"][test]}), y[test]),
        "head_b": _accuracy(client.predict(head.id, {f"b{seed}": H["b"][test]}), y[test]),
        "fused": _accuracy(both, y[test]),
        "local_average": _accuracy((nets["a"].predict_proba(X[test]) + nets["b"].predict_proba(X[test])) / 2, y[test]),
    }


def _results(start_server) -> list[dict[str, float]]:
    server = start_server()
    with Client(server.address, timeout=120) as client:
        return [_run(client, seed) for seed in range(3)]


def test_cooperative_head_beats_each_party_alone_and_fusion_beats_the_best_party(start_server):
    rows = _results(start_server)
    for r in rows:
        print("\n" + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print("mean over 3 splits:", ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))
    assert mean["head_a"] >= mean["own_a"] + 0.05 and mean["head_b"] >= mean["own_b"] + 0.05
    assert mean["fused"] >= max(mean["own_a"], mean["own_b"]) + 0.08
    # within 0.03 of the average of the local models' probabilities (which needs both raw models)
    assert mean["local_average"] - mean["fused"] <= 0.03


def test_bad_federation_requests(client: Client, rng):
    for name, dim, normalize in (("p", 4, False), ("q", 4, False), ("t", 3, False), ("tn", 3, True)):
        client.register_model(name, dim=dim, normalize=normalize)
    ids = [f"i{k}" for k in range(30)]
    for name in ("p", "q"):
        client.upload_anchors(name, anchor_set="s", ids=ids, vectors=rng.standard_normal((30, 4)))
    probs = rng.dirichlet(np.ones(3), size=30)
    client.upload_anchors("t", anchor_set="s", ids=ids, vectors=probs)
    client.upload_anchors("tn", anchor_set="s", ids=ids, vectors=probs)
    space = client.fit_shared_space(["p", "q"], anchor_set="s")
    ridge = client.fit_alignment("p", "q", anchor_set="s", method="ridge")
    with pytest.raises(errors.InvalidArgument, match="not a shared space"):
        client.fit_cooperative(space=ridge.id, anchor_set="s", teachers=["t"])
    with pytest.raises(errors.FailedPrecondition, match="normalize set to false"):
        client.fit_cooperative(space=space.id, anchor_set="s", teachers=["tn"])
    with pytest.raises(errors.InvalidArgument, match="models of the shared space"):
        client.fit_cooperative(space=space.id, anchor_set="s", teachers=["p"])
    with pytest.raises(errors.InvalidArgument, match="one string"):
        client.fit_cooperative(space=space.id, anchor_set="s", teachers="t")
    client.upload_anchors("q", anchor_set="bad", ids=ids, vectors=rng.standard_normal((30, 4)))
    client.upload_anchors("p", anchor_set="bad", ids=ids, vectors=rng.standard_normal((30, 4)))
    client.upload_anchors("t", anchor_set="bad", ids=ids, vectors=2 * probs)
    with pytest.raises(errors.FailedPrecondition, match="not class probabilities"):
        client.fit_cooperative(space=space.id, anchor_set="bad", teachers=["t"])
    head = client.fit_cooperative(space=space.id, anchor_set="s", teachers=["t"], reg=0.01)
    assert client.predict(head.id, {"p": rng.standard_normal((5, 4))}).shape == (5, 3)
    with pytest.raises(errors.InvalidArgument, match="not parties of this head"):
        client.predict(head.id, {"t": rng.standard_normal((5, 3))})
    with pytest.raises(errors.InvalidArgument, match="same number of rows"):
        client.predict(head.id, {"p": rng.standard_normal((5, 4)), "q": rng.standard_normal((4, 4))})
    with pytest.raises(errors.InvalidArgument, match="not a cooperative head"):
        client.predict(space.id, {"p": rng.standard_normal((5, 4))})
    with pytest.raises(errors.NotFound):
        client.predict("nope", {"p": rng.standard_normal((5, 4))})
    with pytest.raises(errors.InvalidArgument, match="dimension"):
        client.predict(head.id, {"p": rng.standard_normal((5, 7))})
    exported = client.export_fit(head.id)
    assert exported["W"].shape == (1, 3, space.metrics["n_components"]) and exported["b"].shape == (1, 3)  # one teacher
