"""Fits build only the statistics their method needs: unit matching the cross products, the
others the full float64 ones; both kinds are cached and stored, full ones serve every method."""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from convergent.client import Client


def _stored_products(server) -> list[tuple]:  # noqa: ANN001
    from convergent.server.storage.schema import pair_stats

    with server.store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(pair_stats.c.data_version, pair_stats.c.products))]


def test_unit_matching_builds_cross_products_and_full_ones_serve_it(server, client: Client, rng):
    n, d = 400, 10
    X = rng.standard_normal((n, d)) + 2.0
    Y = X[:, ::-1] * 3 + 0.1 * rng.standard_normal((n, d))
    ids = [f"id{i:04d}" for i in range(n)]
    for name, V in (("a", X), ("b", Y)):
        client.register_model(name, dim=d, normalize=False)
        client.upload_anchors(name, anchor_set="s", ids=ids, vectors=V)
    cache = server._backend.alignment.stats_cache

    cold = client.fit_alignment("a", "b", anchor_set="s", method="permutation")
    assert cache.full_reads == 1 and _stored_products(server) == [(2, "cross")]
    assert "condition_number" not in cold.metrics  # needs X^T X, which unit matching does not build
    assert list(client.export_fit(cold.id)["permutation"]) == list(range(d))[::-1]
    client.fit_alignment("a", "b", anchor_set="s", method="semi_matching")  # cross products serve it too
    assert cache.full_reads == 1

    ridge = client.fit_alignment("a", "b", anchor_set="s", method="ridge", alpha=1.0)
    assert cache.full_reads == 2 and _stored_products(server) == [(2, "full")]
    assert "condition_number" in ridge.metrics
    warm = client.fit_alignment("a", "b", anchor_set="s", method="permutation")  # from the full ones
    assert cache.full_reads == 2
    W_cold, W_warm = client.export_fit(cold.id)["W"], client.export_fit(warm.id)["W"]
    np.testing.assert_allclose(W_cold, W_warm, rtol=1e-4, atol=1e-6)
    assert _stored_products(server) == [(2, "full")]  # not replaced by cross products of the same version
