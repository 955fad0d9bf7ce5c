"""The mlp map through a real server: fit, held-out choice by auto, transform = the exported
formula, a restart serves it, verification calibrates through it out of fold."""

from __future__ import annotations

import numpy as np

from convergent.client import Client, errors
from convergent.server.align import retrieval_topk


def _tanh_pairs(n: int, seed: int, d_x: int = 8, d_y: int = 32):
    """y = tanh(3 x A) B + noise: a relation no linear map captures."""
    A = np.random.default_rng(100).normal(size=(d_x, d_x)) * 3 / np.sqrt(d_x)
    B = np.random.default_rng(101).normal(size=(d_x, d_y)) / np.sqrt(d_x)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_x))
    return X.astype(np.float32), (np.tanh(X @ A) @ B + 0.2 * rng.normal(size=(n, d_y))).astype(np.float32)


def _upload(client: Client, X, Y) -> None:
    ids = [f"a{i:05d}" for i in range(len(X))]
    for name, data in (("x", X), ("y", Y)):
        client.register_model(name, dim=data.shape[1], normalize=False)
        client.upload_anchors(name, anchor_set="s", ids=ids, vectors=data)


def _formula(e: dict, X: np.ndarray) -> np.ndarray:
    h = (X.astype(np.float64) - e["mlp_mean"]) / e["mlp_scale"][0]
    layer = 0
    while f"mlp_layer{layer}_weight" in e:
        h = np.maximum(h @ e[f"mlp_layer{layer}_weight"].T + e[f"mlp_layer{layer}_bias"], 0)
        layer += 1
    return X @ e["W"].T + e["b"] + e["mlp_out_scale"][0] * (h @ e["mlp_out_weight"].T + e["mlp_out_bias"])


def test_auto_chooses_mlp_on_held_out_anchors_and_serves_its_formula(start_server):
    server = start_server()
    X, Y = _tanh_pairs(2500, 1)
    Xt, Yt = _tanh_pairs(500, 2)
    with Client(server.address, timeout=120) as client:
        _upload(client, X, Y)
        auto = client.fit_alignment("x", "y", anchor_set="s")
        assert auto.method == "mlp" and auto.auto_winner == auto.params["candidate"] == "mlp", auto.metrics
        assert auto.metrics["auto.mlp.margin"] > auto.metrics["auto.ridge.margin"]
        ridge = client.fit_alignment("x", "y", anchor_set="s", method="ridge")
        Z_ridge = client.transform(Xt, source="x", fit_id=ridge.id)
        Z = client.transform(Xt, source="x", fit_id=auto.id)
        np.testing.assert_allclose(Z, _formula(client.export_fit(auto.id), Xt), rtol=1e-4, atol=1e-4)
        gain = retrieval_topk(Z, Yt, ks=(1,))["top1"] - retrieval_topk(Z_ridge, Yt, ks=(1,))["top1"]
        assert gain >= 0.2, gain  # new pairs, 500-way
        with_params = client.fit_alignment("x", "y", anchor_set="s", method="mlp", hidden=32, max_train_pairs=500, seed=3)
        assert with_params.params["hidden"] == 32 and with_params.params["max_train_pairs"] == 500
        for bad in ({"hidden": 0}, {"depth": 9}, {"lr": 2.0}, {"device": "tpu"}, {"max_train_pairs": 10}):
            try:
                client.fit_alignment("x", "y", anchor_set="s", method="mlp", **bad)
            except errors.InvalidArgument as exc:
                assert repr(next(iter(bad))) in exc.details
            else:
                raise AssertionError(f"{bad} was accepted")
    data_dir = server.settings.data_dir
    server.stop()
    again = start_server(data_dir=data_dir)
    with Client(again.address, timeout=120) as client:
        np.testing.assert_allclose(client.transform(Xt, source="x", fit_id=auto.id), Z, rtol=1e-6, atol=1e-6)


def test_verify_calibrates_out_of_fold_through_an_mlp_route(client: Client):
    X, Y = _tanh_pairs(300, 3)
    _upload(client, X, Y)
    fit = client.fit_alignment("x", "y", anchor_set="s", method="mlp", hidden=32, epochs=40)
    assert fit.method == "mlp" and fit.metrics["n_anchors"] == 300
    Xt, Yt = _tanh_pairs(40, 4)
    result = client.verify(a_model="x", a=Xt, b_model="y", b=Yt, far=0.05)
    assert result.calibration == "anchors-distinct" and result.n_impostor > 0
    assert result.accept.mean() > 0.5  # same-item pairs of new anchors, far above 5% of impostors
