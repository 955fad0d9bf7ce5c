"""fit_shared_space(method="contrastive"): a learned consensus space through a real server, next
to today's GCCA one on the same data."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.client import Client, errors


def _three_models(n: int, seed: int):
    """Three models seeing one 8-dim latent through different nonlinear maps, plus noise."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, 8))
    out = {}
    for name, d, m in (("a", 24, 100), ("b", 32, 101), ("c", 16, 102)):
        W = np.random.default_rng(m).normal(size=(8, d))
        out[name] = (np.tanh(Z @ W / 2) + 0.05 * rng.normal(size=(n, d))).astype(np.float32)
    return out


def test_contrastive_space_routes_transform_identify_and_persists(start_server):
    server = start_server()
    anchors, new = _three_models(600, 1), _three_models(100, 2)
    ids = [f"x{i}" for i in range(600)]
    with Client(server.address, timeout=300) as c:
        for m, X in anchors.items():
            c.register_model(m, dim=X.shape[1], normalize=False)
            c.upload_anchors(m, anchor_set="s", ids=ids, vectors=X)
        gcca = c.fit_shared_space(["a", "b", "c"], anchor_set="s")
        space = c.fit_shared_space(["a", "b", "c"], anchor_set="s", method="contrastive", epochs=60, n_components=16)
        assert space.method == "shared" and space.params["method"] == "contrastive" and space.models == ["a", "b", "c"]
        for pair in ("a->b", "b->a", "a->c", "c->b"):
            assert space.metrics[f"{pair}.top1"] > 0.3, space.metrics  # held-out anchors, 120-way; chance 0.008
        print("\nheld-out top-1 (120 anchors): " + ", ".join(
            f"{p} gcca {gcca.metrics[p + '.top1']:.3f} contrastive {space.metrics[p + '.top1']:.3f}" for p in ("a->b", "b->c", "c->a")))
        Z = c.transform(new["a"], source="a", target=f"shared:{space.id}")
        assert Z.shape == (100, 16) and np.allclose(np.linalg.norm(Z, axis=1), 1, atol=1e-5)
        c.enroll(gallery="g", model="b", ids=[f"n{i}" for i in range(100)], vectors=new["b"])
        c.delete_fit(gcca.id)  # the newest shared space holding a and b is the route
        found = c.identify(gallery="g", vectors=new["a"], model="a", k=1)
        assert found.route == f"fit:{space.id}"
        rank1 = np.mean([row[0] == f"n{i}" for i, row in enumerate(found.ids)])
        assert rank1 > 0.3, rank1  # new items, 100-way
        with pytest.raises(errors.FailedPrecondition, match="contrastive shared space"):
            c.verify(a=new["a"][:5], a_model="a", b=new["b"][:5], b_model="b", far=0.05)
        with pytest.raises(errors.InvalidArgument, match="'temperature'"):
            c.fit_shared_space(["a", "b"], anchor_set="s", method="contrastive", temperature=0)
        with pytest.raises(errors.InvalidArgument, match="unknown parameters"):
            c.fit_shared_space(["a", "b"], anchor_set="s", epochs=5)  # gcca takes no epochs
        before = c.transform(new["c"], source="c", target="a")
    data_dir = server.settings.data_dir
    server.stop()
    again = start_server(data_dir=data_dir)
    with Client(again.address, timeout=60) as c:
        np.testing.assert_allclose(c.transform(new["c"], source="c", target="a"), before, rtol=1e-5, atol=1e-5)
