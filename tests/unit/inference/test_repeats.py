"""Repeated subjects among unlabeled anchors: found where they are, never invented."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.server.errors import InvalidInput
from convergent.server.inference import calibrate_threshold, find_repeated_subjects, pairs_from_anchor_set


def two_models(items_per_subject: int, n_items: int = 450, dim: int = 48, noise: float = 0.35, seed: int = 0):
    """Subjects = random directions; an item = its subject + noise; models A and B see each item
    through their own random linear map plus noise. Returns (A, B, subject labels)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_items // items_per_subject), items_per_subject)
    subjects = rng.standard_normal((labels.max() + 1, dim))
    items = subjects[labels] + noise * rng.standard_normal((len(labels), dim))
    A = items @ rng.standard_normal((dim, 64)) + 0.2 * rng.standard_normal((len(labels), 64))
    B = items @ rng.standard_normal((dim, 96)) + 0.2 * rng.standard_normal((len(labels), 96))
    return A, B, labels


@pytest.mark.parametrize("per_subject", [1, 3, 10])
def test_estimated_impostors_match_the_true_ones(per_subject):
    A, B, labels = two_models(per_subject)
    found = find_repeated_subjects(A, B)
    truth = labels[:, None] == labels[None, :]
    np.fill_diagonal(truth, False)
    print(f"\n{per_subject} per subject: {found.reason}")
    if per_subject == 1:
        assert not found.detected and not found.same.any()
    else:
        assert found.detected
        assert np.array_equal(found.same, found.same.T) and not found.same.diagonal().any()
        assert found.same[truth].mean() >= 0.95       # same-subject pairs found
        assert found.same[~truth].mean() <= 0.002     # other pairs kept as impostors
    # The impostor scores the calibration keeps vs the true impostors (labels known here): the
    # thresholds for FAR 1e-2 and 1e-3 agree; counting every other item as an impostor does not.
    mapped = B + 0.3 * np.random.default_rng(1).standard_normal(B.shape) * B.std()
    kept = pairs_from_anchor_set(mapped, B, max_impostors=10**6, same=found.same if found.detected else None)
    true = pairs_from_anchor_set(mapped, B, max_impostors=10**6, same=truth)
    naive = pairs_from_anchor_set(mapped, B, max_impostors=10**6)
    for far in (1e-2, 1e-3):
        t_kept = calibrate_threshold(kept.genuine, kept.impostor, far).threshold
        t_true = calibrate_threshold(true.genuine, true.impostor, far).threshold
        t_naive = calibrate_threshold(naive.genuine, naive.impostor, far).threshold
        assert abs(t_kept - t_true) <= 0.01, (far, t_kept, t_true)
        if per_subject == 10:  # 1.5% of pairs are one subject: above the 1e-2 tail
            assert t_naive - t_true > 0.05


def test_distinct_items_are_left_alone_whatever_the_seed():
    for seed in range(3):
        A, B, _ = two_models(1, seed=seed, noise=0.0)
        assert not find_repeated_subjects(A, B, seed=seed).detected
    # One model an exact rotation of the other: the pairs' similarities agree perfectly, and a
    # narrow component fits the far tail with a large separation; without a valley it is no mode.
    rng = np.random.default_rng(4)
    X = rng.standard_normal((400, 16))
    found = find_repeated_subjects(X, X @ np.linalg.qr(rng.standard_normal((16, 16)))[0])
    assert not found.detected, found.reason


def test_too_few_anchors_and_bad_input():
    A, B, _ = two_models(3, n_items=12)
    assert not find_repeated_subjects(A, B).detected
    with pytest.raises(InvalidInput, match="same anchors"):
        find_repeated_subjects(A, B[:-1])
    with pytest.raises(InvalidInput, match="NaN"):
        find_repeated_subjects(np.full((30, 4), np.nan), np.ones((30, 4)))
    same = find_repeated_subjects(np.ones((30, 4)), np.ones((30, 4)))
    assert not same.detected and "do not vary" in same.reason


@pytest.mark.realdata
@pytest.mark.parametrize("n", [200, 400, 1000])
def test_text_anchors_are_distinct_items(realdata, n):
    """WordNet glosses: every anchor is a different gloss; nothing is excluded (calibration as before)."""
    from convergent.server.datasets import load_text

    text = load_text(realdata, n=n)
    found = find_repeated_subjects(text.vectors["minilm_l6"], text.vectors["mpnet"])
    print(f"\ntext, {n} anchors: {found.reason}")
    assert not found.detected and not found.same.any()


@pytest.mark.realdata
@pytest.mark.parametrize("people", [range(20), range(20, 40)])
def test_face_anchors_hold_ten_photos_per_person(realdata, people):
    from convergent.server.datasets import load_faces

    faces = load_faces(realdata)
    rows = np.flatnonzero(np.isin(faces.labels, list(people)))
    found = find_repeated_subjects(faces.vectors["dlib"][rows], faces.vectors["facenet"][rows])
    truth = faces.labels[rows][:, None] == faces.labels[rows][None, :]
    np.fill_diagonal(truth, False)
    print(f"\nfaces: {found.reason}; recall {found.same[truth].mean():.3f}, other pairs flagged {found.same[~truth].mean():.4f}")
    assert found.detected and found.same[truth].mean() >= 0.95 and found.same[~truth].mean() <= 0.005
