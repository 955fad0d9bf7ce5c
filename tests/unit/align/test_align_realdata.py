"""Real embeddings (shared/realdata): auto's choice vs an offline sweep, and the selection criterion.

Skipped when the data are absent. Set CONVERGENT_REALDATA to point elsewhere. Run with -s to
see the numbers.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from convergent.server.align import CANDIDATES, DEFAULT_CANDIDATES, PairedStats, RidgeMap, fit_auto, retrieval_topk

REALDATA = Path(os.environ.get("CONVERGENT_REALDATA") or Path(__file__).resolve().parents[3] / ".." / "shared" / "realdata")
FACES = REALDATA / "face_embeddings.npz"
TEXT = REALDATA / "text" / "text_embeddings_2500.npz"
pytestmark = pytest.mark.realdata


def _need(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"real data not found: {path} (set CONVERGENT_REALDATA to the shared/realdata folder)")


def _l2n(a):
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _face_task(src, dst):
    """Anchors: all photos of people 0-19 (unlabeled pairs). Test: people 20-39, gallery = the
    first photo of each in the TARGET model, probes = their other 9 photos in the SOURCE model,
    mapped; rank-1 identification by cosine (20-way, chance 0.05)."""
    _need(FACES)
    f = np.load(FACES)
    lab = f["labels"]
    A, B = _l2n(f[src]), _l2n(f[dst])
    anchors = lab < 20
    gallery = np.array([np.flatnonzero(lab == p)[0] for p in range(20, 40)])
    probes = np.setdiff1d(np.flatnonzero(lab >= 20), gallery)

    def rank1(est):
        S = _l2n(est.transform(A[probes])) @ B[gallery].T
        return float(np.mean(lab[gallery][S.argmax(1)] == lab[probes]))

    return A[anchors], B[anchors], rank1


def _text_task(src="minilm_l6", dst="mpnet"):
    """Anchors: rows 0-399. Test: rows 1500-2499 mapped, top-1 retrieval among their 1000 targets."""
    _need(TEXT)
    t = np.load(TEXT)
    A, B = t[src].astype(np.float64), t[dst].astype(np.float64)

    def top1(est):
        return retrieval_topk(est.transform(A[1500:2500]), B[1500:2500], ks=(1,), pool=None)["top1"]

    return A[:400], B[:400], top1


TASKS = {
    "dlib->facenet": lambda: _face_task("dlib", "facenet"),
    "facenet->dlib": lambda: _face_task("facenet", "dlib"),
    "minilm->mpnet": _text_task,
}


# Left out of a task's sweep for time only: on text the one-to-many Lasso map fits 768 Lasso
# paths (~80 s of this test's ~90 s on 2 cores) and reached top-1 0.803 against Procrustes'
# 0.952 when it was run (2026-12-01), far from the best.
SWEEP_SKIPS = {"minilm->mpnet": {"sparse"}}


def _sweep(Xa, Ya, test, skip=frozenset()):
    """Offline sweep on the unseen test items: ridge at fixed lambdas (relative to
    trace(Sxx)/d) and every candidate family but ``skip``."""
    scale = np.trace(PairedStats.from_arrays(Xa, Ya).scatter()[0]) / Xa.shape[1]
    out = {f"ridge(lambda={a:g}*s)": test(RidgeMap(alphas=[a * scale]).fit(Xa, Ya)) for a in (1e-3, 1e-2, 1e-1, 1.0)}
    out.update({name: test(CANDIDATES[name]().fit(Xa, Ya)) for name in CANDIDATES if name not in skip})
    return out


@pytest.mark.parametrize("task", list(TASKS))
def test_auto_choice_is_within_002_of_offline_sweep(task):
    Xa, Ya, test = TASKS[task]()
    sweep = _sweep(Xa, Ya, test, SWEEP_SKIPS.get(task, frozenset()))
    res = fit_auto(Xa, Ya)
    got = test(res.estimator)
    best = max(sweep.values())
    print(f"\n[{task}] auto -> {res.name}: {got:.3f} (best of sweep {best:.3f}); held-out margin_l2 "
          + ", ".join(f"{k}={v:.3f}±{res.stderr[k]:.3f}" for k, v in res.scores.items()))
    print(f"[{task}] sweep on unseen items: " + ", ".join(f"{k}={v:.3f}" for k, v in sweep.items()))
    print(f"[{task}] diagnostics: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.diagnostics.items()))
    assert got >= best - 0.02


FACE_PAIRS = [("dlib", "facenet"), ("facenet", "dlib"), ("dlib", "mobileface"), ("mobileface", "dlib"),
              ("facenet", "mobileface"), ("mobileface", "facenet")]


def test_margin_criterion_beats_heldout_top1_on_real_pairs():
    """Selection regret (best default candidate on unseen items minus the chosen one) over the six
    face pairs and MiniLM->mpnet, three split seeds each: margin_l2 + 1-SE rule vs plain held-out
    top-1 of paired anchors (which prefers maps that separate photos of already-seen people)."""
    makers = [lambda s=s, d=d: _face_task(s, d) for s, d in FACE_PAIRS] + [_text_task]
    regret = {"margin_l2+1se": [], "top1": []}
    for make in makers:
        Xa, Ya, test = make()
        on_test = {n: test(CANDIDATES[n]().fit(Xa, Ya)) for n in DEFAULT_CANDIDATES}
        best = max(on_test.values())
        for seed in range(3):
            regret["margin_l2+1se"].append(best - on_test[fit_auto(Xa, Ya, seed=seed).name])
            regret["top1"].append(best - on_test[fit_auto(Xa, Ya, seed=seed, criterion="top1", one_se=False).name])
    print("\nselection regret per (pair, seed):", {k: np.round(v, 3).tolist() for k, v in regret.items()})
    print("mean / max regret:", {k: (round(float(np.mean(v)), 4), round(float(np.max(v)), 3)) for k, v in regret.items()})
    assert np.mean(regret["margin_l2+1se"]) <= 0.02
    assert np.mean(regret["margin_l2+1se"]) < 0.5 * np.mean(regret["top1"])
    assert max(regret["margin_l2+1se"]) < max(regret["top1"])
