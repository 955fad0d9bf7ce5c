"""Cross-model verification scores with the anchors as cohort: cosine vs CSLS vs s-norm.

Real faces (shared/realdata), in process: a Procrustes map (the map ``auto`` picks for these
pairs) fitted on every photo of one half of the people; every cross pair of photos of the other
half is scored (probe model mapped into the gallery model's space) by

* ``cosine``: cos(x, y);
* ``csls``: 2 cos(x, y) - r_T(x) - r_S(y), r = mean cosine to the 10 nearest cohort vectors;
* ``s-norm``: 0.5 ((s - mu_x) / sd_x + (s - mu_y) / sd_y), mu / sd over the whole cohort
  (Kenny 2010; the anchors as gallery model vectors for x, mapped for y);
* ``as-norm-50``: the same over each side's 50 best-scoring cohort vectors (adaptive s-norm,
  Matejka et al. 2017).

TAR at FAR 1e-2 and 1e-3 with the threshold set on these test pairs' own impostors (an
oracle: it compares how well each score separates, not a calibration). Numbers are printed,
not asserted.

    .venv/bin/python benchmarks/score_normalisation.py [--realdata PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from convergent.server.align.maps import ProcrustesMap
from convergent.server.datasets import load_faces

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import realdata_folder  # noqa: E402


def unit(A: np.ndarray) -> np.ndarray:
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def normalised(S: np.ndarray, cohort_x: np.ndarray, cohort_y: np.ndarray, top: int | None) -> np.ndarray:
    """s-norm of S (n_x, n_y) from each side's cohort scores (n_x, r) and (n_y, r); ``top``: adaptive."""
    if top is not None:
        cohort_x, cohort_y = np.sort(cohort_x, axis=1)[:, -top:], np.sort(cohort_y, axis=1)[:, -top:]
    zx = (S - cohort_x.mean(1)[:, None]) / cohort_x.std(1)[:, None]
    zy = (S - cohort_y.mean(1)[None, :]) / cohort_y.std(1)[None, :]
    return 0.5 * (zx + zy)


def tar_at(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    return float(np.mean(genuine >= np.quantile(impostor, 1 - far)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=None)
    args = parser.parse_args()
    folder = realdata_folder(args.realdata)
    faces = load_faces(folder)
    labels = faces.labels
    print("| pair | anchors | scoring | TAR @ FAR 1e-2 | TAR @ FAR 1e-3 |")
    print("|---|---|---|---|---|")
    for a, b in (("dlib", "facenet"), ("facenet", "dlib")):
        for half in (0, 1):
            anchors = labels < 20 if half == 0 else labels >= 20
            A, B = unit(faces.vectors[a].astype(np.float64)), unit(faces.vectors[b].astype(np.float64))
            fitted = ProcrustesMap().fit(A[anchors], B[anchors])
            X, Y = unit(fitted.transform(A[~anchors])), B[~anchors]
            cohort_x, cohort_y = X @ B[anchors].T, Y @ unit(fitted.transform(A[anchors])).T
            S = X @ Y.T
            r_T, r_S = np.sort(cohort_x, 1)[:, -10:].mean(1), np.sort(cohort_y, 1)[:, -10:].mean(1)
            test = labels[~anchors]
            same = test[:, None] == test[None, :]
            genuine_mask = same & ~np.eye(len(test), dtype=bool)
            scores = {"cosine": S, "csls": 2 * S - r_T[:, None] - r_S[None, :],
                      "s-norm": normalised(S, cohort_x, cohort_y, None), "as-norm-50": normalised(S, cohort_x, cohort_y, 50)}
            who = "people 0-19" if half == 0 else "people 20-39"
            for name, M in scores.items():
                genuine, impostor = M[genuine_mask], M[~same]
                print(f"| {a}→{b} | {who} | {name} | {tar_at(genuine, impostor, 1e-2):.3f} | {tar_at(genuine, impostor, 1e-3):.3f} |")


if __name__ == "__main__":
    main()
