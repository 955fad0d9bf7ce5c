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


def test_cold_pass_holds_out_exactly_the_split_of_every_id(tmp_path, rng):
    """The held-out pairs collected during a cold statistics pass (lowest ranks seen) are
    heldout_split's pairs, with the stored vectors; after more uploads the incremental path
    agrees with a cold pass."""
    from convergent.server.align import heldout_split
    from convergent.server.registry.pair_stats import HELDOUT_CAP, HELDOUT_FRACTION, PairStatistics
    from convergent.server.storage.sql import SqlStore

    store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        a, b = store.insert_model("t", "a", 6, False), store.insert_model("t", "b", 5, False)
        ids = [f"x{i}" for i in range(12_000)]
        X, Y = rng.standard_normal((12_000, 6)).astype(np.float32), rng.standard_normal((12_000, 5)).astype(np.float32)
        store.write_anchors("t", "s", a, [(ids[:9000], X[:9000])], overwrite=False)
        store.write_anchors("t", "s", b, [(ids[:9000][::-1], Y[:9000][::-1])], overwrite=False)

        def check(snap, n: int) -> None:
            expected = sorted(i for i, h in zip(sorted(ids[:n]), heldout_split(sorted(ids[:n]), seed=7,
                              fraction=HELDOUT_FRACTION, cap=HELDOUT_CAP)) if h)
            assert snap.held_ids == expected and snap.stats.n == n
            rows = [int(i[1:]) for i in expected]
            assert np.array_equal(snap.X_held, X[rows]) and np.array_equal(snap.Y_held, Y[rows])

        pairs = PairStatistics(store, "cpu")
        check(pairs.snapshot("t", "s", a, b, seed=7, products="cross"), 9000)  # cold: 1800 held out
        store.write_anchors("t", "s", a, [(ids[9000:], X[9000:])], overwrite=False)
        store.write_anchors("t", "s", b, [(ids[9000:], Y[9000:])], overwrite=False)
        check(pairs.snapshot("t", "s", a, b, seed=7, products="cross"), 12_000)  # incremental: cap 2000
        assert (pairs.cache.full_reads, pairs.cache.incremental_updates) == (1, 1)
        check(PairStatistics(store, "cpu").snapshot("t", "s", a, b, seed=7, products="cross"), 12_000)
    finally:
        store.close()
