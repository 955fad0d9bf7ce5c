"""Verification calibrated on unlabeled face anchors that hold several photos per person.

Through the service, on identity-disjoint splits of the AT&T faces: anchors = every photo of
the anchor people (uploaded without labels); test = every cross pair (a photo of model A, a
different photo of model B) of the other people. The default calibration must keep its FAR
promise there (measured FAR <= 2x requested) and come close to a labelled calibration.

Both fits (dlib -> FaceNet and FaceNet -> dlib) are made, so the default direction scores each
pair in both models' spaces; the one-way scores (direction "a_to_b") are measured and printed
beside them: they missed two targets on FaceNet -> dlib (TAR 0.587 < 0.6 on the issue split,
measured FAR 0.0224 > 2e-2 on people 20-39; docs/verification.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from convergent.client import Client
from convergent.server.datasets import load_faces

pytestmark = pytest.mark.realdata

SPLITS = {
    "people 0-19 anchors": np.arange(20),          # the split
    "people 20-39 anchors": np.arange(20, 40),
    "even people anchors": np.arange(0, 40, 2),
    "random half (seed 1)": np.sort(np.random.default_rng(1).permutation(40)[:20]),
}


def cross_pairs(faces, people, a_model, b_model):
    """Every (a photo, b photo) pair of these people except a photo with itself."""
    rows = np.flatnonzero(np.isin(faces.labels, people))
    i, j = np.meshgrid(rows, rows, indexing="ij")
    keep = i != j
    i, j = i[keep], j[keep]
    return faces.vectors[a_model][i], faces.vectors[b_model][j], faces.labels[i] == faces.labels[j]


def measured(result, same) -> tuple[float, float]:
    return float(result.accept[~same].mean()), float(result.accept[same].mean())


@pytest.fixture
def server(start_server):
    """SQLite only: the calibration math does not depend on the database (both run elsewhere)."""
    return start_server()


def upload_anchors(client: Client, faces, people) -> None:
    anchors = np.flatnonzero(np.isin(faces.labels, people))
    for model in ("dlib", "facenet"):
        client.register_model(model, dim=128)
        client.upload_anchors(model, anchor_set="att", ids=[faces.ids[i] for i in anchors], vectors=faces.vectors[model][anchors])


ORDERS = (("dlib", "facenet"), ("facenet", "dlib"))


@pytest.mark.parametrize("split", list(SPLITS))
def test_unlabeled_calibration_keeps_far_and_nears_labelled(client: Client, realdata, split):
    """Both orders of the two models on one server: one way (a into b's space) is measured and
    printed; the default (both spaces) is asserted, and is the same in either order."""
    faces = load_faces(realdata)
    anchor_people = SPLITS[split]
    test_people = np.setdiff1d(np.arange(40), anchor_people)
    upload_anchors(client, faces, anchor_people)
    for a_model, b_model in ORDERS:
        client.fit_alignment(a_model, b_model, anchor_set="att")
    lines, checks, tar_unlabeled, thresholds = [], [], {}, {}
    for a_model, b_model in ORDERS:
        A, B, same = cross_pairs(faces, test_people, a_model, b_model)
        tag = f"[{split}, {a_model}->{b_model}]"
        for far in (1e-2, 1e-3):
            one_way = client.verify(a=A, a_model=a_model, b=B, b_model=b_model, far=far, direction="a_to_b")
            assert one_way.direction == "a_to_b" and one_way.route.count("fit:") == 1
            far_1, tar_1 = measured(one_way, same)
            lines.append(f"{tag} FAR {far:g}: unlabeled, one way ({a_model} into {b_model}'s space): "
                         f"measured FAR {far_1:.4f} TAR {tar_1:.3f}")
            unlabeled = client.verify(a=A, a_model=a_model, b=B, b_model=b_model, far=far)
            assert unlabeled.direction == "both" and unlabeled.route.count("fit:") == 2, unlabeled.direction_reason
            assert unlabeled.calibration == "anchors-repeats-excluded"
            assert "never saw it" in unlabeled.calibration_pairs and unlabeled.n_excluded > 0
            far_u, tar_u = measured(unlabeled, same)
            lines.append(f"{tag} FAR {far:g}: unlabeled, both spaces (default): measured FAR {far_u:.4f} TAR {tar_u:.3f} "
                         f"(threshold {unlabeled.threshold:.3f}; on its pairs: FAR {unlabeled.far_calibration:.4f}, "
                         f"TAR same item {unlabeled.tar_calibration:.3f}, {unlabeled.n_excluded} pairs excluded)")
            checks.append(far_u <= 2 * far)
            thresholds[(a_model, far)] = unlabeled.threshold
            if far == 1e-2:
                tar_unlabeled[a_model] = tar_u
    for far in (1e-2, 1e-3):  # both spaces: one threshold (and score) whichever model is a
        assert thresholds[("dlib", far)] == pytest.approx(thresholds[("facenet", far)], abs=1e-5)
    assert tar_unlabeled["dlib"] == pytest.approx(tar_unlabeled["facenet"], abs=0.002)
    # Labelled: every cross pair of the anchor people, labelled same / different person (given
    # once, as dlib -> facenet pairs: scored in both spaces they serve either order).
    La, Lb, Lsame = cross_pairs(faces, anchor_people, "dlib", "facenet")
    client.calibrate(a=La, a_model="dlib", b=Lb, b_model="facenet", same=Lsame)
    for a_model, b_model in ORDERS:
        A, B, same = cross_pairs(faces, test_people, a_model, b_model)
        labelled = client.verify(a=A, a_model=a_model, b=B, b_model=b_model, far=1e-2)
        assert labelled.calibration == "labelled"
        far_l, tar_l = measured(labelled, same)
        lines.append(f"[{split}, {a_model}->{b_model}] FAR 0.01: labelled: measured FAR {far_l:.4f} TAR {tar_l:.3f}")
        checks.append(tar_unlabeled[a_model] >= tar_l - 0.15)
        if split == "people 0-19 anchors":
            checks.append(tar_unlabeled[a_model] >= 0.6)
    print("\n" + "\n".join(lines))
    assert all(checks), lines


def test_verification_report_operating_points(client: Client, realdata):
    faces = load_faces(realdata)
    upload_anchors(client, faces, np.arange(20))
    client.fit_alignment("dlib", "facenet", anchor_set="att")
    report = client.verification_report(a_model="dlib", b_model="facenet")
    print(f"\n{report}")
    assert report.calibration == "anchors-repeats-excluded"
    # 200 anchors give ~38,000 impostor pairs: 1e-2 and 1e-3 resolve (>= 10/FAR), 1e-4 does not.
    assert [p.requested_far for p in report.points] == [1e-2, 1e-3]
    assert all(p.far <= p.requested_far for p in report.points)
    assert report.points[0].tar >= report.points[1].tar
    assert 0 < report.eer < 0.5
    # The report is the calibration verify uses: same threshold at FAR 1e-2.
    A, B, _ = cross_pairs(faces, np.arange(20, 40), "dlib", "facenet")
    assert client.verify(a=A[:5], a_model="dlib", b=B[:5], b_model="facenet", far=1e-2).threshold == report.points[0].threshold
