"""Real embeddings through the service (skipped without ../shared/realdata).

Faces (AT&T, 40 people x 10 photos): anchors = all photos of people 0-19, unlabeled; gallery =
the first photo of each of people 20-39 embedded by the target model; probes = their other 9
photos embedded by the source model and mapped by the service; rank-1 identification.
Text (WordNet glosses): anchors = the first n rows, MiniLM -> mpnet; top-1 retrieval of rows
1500-2499 among each other (1000-way).
"""

from __future__ import annotations

import numpy as np
import pytest

from convergent.client import Client
from convergent.server.datasets import load_faces, load_text
from convergent.server.align import ProcrustesMap, RidgeMap

pytestmark = pytest.mark.realdata


def unit(A: np.ndarray) -> np.ndarray:
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def face_rank1(mapped: np.ndarray, gallery: np.ndarray, probe_labels, gallery_labels) -> float:
    best = np.argmax(unit(mapped) @ unit(gallery).T, axis=1)
    return float(np.mean(np.asarray(gallery_labels)[best] == probe_labels))


def text_top1(mapped: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(np.argmax(unit(mapped) @ unit(target).T, axis=1) == np.arange(len(target))))


def offline_sweep(X: np.ndarray, Y: np.ndarray, score) -> dict[str, float]:
    """Best-case reference: maps fitted in-process on the same anchors, scored on unseen items."""
    Xn, Yn = unit(X), unit(Y)
    scale = float(np.trace(np.cov(Xn.T)))
    maps = {f"ridge {a:g}": RidgeMap(alphas=[a * scale * len(Xn) / Xn.shape[1]]) for a in (1e-3, 1e-2, 1e-1, 1)}
    maps["procrustes"] = ProcrustesMap(scale=False)
    maps["procrustes scaled"] = ProcrustesMap(scale=True)
    return {name: score(m.fit(Xn, Yn)) for name, m in maps.items()}


@pytest.fixture(scope="module")
def faces(realdata):
    return load_faces(realdata)


@pytest.mark.parametrize(("source", "target"), [("dlib", "facenet"), ("facenet", "dlib")])
def test_faces_auto_close_to_best_offline_map(client: Client, faces, source, target):
    labels = faces.labels
    anchors = np.flatnonzero(labels < 20)
    unseen = np.flatnonzero(labels >= 20)
    gallery = np.array([unseen[labels[unseen] == p][0] for p in range(20, 40)])
    probes = np.setdiff1d(unseen, gallery)
    for model in (source, target):
        client.register_model(model, dim=faces.vectors[model].shape[1])
        client.upload_anchors(model, anchor_set="att", ids=[faces.ids[i] for i in anchors], vectors=faces.vectors[model][anchors])
    fit = client.fit_alignment(source, target, anchor_set="att")
    mapped = client.transform(faces.vectors[source][probes], source=source, target=target)
    G = faces.vectors[target][gallery]
    service = face_rank1(mapped, G, labels[probes], labels[gallery])
    unmapped = face_rank1(faces.vectors[source][probes], G, labels[probes], labels[gallery])
    sweep = offline_sweep(
        faces.vectors[source][anchors], faces.vectors[target][anchors],
        lambda m: face_rank1(m.transform(unit(faces.vectors[source][probes])), G, labels[probes], labels[gallery]),
    )
    print(f"\n{source}->{target}: auto chose {fit.method} {fit.params}: rank-1 {service:.3f}; "
          f"unmapped {unmapped:.3f}; offline {({k: round(v, 3) for k, v in sweep.items()})}")
    assert unmapped < 0.2  # the spaces really are incompatible without a map
    assert service >= max(sweep.values()) - 0.02


@pytest.fixture(scope="module")
def text(realdata):
    return load_text(realdata)


def test_text_auto_close_to_best_offline_map(client: Client, text):
    X, Y = text.vectors["minilm_l6"], text.vectors["mpnet"]
    for model, data in (("minilm_l6", X), ("mpnet", Y)):
        client.register_model(model, dim=data.shape[1])
        client.upload_anchors(model, anchor_set="glosses", ids=text.ids[:400], vectors=data[:400])
    fit = client.fit_alignment("minilm_l6", "mpnet", anchor_set="glosses")
    test = slice(1500, 2500)
    service = text_top1(client.transform(X[test], source="minilm_l6", target="mpnet"), Y[test])
    sweep = offline_sweep(X[:400], Y[:400], lambda m: text_top1(m.transform(unit(X[test])), Y[test]))
    print(f"\nminilm->mpnet, 400 anchors: auto chose {fit.method}: top-1 {service:.3f}; "
          f"offline {({k: round(v, 3) for k, v in sweep.items()})}")
    assert service >= max(sweep.values()) - 0.02


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)  # compute-bound: the database adds nothing
def test_text_no_dip_when_anchor_count_passes_the_dimension(client: Client, text):
    """Least squares collapses near n = d = 384 (interpolation threshold); the service must not."""
    X, Y = text.vectors["minilm_l6"], text.vectors["mpnet"]
    client.register_model("minilm_l6", dim=384)
    client.register_model("mpnet", dim=768)
    test = slice(1500, 2500)
    counts = (192, 288, 384, 480, 768, 1200)
    service, lstsq = {}, {}
    for n in counts:
        name = f"glosses-{n}"
        client.upload_anchors("minilm_l6", anchor_set=name, ids=text.ids[:n], vectors=X[:n])
        client.upload_anchors("mpnet", anchor_set=name, ids=text.ids[:n], vectors=Y[:n])
        fit = client.fit_alignment("minilm_l6", "mpnet", anchor_set=name)
        if n <= 384:  # fewer fitting anchors than dimensions: the fit must say so
            assert "too few anchors for dimension" in fit.warnings, fit.warnings
        service[n] = text_top1(client.transform(X[test], source="minilm_l6", target="mpnet", fit_id=fit.id), Y[test])
        Xa = np.hstack([unit(X[:n]), np.ones((n, 1))])
        W = np.linalg.lstsq(Xa, unit(Y[:n]), rcond=None)[0]
        lstsq[n] = text_top1(np.hstack([unit(X[test]), np.ones((1000, 1))]) @ W, Y[test])
    print(f"\nservice top-1 by anchors: {service}\nplain least squares:      {lstsq}")
    for small, large in zip(counts, counts[1:]):
        assert service[large] >= service[small] - 0.02, (small, large, service)
    assert lstsq[384] < min(lstsq[192], lstsq[1200]) - 0.1  # the dip is real in this data
    assert service[384] > lstsq[384] + 0.2
