"""Galleries, identify, verify and calibrate through a real server."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from convergent.client import Client, errors
from convergent.v1 import galleries_pb2, galleries_pb2_grpc
from convergent.wire import encode_matrix


@pytest.fixture
def server(gallery_server):
    """Every test here runs with galleries in process and in Milvus (milvus-lite), on both databases."""
    return gallery_server


def unit(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


@pytest.fixture
def two_models(client: Client, rng):
    """Models a (16-d) and b (16-d, a rotated + noise); 600 anchors; an a -> b fit."""
    d, n = 16, 600
    R = np.linalg.qr(rng.standard_normal((d, d)))[0]
    X = rng.standard_normal((n, d))
    Y = X @ R.T + 0.05 * rng.standard_normal((n, d))
    ids = [f"anc{i}" for i in range(n)]
    for name, data in (("a", X), ("b", Y)):
        client.register_model(name, dim=d)
        client.upload_anchors(name, anchor_set="s", ids=ids, vectors=data)
    fit = client.fit_alignment("a", "b", anchor_set="s", method="procrustes")
    return R, fit


@pytest.mark.parametrize("index", ["exact", "hnsw"])
def test_identify_across_models(client: Client, two_models, rng, index):
    R, fit = two_models
    people = rng.standard_normal((300, 16))
    size = client.enroll(gallery="staff", model="b", ids=[f"p{i}" for i in range(300)], vectors=people @ R.T, index=index)
    assert size == 300
    probes = people[:50] + 0.05 * rng.standard_normal((50, 16))
    result = client.identify(gallery="staff", vectors=probes, model="a", k=3)
    assert result.route == f"fit:{fit.id}"
    assert result.scores.shape == (50, 3) and len(result.ids) == 50
    assert [row[0] for row in result.ids] == [f"p{i}" for i in range(50)]
    assert np.all(np.diff(result.scores, axis=1) <= 0)  # best first
    # Same-model probes are searched directly.
    direct = client.identify(gallery="staff", vectors=people[:5] @ R.T, model="b", k=1)
    assert direct.route == "direct" and [r[0] for r in direct.ids] == [f"p{i}" for i in range(5)]
    np.testing.assert_allclose(direct.scores[:, 0], 1.0, atol=1e-5)


def test_identify_matches_brute_force_and_k_larger_than_gallery(client: Client, rng):
    client.register_model("m", dim=8)
    G = rng.standard_normal((7, 8))
    client.enroll(gallery="g", model="m", ids=list("abcdefg"), vectors=G)
    Q = rng.standard_normal((4, 8))
    result = client.identify(gallery="g", vectors=Q, model="m", k=50)
    assert result.scores.shape == (4, 7)
    expected = np.argsort(-(unit(Q) @ unit(G).T), axis=1)
    assert result.ids == [[list("abcdefg")[j] for j in row] for row in expected]


def test_enroll_remove_count_list_and_persistence(start_server, gallery_backend, rng):
    server = start_server(gallery_backend=gallery_backend)
    X = rng.standard_normal((20, 4))
    with Client(server.address) as client:
        client.register_model("m", dim=4)
        assert client.enroll(gallery="g", model="m", ids=[f"x{i}" for i in range(10)], vectors=X[:10], index="hnsw") == 10
        with pytest.raises(errors.AlreadyExists, match="'x3' is already enrolled"):
            client.enroll(gallery="g", model="m", ids=["x10", "x3"], vectors=X[10:12])
        with pytest.raises(errors.AlreadyExists, match="appears twice"):
            client.enroll(gallery="g", model="m", ids=["y", "y"], vectors=X[10:12])
        assert client.count_gallery("g") == 10  # nothing of the failed enrolls
        assert client.enroll(gallery="g", model="m", ids=[f"x{i}" for i in range(10, 20)], vectors=X[10:]) == 20
        assert client.remove(gallery="g", ids=["x0", "x1", "nope"]) == 2
        assert [(g.name, g.model, g.index, g.size) for g in client.list_galleries()] == [("g", "m", "hnsw", 18)]
        before = client.identify(gallery="g", vectors=X[:3], model="m", k=2)
        assert "x0" not in before.ids[0]
    server.stop(grace=0.5)
    restarted = start_server(data_dir=server.settings.data_dir, gallery_backend=gallery_backend)
    with Client(restarted.address) as client:
        after = client.identify(gallery="g", vectors=X[:3], model="m", k=2)
        assert after.ids == before.ids
        np.testing.assert_allclose(after.scores, before.scores, atol=1e-6)
        client.delete_gallery("g")
        assert client.list_galleries() == []


def test_gallery_errors(client: Client, two_models, server):
    client.enroll(gallery="g", model="b", ids=["p"], vectors=np.ones((1, 16)))
    with pytest.raises(errors.FailedPrecondition, match="gallery 'g' holds model 'b'"):
        client.enroll(gallery="g", model="a", ids=["q"], vectors=np.ones((1, 16)))
    for k in (0, -1, 10**6):
        channel = grpc.insecure_channel(server.address)
        stub = galleries_pb2_grpc.GalleryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Identify(galleries_pb2.IdentifyRequest(gallery="g", model="b", k=max(k, 0), vectors=encode_matrix(np.ones((1, 16)))), timeout=5)
        channel.close()
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "k must be in 1..10000" in info.value.details()
    with pytest.raises(errors.NotFound, match="gallery 'nope'"):
        client.identify(gallery="nope", vectors=np.ones((1, 16)), model="a")
    with pytest.raises(errors.InvalidArgument, match="dimension 3"):
        client.identify(gallery="g", vectors=np.ones((1, 3)), model="a")
    client.register_model("c", dim=16)
    with pytest.raises(errors.FailedPrecondition, match="no fit from 'c' to 'b'"):
        client.identify(gallery="g", vectors=np.ones((1, 16)), model="c")
    with pytest.raises(errors.InvalidArgument, match="index must be one of"):
        client.enroll(gallery="h", model="b", ids=["p"], vectors=np.ones((1, 16)), index="lsh")
    with pytest.raises(errors.InvalidArgument, match="NaN or Inf"):
        client.enroll(gallery="h", model="b", ids=["p"], vectors=np.full((1, 16), np.nan))
    assert [g.name for g in client.list_galleries()] == ["g"]


def test_verify_anchor_calibration_and_labelled_pairs(client: Client, two_models, rng):
    R, fit = two_models
    n = 400
    people = rng.standard_normal((n, 16))
    a = people + 0.05 * rng.standard_normal((n, 16))
    b_same = people @ R.T
    b_other = rng.standard_normal((n, 16)) @ R.T
    v = client.verify(a=np.vstack([a, a]), a_model="a", b=np.vstack([b_same, b_other]), b_model="b", far=1e-2)
    # Every anchor is a different item: nothing looks like a repeated subject, nothing is excluded.
    assert v.calibration == "anchors-distinct" and v.n_excluded == 0 and v.route == f"fit:{fit.id}"
    assert "every pair of different anchors" in v.calibration_pairs
    assert v.n_genuine == 600 and v.n_impostor > 1e4
    assert v.far_calibration <= 1e-2 and v.far_requested == 1e-2
    assert v.accept[:n].mean() > 0.95 and v.accept[n:].mean() < 0.03
    assert np.all(v.accept == (v.scores >= v.threshold))

    with pytest.raises(errors.FailedPrecondition, match="impostor"):
        client.verify(a=a[:2], a_model="a", b=b_same[:2], b_model="b", far=1e-6)
    for far in (0.0, 1.0, -0.5):
        with pytest.raises(errors.InvalidArgument, match="far must be in"):
            client.verify(a=a[:2], a_model="a", b=b_same[:2], b_model="b", far=far)
    with pytest.raises(errors.InvalidArgument, match="pair row by row"):
        client.verify(a=a[:3], a_model="a", b=b_same[:2], b_model="b")

    same = np.r_[np.ones(200, bool), np.zeros(2000, bool)]
    A = np.vstack([a[:200], rng.standard_normal((2000, 16))])
    B = np.vstack([b_same[:200], rng.standard_normal((2000, 16))])
    assert client.calibrate(a=A, a_model="a", b=B, b_model="b", same=same) == {"genuine": 200, "impostor": 2000}
    labelled = client.verify(a=a, a_model="a", b=b_same, b_model="b", far=1e-2)
    assert labelled.calibration == "labelled" and (labelled.n_genuine, labelled.n_impostor) == (200, 2000)
    with pytest.raises(errors.InvalidArgument, match="both genuine"):
        client.calibrate(a=A[:5], a_model="a", b=B[:5], b_model="b", same=np.ones(5, bool))


@pytest.mark.parametrize("gallery_server", ["sqlite"], indirect=True)  # verify does not touch galleries
def test_verify_in_both_spaces_when_both_fits_exist(client: Client, two_models, rng):
    R, fit = two_models
    people = rng.standard_normal((300, 16))
    A = np.vstack([people, people]) + 0.3 * rng.standard_normal((600, 16))
    B = np.vstack([people @ R.T, rng.standard_normal((300, 16)) @ R.T]) + 0.3 * rng.standard_normal((600, 16))
    before = client.verify(a=A, a_model="a", b=B, b_model="b", far=1e-2)
    assert before.direction == "a_to_b" and "no fit 'b' -> 'a'" in before.direction_reason
    with pytest.raises(errors.FailedPrecondition, match="direction \"both\" needs a fit 'b' -> 'a'"):
        client.verify(a=A, a_model="a", b=B, b_model="b", far=1e-2, direction="both")
    with pytest.raises(errors.InvalidArgument, match="unknown direction 'sideways'"):
        client.verify(a=A, a_model="a", b=B, b_model="b", direction="sideways")

    back = client.fit_alignment("b", "a", anchor_set="s", method="procrustes")
    v = client.verify(a=A, a_model="a", b=B, b_model="b", far=1e-2)
    assert v.direction == "both" and v.route == f"fit:{fit.id} + fit:{back.id}"
    assert "in each direction, scored in both models' spaces" in v.calibration_pairs
    a_in_b = unit(client.transform(A, source="a", target="b"))
    b_in_a = unit(client.transform(B, source="b", target="a"))
    one_way_cos = np.sum(a_in_b * unit(B), axis=1)
    np.testing.assert_allclose(v.scores, 0.5 * (one_way_cos + np.sum(unit(A) * b_in_a, axis=1)), atol=1e-5)
    # the same scores and threshold whichever model is called a
    swapped = client.verify(a=B, a_model="b", b=A, b_model="a", far=1e-2)
    assert swapped.direction == "both"
    np.testing.assert_allclose(swapped.scores, v.scores, atol=1e-5)
    assert swapped.threshold == pytest.approx(v.threshold, abs=1e-5)
    one_way = client.verify(a=A, a_model="a", b=B, b_model="b", far=1e-2, direction="a_to_b")
    assert one_way.route == f"fit:{fit.id}" and one_way.direction_reason == "requested"
    np.testing.assert_allclose(one_way.scores, one_way_cos, atol=1e-5)
    assert one_way.threshold == pytest.approx(before.threshold, abs=1e-6)
    report = client.verification_report(a_model="a", b_model="b")
    assert report.direction == "both" and report.points[0].threshold == v.threshold
    assert client.verification_report(a_model="a", b_model="b", direction="a_to_b").points[0].threshold == one_way.threshold

    # labelled pairs given the other way round serve the symmetric score
    same = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    client.calibrate(a=B, a_model="b", b=A, b_model="a", same=same)
    assert client.verify(a=A, a_model="a", b=B, b_model="b", far=0.1).calibration == "labelled"
    assert client.verify(a=A, a_model="a", b=B, b_model="b", far=0.1, direction="a_to_b").calibration != "labelled"

    # a newer fit b -> a on another anchor set is not paired with the a -> b fit
    ids = [f"t{i}" for i in range(100)]
    X = rng.standard_normal((100, 16))
    client.upload_anchors("a", anchor_set="t", ids=ids, vectors=X)
    client.upload_anchors("b", anchor_set="t", ids=ids, vectors=X @ R.T)
    client.fit_alignment("b", "a", anchor_set="t", method="procrustes")
    other_set = client.verify(a=A, a_model="a", b=B, b_model="b", far=1e-2)
    assert other_set.direction == "a_to_b" and "anchor set 't'" in other_set.direction_reason


def test_same_model_verify_needs_labelled_pairs(client: Client, rng):
    client.register_model("m", dim=4)
    X = rng.standard_normal((6, 4))
    with pytest.raises(errors.FailedPrecondition, match="against itself"):
        client.verify(a=X, a_model="m", b=X, b_model="m", far=0.1)
    same = np.r_[np.ones(30, bool), np.zeros(300, bool)]
    A = rng.standard_normal((330, 4))
    client.calibrate(a=A, a_model="m", b=np.where(same[:, None], A, rng.standard_normal((330, 4))), b_model="m", same=same)
    v = client.verify(a=X, a_model="m", b=X, b_model="m", far=0.1)
    assert v.route == "direct" and v.accept.all()


def test_identify_through_a_chosen_fit(client: Client, two_models, rng):
    R, fit = two_models
    other = client.fit_alignment("a", "b", anchor_set="s", method="ridge")
    client.enroll(gallery="g", model="b", ids=["p0", "p1"], vectors=rng.standard_normal((2, 16)))
    assert client.identify(gallery="g", vectors=np.ones((1, 16)), model="a").route == f"fit:{other.id}"
    assert client.identify(gallery="g", vectors=np.ones((1, 16)), model="a", fit_id=fit.id).route == f"fit:{fit.id}"
    reverse = client.fit_alignment("b", "a", anchor_set="s", method="ridge")
    with pytest.raises(errors.InvalidArgument, match="maps 'b' -> 'a'"):
        client.identify(gallery="g", vectors=np.ones((1, 16)), model="a", fit_id=reverse.id)
