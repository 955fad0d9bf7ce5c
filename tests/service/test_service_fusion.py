"""Federated inference: several parties' probes fused against one gallery."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.client import Client, errors
from convergent.server.datasets import load_faces, synthetic_identities


@pytest.fixture
def server(gallery_server):
    """Every test here runs with galleries in process and in Milvus (milvus-lite), on both databases."""
    return gallery_server


def rank1(result, truth) -> float:
    return float(np.mean([row[0] == t for row, t in zip(result.ids, truth)]))


def test_fusion_beats_each_party_on_synthetic_identities(client: Client):
    data = synthetic_identities(n_people=60, photos_per_person=10, dims={"gal": 64, "p1": 48, "p2": 48}, noise=0.9, seed=3)
    labels = data.labels
    anchors = np.flatnonzero(labels < 30)
    unseen = np.flatnonzero(labels >= 30)
    gallery = np.array([unseen[labels[unseen] == p][0] for p in range(30, 60)])
    probes = np.setdiff1d(unseen, gallery)
    for model, X in data.vectors.items():
        client.register_model(model, dim=X.shape[1])
        client.upload_anchors(model, anchor_set="s", ids=[data.ids[i] for i in anchors], vectors=X[anchors])
    for party in ("p1", "p2"):
        client.fit_alignment(party, "gal", anchor_set="s")
    client.enroll(gallery="g", model="gal", ids=[f"id{labels[i]}" for i in gallery], vectors=data.vectors["gal"][gallery])
    truth = [f"id{labels[i]}" for i in probes]
    solo = {p: rank1(client.identify(gallery="g", vectors=data.vectors[p][probes], model=p, k=1), truth) for p in ("p1", "p2")}
    fused = client.identify(gallery="g", vectors={p: data.vectors[p][probes] for p in ("p1", "p2")}, k=3)
    print(f"\nsynthetic: solo {solo}, fused {rank1(fused, truth):.3f}, weights {fused.parties}")
    assert fused.route == "fused" and sorted(fused.contributors) == ["p1", "p2"]
    assert all(source.startswith("out-of-fold combination on 300 anchors of 's'") for source in fused.weight_sources.values())
    assert fused.scores.shape == (len(probes), 3) and np.all(np.diff(fused.scores, axis=1) <= 0)
    assert rank1(fused, truth) > max(solo.values())


def test_fusion_errors(client: Client, rng):
    client.register_model("m", dim=4)
    client.register_model("other", dim=4)
    client.enroll(gallery="g", model="m", ids=["a", "b"], vectors=rng.standard_normal((2, 4)))
    with pytest.raises(errors.InvalidArgument, match="same number of probes"):
        client.identify(gallery="g", vectors={"m": np.ones((2, 4)), "other": np.ones((3, 4))})
    with pytest.raises(errors.FailedPrecondition, match="no fit from 'other' to 'm'"):
        client.identify(gallery="g", vectors={"m": np.ones((2, 4)), "other": np.ones((2, 4))})
    with pytest.raises(errors.InvalidArgument, match="k must be"):
        client.identify(gallery="g", vectors={"m": np.ones((2, 4))}, k=0)
    single = client.identify(gallery="g", vectors={"m": np.ones((2, 4))}, k=5)
    assert single.parties == {"m": 1.0} and single.scores.shape == (2, 2)


# The scores do not depend on the backend (the other fusion tests run on every one): this one
# runs on SQLite with the in-process index.
@pytest.mark.realdata
@pytest.mark.parametrize("gallery_server", ["sqlite"], indirect=True)
def test_fusion_on_real_faces_with_a_weak_third_party(client: Client, realdata):
    """MobileFace gallery (one photo per person of people 20-39, 20 seeded draws of which photo),
    probed by dlib and FaceNet parties; a weak third party embeds raw pixels (PCA-48)."""
    faces = load_faces(realdata)
    labels = faces.labels
    anchors = np.flatnonzero(labels < 20)
    unseen = np.flatnonzero(labels >= 20)
    with np.load(realdata / "att_faces.npz") as data:
        pixels = data["images"].reshape(len(labels), -1).astype(np.float64)
    mean = pixels[anchors].mean(0)
    components = np.linalg.svd(pixels[anchors] - mean, full_matrices=False)[2][:48]
    views = {**faces.vectors, "pixels": ((pixels - mean) @ components.T).astype(np.float32)}
    for model, X in views.items():
        client.register_model(model, dim=X.shape[1])
        client.upload_anchors(model, anchor_set="att", ids=[faces.ids[i] for i in anchors], vectors=X[anchors])
    for party in ("dlib", "facenet", "pixels"):
        client.fit_alignment(party, "mobileface", anchor_set="att")

    results: dict[str, list[float]] = {}
    weights = {}
    for draw in range(20):
        rng = np.random.default_rng(draw)
        gallery = np.array([rng.choice(unseen[labels[unseen] == p]) for p in range(20, 40)])
        probes = np.setdiff1d(unseen, gallery)
        name = "mobileface"  # re-enrolled each draw (one collection on Milvus, changed in place)
        enrolled = [f"person{labels[i]}" for i in gallery]
        if draw:
            assert client.remove(gallery=name, ids=enrolled) == len(enrolled)
        client.enroll(gallery=name, model="mobileface", ids=enrolled, vectors=views["mobileface"][gallery])
        truth = [f"person{label}" for label in labels[probes]]
        for party in ("dlib", "facenet", "pixels"):
            r = client.identify(gallery=name, vectors=views[party][probes], model=party, k=1)
            results.setdefault(party, []).append(rank1(r, truth))
        for combo in (("dlib", "facenet"), ("dlib", "facenet", "pixels")):
            r = client.identify(gallery=name, vectors={p: views[p][probes] for p in combo}, k=1)
            results.setdefault("+".join(combo), []).append(rank1(r, truth))
            weights["+".join(combo)] = r.parties
    mean = {key: float(np.mean(v)) for key, v in results.items()}
    print("\nMobileFace gallery, mean rank-1 over 20 draws:", {k: round(v, 3) for k, v in mean.items()})
    print("weights:", weights)
    best_solo = max(mean["dlib"], mean["facenet"])
    assert mean["dlib+facenet"] > best_solo
    assert mean["dlib+facenet+pixels"] > best_solo  # the weak party does not drag fusion down
    assert mean["dlib+facenet+pixels"] >= mean["dlib+facenet"] - 0.01
    assert all(w > 0 for w in weights["dlib+facenet"].values())
    assert weights["dlib+facenet+pixels"]["pixels"] < weights["dlib+facenet+pixels"]["dlib"]


@pytest.mark.parametrize("gallery_server", ["sqlite"], indirect=True)  # the weights do not depend on the backend
def test_fusion_weights_fall_back_to_per_party_r2_where_the_combination_does_not_apply(client: Client, rng):
    """Routes on different anchor sets, or a map whose per-fold refits are slow (sparse), keep
    each party's held-out R^2 weight."""
    G = rng.standard_normal((120, 8))
    views = {"gal": G, "p1": G @ rng.standard_normal((8, 8)) + 0.1 * rng.standard_normal((120, 8)),
             "p2": G @ rng.standard_normal((8, 8)) + 0.1 * rng.standard_normal((120, 8))}
    for model, X in views.items():
        client.register_model(model, dim=8)
        for aset in ("s", "t"):
            client.upload_anchors(model, anchor_set=aset, ids=[f"{aset}{i}" for i in range(100)], vectors=X[:100])
    client.enroll(gallery="g", model="gal", ids=[f"x{i}" for i in range(20)], vectors=G[100:])
    probes = {p: views[p][100:] for p in ("p1", "p2")}
    client.fit_alignment("p1", "gal", anchor_set="s", method="ridge")
    client.fit_alignment("p2", "gal", anchor_set="t", method="ridge")
    other_sets = client.identify(gallery="g", vectors=probes, k=1)
    assert all(source.startswith("held-out r2_variance_weighted") for source in other_sets.weight_sources.values())
    client.fit_alignment("p2", "gal", anchor_set="s", method="sparse")
    sparse = client.identify(gallery="g", vectors=probes, k=1)
    assert all(source.startswith("held-out r2_variance_weighted") for source in sparse.weight_sources.values())
    client.fit_alignment("p2", "gal", anchor_set="s", method="ridge")
    combined = client.identify(gallery="g", vectors=probes, k=1)
    assert all(source.startswith("out-of-fold combination on 100 anchors of 's'") for source in combined.weight_sources.values())
    assert [row[0] for row in combined.ids] == [f"x{i}" for i in range(20)]


@pytest.mark.realdata
@pytest.mark.parametrize("gallery_server", ["sqlite"], indirect=True)
def test_no_graded_weak_party_drags_fusion_down(client: Client, realdata):
    """Issue 16's requirement, default scoring, the issue's split (anchors people 0-19, a
    MobileFace gallery of people 20-39, 20 seeded draws): adding any one of 14 graded weak
    parties (noisy copies at four SNRs, PCA-4/8 of each strong model, pixels, MobileFace's own
    PCA-3) to dlib + FaceNet costs at most 0.02 mean rank-1, and dlib + FaceNet beats each
    party alone. The other split: benchmarks/fusion_weak_parties.py --split 1 (-0.017 there)."""
    from convergent.server.datasets import graded_weak_parties

    faces = load_faces(realdata)
    labels = faces.labels
    anchors, unseen = np.flatnonzero(labels < 20), np.flatnonzero(labels >= 20)
    with np.load(realdata / "att_faces.npz") as data:
        pixels = data["images"].reshape(len(labels), -1).astype(np.float64)
    weak = graded_weak_parties(faces, pixels, anchors, "mobileface", seed=0)
    views = {**{m: faces.vectors[m] for m in ("dlib", "facenet", "mobileface")}, **weak}
    for model, X in views.items():
        client.register_model(model, dim=X.shape[1])
        client.upload_anchors(model, anchor_set="att", ids=[faces.ids[i] for i in anchors], vectors=X[anchors])
    for model in views:
        if model != "mobileface":
            client.fit_alignment(model, "mobileface", anchor_set="att")
    combos = [("dlib",), ("facenet",), ("dlib", "facenet"), *[("dlib", "facenet", w) for w in weak]]
    results: dict[tuple, list[float]] = {}
    for draw in range(20):
        rng = np.random.default_rng(draw)
        gallery = np.array([rng.choice(unseen[labels[unseen] == p]) for p in range(20, 40)])
        probes = np.setdiff1d(unseen, gallery)
        truth = [f"person{label}" for label in labels[probes]]
        name = f"draw{draw}"
        client.enroll(gallery=name, model="mobileface", ids=[f"person{labels[i]}" for i in gallery],
                      vectors=views["mobileface"][gallery])
        for combo in combos:
            if len(combo) == 1:
                r = client.identify(gallery=name, vectors=views[combo[0]][probes], model=combo[0], k=1)
            else:
                r = client.identify(gallery=name, vectors={p: views[p][probes] for p in combo}, k=1)
            results.setdefault(combo, []).append(rank1(r, truth))
    mean = {combo: float(np.mean(v)) for combo, v in results.items()}
    base = mean[("dlib", "facenet")]
    drops = {combo[2]: round(mean[combo] - base, 3) for combo in combos if len(combo) == 3}
    print(f"\ndlib+FaceNet {base:.3f}, dlib {mean[('dlib',)]:.3f}, FaceNet {mean[('facenet',)]:.3f}; drops {drops}")
    assert base > max(mean[("dlib",)], mean[("facenet",)])
    assert min(drops.values()) >= -0.02, drops
