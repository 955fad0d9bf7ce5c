"""Alignment through a real server: recovery, congruence with in-process fits, errors, staleness."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from scipy.stats import ortho_group

from convergent.client import Client, errors
from convergent.server.align import RidgeMap


def upload_pair(client: Client, X, Y, anchor_set="s", ids=None, normalize=False, names=("a", "b")):
    ids = [f"id{i:05d}" for i in range(len(X))] if ids is None else ids
    for name, data in zip(names, (X, Y)):
        try:
            client.register_model(name, dim=data.shape[1], normalize=normalize)
        except errors.AlreadyExists:
            pass
        client.upload_anchors(name, anchor_set=anchor_set, ids=ids, vectors=data)
    return ids


def test_procrustes_recovers_rotation_and_transform_applies_it(client: Client, rng):
    d, n = 24, 600
    R = ortho_group.rvs(d, random_state=1)
    X = rng.standard_normal((n, d)).astype(np.float32)
    Y = (X @ R.T * 2.0 + 0.01 * rng.standard_normal((n, d))).astype(np.float32)
    upload_pair(client, X, Y)
    fit = client.fit_alignment("a", "b", anchor_set="s", method="procrustes")
    assert fit.method == "procrustes" and fit.converged and not fit.stale
    assert fit.metrics["n_anchors"] == n and fit.metrics["n_heldout"] == 120
    assert fit.metrics["r2"] > 0.99 and fit.metrics["top1"] == 1.0
    exported = client.export_fit(fit.id)
    np.testing.assert_allclose(exported["R"], R, atol=5e-3)
    np.testing.assert_allclose(exported["s"], [2.0], rtol=1e-3)
    Xnew = rng.standard_normal((50, d)).astype(np.float32)
    Z = client.transform(Xnew, source="a", target="b")
    assert Z.dtype == np.float32 and Z.shape == (50, d)
    np.testing.assert_allclose(Z, Xnew @ R.T * 2.0, atol=0.02)


def test_service_fit_equals_in_memory_fit(client: Client, rng):
    """Streamed, stored and cached statistics give the in-process estimator's map to rounding."""
    n, dx, dy = 900, 20, 12
    X = rng.standard_normal((n, dx)).astype(np.float32)
    Y = (X @ rng.standard_normal((dx, dy)) + rng.standard_normal(dy) + 0.3 * rng.standard_normal((n, dy))).astype(np.float32)
    upload_pair(client, X, Y)
    fit = client.fit_alignment("a", "b", anchor_set="s", method="ridge", alpha=3.0)
    assert fit.params["alpha"] == 3.0
    local = RidgeMap(alphas=[3.0]).fit(X, Y)
    exported = client.export_fit(fit.id)
    np.testing.assert_allclose(exported["W"], local.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(exported["b"], local.intercept_, rtol=1e-6, atol=1e-8)


def test_auto_picks_ridge_for_anisotropic_affine_map(client: Client, rng):
    n, d = 2000, 16
    A = np.diag(np.geomspace(0.2, 5, d)) @ ortho_group.rvs(d, random_state=3)
    X = rng.standard_normal((n, d))
    Y = X @ A.T + 1.0 + 0.05 * rng.standard_normal((n, d))
    upload_pair(client, X, Y)
    fit = client.fit_alignment("a", "b", anchor_set="s")
    assert fit.requested_method == "auto" and fit.method == "ridge", fit.metrics
    assert fit.metrics["auto.ridge.margin"] > fit.metrics["auto.procrustes.margin"]
    assert fit.metrics["r2"] > 0.98


def test_auto_picks_procrustes_for_noisy_rotation_with_few_anchors(client: Client, rng):
    d = 48
    n = 70  # barely above d: ridge has too many parameters for this noise
    R = ortho_group.rvs(d, random_state=5)
    X = rng.standard_normal((n, d))
    Y = X @ R.T + 0.6 * rng.standard_normal((n, d))
    upload_pair(client, X, Y)
    fit = client.fit_alignment("a", "b", anchor_set="s")
    assert fit.method == "procrustes", fit.metrics
    assert any("held-out anchors" in w for w in fit.warnings)


def test_incremental_statistics_equal_a_full_recompute(server, client: Client, rng, start_server):
    n, d = 400, 10
    X = rng.standard_normal((n, d))
    Y = X @ rng.standard_normal((d, d)) + 0.1 * rng.standard_normal((n, d))
    ids = [f"id{i:04d}" for i in range(n)]
    upload_pair(client, X[:300], Y[:300], ids=ids[:300])
    client.fit_alignment("a", "b", anchor_set="s", method="ridge", alpha=1.0)
    # More anchors: the target side first (no new pairs yet), then the source side.
    client.upload_anchors("b", anchor_set="s", ids=ids[300:], vectors=Y[300:])
    client.upload_anchors("a", anchor_set="s", ids=ids[300:], vectors=X[300:])
    second = client.fit_alignment("a", "b", anchor_set="s", method="ridge", alpha=1.0)
    cache = server._backend.alignment.stats_cache
    assert (cache.full_reads, cache.incremental_updates) == (1, 1)
    assert second.metrics["n_anchors"] == n

    fresh = start_server()
    with Client(fresh.address) as other:
        upload_pair(other, X, Y, ids=ids)
        reference = other.fit_alignment("a", "b", anchor_set="s", method="ridge", alpha=1.0)
        np.testing.assert_allclose(client.export_fit(second.id)["W"], other.export_fit(reference.id)["W"], rtol=1e-9)

    # An overwrite invalidates the cache: the next fit reads everything again.
    client.upload_anchors("a", anchor_set="s", ids=ids[:1], vectors=X[:1] + 1, overwrite=True)
    client.fit_alignment("a", "b", anchor_set="s", method="ridge", alpha=1.0)
    assert cache.full_reads == 2


def test_anchor_order_does_not_matter(client: Client, start_server, rng):
    n, d = 200, 8
    X, Y = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    ids = [f"id{i:04d}" for i in range(n)]
    upload_pair(client, X, Y, ids=ids)
    first = client.export_fit(client.fit_alignment("a", "b", anchor_set="s", method="procrustes").id)
    other_server = start_server()
    order = rng.permutation(n)
    with Client(other_server.address) as other:
        upload_pair(other, X[order], Y[order], ids=[ids[i] for i in order])
        second = other.export_fit(other.fit_alignment("a", "b", anchor_set="s", method="procrustes").id)
    np.testing.assert_allclose(first["R"], second["R"], atol=1e-10)


def test_stale_after_anchor_change_and_model_reregistration(client: Client, rng):
    X, Y = rng.standard_normal((50, 4)), rng.standard_normal((50, 4))
    ids = upload_pair(client, X, Y)
    fit = client.fit_alignment("a", "b", anchor_set="s", method="procrustes")
    assert client.get_fit(fit.id).stale is False
    client.delete_anchors("a", anchor_set="s", ids=ids[:1])
    assert client.get_fit(fit.id).stale is True
    assert [f.stale for f in client.list_fits(source="a")] == [True]
    client.transform(X[:2], source="a", target="b")  # stale fits still serve
    client.delete_model("b")
    client.register_model("b", dim=4)
    with pytest.raises(errors.FailedPrecondition, match="fit again"):
        client.transform(X[:2], source="a", target="b")


def test_list_get_delete_and_reverse_fits_are_not_used(client: Client, rng):
    X, Y = rng.standard_normal((40, 4)), rng.standard_normal((40, 6))
    upload_pair(client, X, Y)
    forward = client.fit_alignment("a", "b", anchor_set="s", method="ridge")
    client.fit_alignment("b", "a", anchor_set="s", method="ridge")
    assert [f.source for f in client.list_fits()] == ["a", "b"]
    assert [f.id for f in client.list_fits(source="a", target="b")] == [forward.id]
    assert client.get_fit(forward.id).metrics == forward.metrics
    client.delete_fit(forward.id)
    with pytest.raises(errors.NotFound, match=forward.id):
        client.get_fit(forward.id)
    with pytest.raises(errors.FailedPrecondition, match="no fit from 'a' to 'b'"):
        client.transform(X[:3], source="a", target="b")


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"method": "magic"}, errors.InvalidArgument, "unknown method 'magic'"),
        ({"method": "ridge", "lambda_": 1.0}, errors.InvalidArgument, "unknown parameters ['lambda_']"),
        ({"method": "ridge", "alpha": "big"}, errors.InvalidArgument, "'alpha' must be a number in (0, 1e+12]"),
        ({"method": "ridge", "alpha": -1}, errors.InvalidArgument, "'alpha' must be"),
        ({"method": "procrustes", "scale": 1}, errors.InvalidArgument, "'scale' must be a boolean"),
        ({"method": "cca", "n_components": 2.5}, errors.InvalidArgument, "'n_components' must be an integer"),
        ({"method": "cca", "n_components": 99}, errors.InvalidArgument, "n_components must be in [1, 4]"),
        ({"method": "auto", "candidates": ["procrustes", "nope"]}, errors.InvalidArgument, "unknown candidates ['nope']"),
    ],
)
def test_bad_fit_requests_invalid_argument(client: Client, rng, kwargs, error, fragment):
    upload_pair(client, rng.standard_normal((40, 4)), rng.standard_normal((40, 4)))
    with pytest.raises(error) as info:
        client.fit_alignment("a", "b", anchor_set="s", **kwargs)
    assert fragment in info.value.details
    assert client.list_fits() == []


def test_fit_preconditions_and_not_found(client: Client, rng):
    upload_pair(client, rng.standard_normal((9, 4)), rng.standard_normal((9, 4)))
    with pytest.raises(errors.FailedPrecondition, match="holds 9 anchors embedded by both 'a' and 'b'"):
        client.fit_alignment("a", "b", anchor_set="s")
    with pytest.raises(errors.NotFound, match="anchor set 'nope'"):
        client.fit_alignment("a", "b", anchor_set="nope")
    with pytest.raises(errors.NotFound, match="model 'ghost'"):
        client.fit_alignment("a", "ghost", anchor_set="s")
    with pytest.raises(errors.InvalidArgument, match="different models"):
        client.fit_alignment("a", "a", anchor_set="s")
    with pytest.raises(errors.NotFound):
        client.export_fit("0000")


def test_transform_input_errors(client: Client, rng):
    X, Y = rng.standard_normal((60, 4)), rng.standard_normal((60, 4))
    upload_pair(client, X, Y, names=("a", "b"), normalize=True)
    fit = client.fit_alignment("a", "b", anchor_set="s", method="procrustes")
    with pytest.raises(errors.InvalidArgument, match="dimension 5"):
        client.transform(np.ones((2, 5)), source="a", target="b")
    with pytest.raises(errors.InvalidArgument, match="NaN or Inf"):
        client.transform(np.full((2, 4), np.nan), source="a", target="b")
    with pytest.raises(errors.InvalidArgument, match="zero norm"):
        client.transform(np.zeros((1, 4)), source="a", target="b")
    with pytest.raises(errors.InvalidArgument, match="no rows"):
        client.transform(np.zeros((0, 4)), source="a", target="b")
    with pytest.raises(errors.InvalidArgument, match="maps 'a' -> 'b'"):
        client.transform(np.ones((1, 4)), source="b", fit_id=fit.id)
    Z = client.transform(X[:10] * 7, source="a", target="b")
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1, rtol=1e-5)  # target normalises outputs


def test_fits_persist_across_restart(tmp_path, rng):
    from convergent.server.rpc.app import ConvergentServer
    from convergent.server.settings import ServerSettings

    settings = ServerSettings(host="127.0.0.1", port=0, data_dir=tmp_path)
    X, Y = rng.standard_normal((80, 6)), rng.standard_normal((80, 6))
    with ConvergentServer(settings) as server, Client(server.address) as client:
        upload_pair(client, X, Y)
        fit = client.fit_alignment("a", "b", anchor_set="s", method="procrustes")
        before = client.transform(X[:5], source="a", target="b")
    with ConvergentServer(settings) as server, Client(server.address) as client:
        assert client.get_fit(fit.id).metrics == fit.metrics
        np.testing.assert_array_equal(client.transform(X[:5], source="a", target="b"), before)


def test_params_struct_of_wrong_kind_over_raw_grpc(server):
    from google.protobuf.struct_pb2 import Struct

    from convergent.v1 import alignment_pb2, alignment_pb2_grpc

    params = Struct()
    params.update({"alpha": [1, 2]})
    channel = grpc.insecure_channel(server.address)
    stub = alignment_pb2_grpc.AlignmentServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.FitAlignment(alignment_pb2.FitAlignmentRequest(source="a", target="b", anchor_set="s", method="ridge", params=params), timeout=5)
    channel.close()
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def _stats_counts(server) -> tuple[int, int, int]:  # noqa: ANN001
    cache = server._backend.alignment.stats_cache
    return cache.full_reads, cache.stored_reads, cache.incremental_updates


def _stored_pair_stats(server) -> list[tuple]:  # noqa: ANN001
    import sqlalchemy as sa

    from convergent.server.storage.schema import pair_stats

    with server.store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(pair_stats.c.anchor_set, pair_stats.c.data_version, pair_stats.c.n))]


def test_statistics_are_stored_so_a_restart_fits_warm(start_server, rng):
    n, d = 300, 12
    X = rng.standard_normal((n, d))
    Y = X @ rng.standard_normal((d, d)) + 0.1 * rng.standard_normal((n, d))
    ids = [f"id{i:04d}" for i in range(n)]
    first = start_server()
    with Client(first.address) as client:
        upload_pair(client, X[:200], Y[:200], ids=ids[:200])
        before = client.fit_alignment("a", "b", anchor_set="s", method="ridge", alpha=1.0)
    assert _stats_counts(first) == (1, 0, 0) and _stored_pair_stats(first) == [("s", 2, 200)]
    first.stop(grace=0.5)
    second = start_server(data_dir=first.settings.data_dir)
    with Client(second.address) as client:
        again = client.fit_alignment("a", "b", anchor_set="s", method="ridge", alpha=1.0)
        np.testing.assert_allclose(client.export_fit(again.id)["W"], client.export_fit(before.id)["W"], rtol=1e-12)
        assert _stats_counts(second) == (0, 1, 0)  # from the database, no pair read
        # New anchors after a restart: stored statistics + the new pairs only.
        upload_pair(client, X[200:], Y[200:], ids=ids[200:])
        second.stop(grace=0.5)
    third = start_server(data_dir=first.settings.data_dir)
    with Client(third.address) as client:
        grown = client.fit_alignment("a", "b", anchor_set="s", method="ridge", alpha=1.0)
        grown_W = client.export_fit(grown.id)["W"]
        assert _stats_counts(third) == (0, 1, 1) and grown.metrics["n_anchors"] == n
        assert _stored_pair_stats(third) == [("s", 4, n)]
        # An overwrite or an erasure deletes the stored statistics in its own transaction (they
        # summarise the old vectors); the next fit reads every pair again.
        client.erase(["id0007"])
        assert _stored_pair_stats(third) == []
        client.fit_alignment("a", "b", anchor_set="s", method="ridge", alpha=1.0)
        assert _stats_counts(third)[0] == 1 and _stored_pair_stats(third) == [("s", 5, n - 1)]
    fresh = start_server()
    with Client(fresh.address) as other:  # the same pairs from scratch: the same map
        upload_pair(other, X, Y, ids=ids)
        reference = other.fit_alignment("a", "b", anchor_set="s", method="ridge", alpha=1.0)
        np.testing.assert_allclose(other.export_fit(reference.id)["W"], grown_W, rtol=1e-9)


def test_stored_statistics_are_shared_by_replicas(start_server, fresh_postgres, rng):
    X = rng.standard_normal((150, 6))
    a, b = start_server(database_url=fresh_postgres), start_server(database_url=fresh_postgres)
    with Client(a.address) as ca, Client(b.address) as cb:
        upload_pair(ca, X, X @ rng.standard_normal((6, 6)))
        ca.fit_alignment("a", "b", anchor_set="s", method="procrustes")
        cb.fit_alignment("a", "b", anchor_set="s", method="procrustes")
    assert _stats_counts(a)[:2] == (1, 0) and _stats_counts(b)[:2] == (0, 1)


def test_statistics_computed_before_a_rewrite_are_not_stored(tmp_path):
    """A fit that read the set before a concurrent delete must not store what it computed."""
    from convergent.server.storage.sql import SqlStore

    store = SqlStore(f"sqlite:///{tmp_path / 's.sqlite3'}")
    try:
        a, b = store.insert_model("t", "a", 2, False), store.insert_model("t", "b", 2, False)
        for model in (a, b):
            store.write_anchors("t", "s", model, [(["x", "y", "z"], np.eye(3, 2))], overwrite=False)
        arrays = {"sum_x": np.zeros(2), "sum_y": np.zeros(2), "xtx": np.eye(2), "xty": np.eye(2), "yty": np.eye(2)}
        key = ("s", "a", a.version, "b", b.version)
        store.delete_anchors("t", "s", "a", ["x"])  # version 3, rewritten at 3
        assert store.pair_stats.save("t", key, 2, 3, arrays) is False  # computed at 2: holds 'x'
        assert store.pair_stats.save("t", key, 3, 2, arrays) is True
        assert store.pair_stats.save("t", key, 3, 2, arrays) is False  # not newer than the stored
        version, n, loaded = store.pair_stats.load("t", key)
        assert (version, n) == (3, 2) and np.array_equal(loaded["xtx"], np.eye(2))
    finally:
        store.close()


def test_fit_over_the_memory_limit_is_resource_exhausted(start_server):
    """The estimate is checked before any anchor is read: nothing is allocated, nothing stored."""
    server = start_server(max_fit_bytes=64 * 2**20)
    with Client(server.address, timeout=20) as client:
        client.register_model("wide", dim=2048)
        client.register_model("other", dim=2048)
        with pytest.raises(errors.ResourceExhausted, match="needs about .* GiB, over this server's limit of 0.1 GiB"):
            client.fit_alignment("wide", "other", anchor_set="none", method="ridge")
        with pytest.raises(errors.ResourceExhausted, match="max_fit_bytes"):
            client.fit_shared_space(["wide", "other"], anchor_set="none")
        assert client.list_fits() == []
        client.register_model("small", dim=8)
        client.register_model("small2", dim=8)
        with pytest.raises(errors.NotFound):  # within the limit: the request goes on to its anchors
            client.fit_alignment("small", "small2", anchor_set="none", method="ridge")
