"""The demo's LFW stage: cross-model search at 2,875 people, closed- and open-set, when the real
data holds LFW (``shared/realdata/lfw_embeddings.npz``); skipped by ``--quick`` and on synthetic data.

One seeded split of LFW's people in halves: every photo of half A is an unlabeled anchor; one
photo of each person of half B is enrolled, their other photos are the probes. Maps are fitted both
ways with ``auto``; identify uses the defaults (CSLS, both spaces). Open-set: a second gallery of
half of half B's people, searched by the others' photos too, at FPIR 1e-2 with the label-free
threshold. ``benchmarks/lfw.py`` runs three splits, three anchor counts and LFW's pairs protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from convergent.server import report
from convergent.server.datasets import EmbeddingSet, people_split

if TYPE_CHECKING:
    from convergent.server.demo import Demo

MODELS = ("dlib", "facenet")
FPIR = 1e-2


def _rank_of_truth(ids: list[list[str]], truth: np.ndarray) -> np.ndarray:
    return np.array([row.index(t) + 1 if t in row else 0 for row, t in zip(ids, truth)])


def lfw_stage(demo: Demo, lfw: EmbeddingSet, seed: int = 0, max_gallery: int | None = None) -> None:
    """Run the stage through ``demo``'s client; adds summary lines, a report section and a CMC plot."""
    c, labels, ids = demo.c, lfw.labels, np.array(lfw.ids)
    assert labels is not None
    split = people_split(labels, seed, max_gallery)
    anchors, gallery, probes = split["anchors"], split["gallery"], split["probes"]
    for model in MODELS:
        c.upload_anchors(model, anchor_set="lfw", ids=ids[anchors].tolist(), vectors=lfw.vectors[model][anchors])
    methods = {}
    for src, tgt in (MODELS, MODELS[::-1]):
        fit = c.fit_alignment(src, tgt, anchor_set="lfw")
        methods[src] = fit.auto_winner or fit.method
    demo.step("fitted LFW maps both ways")
    person_id = np.array([f"lfw-person{p}" for p in labels])
    for model in MODELS:
        c.enroll(gallery=f"lfw-{model}", model=model, ids=person_id[gallery].tolist(), vectors=lfw.vectors[model][gallery])
    width = 20
    curves, rows = {}, []
    for src, tgt in [(m, m) for m in MODELS] + [MODELS, MODELS[::-1]]:
        r = c.identify(f"lfw-{tgt}", lfw.vectors[src][probes], model=src, k=width)
        label = f"{src} natively" if src == tgt else f"{src}→{tgt} ({methods[src]}, {r.scoring}, {r.direction})"
        curves[label] = report.cmc(_rank_of_truth(r.ids, person_id[probes]), width)
        rows.append((label, float(curves[label][0]), float(curves[label][4])))
    demo.step("identified LFW probes")
    enrolled = split["half_b"][: len(split["half_b"]) // 2]
    is_enrolled = np.isin(labels, enrolled)
    open_gallery = gallery[is_enrolled[gallery]]
    mated, non_mated = probes[is_enrolled[probes]], np.r_[probes[~is_enrolled[probes]], gallery[~is_enrolled[gallery]]]
    c.enroll(gallery="lfw-open", model="dlib", ids=person_id[open_gallery].tolist(), vectors=lfw.vectors["dlib"][open_gallery])
    hit = c.identify("lfw-open", lfw.vectors["facenet"][mated], model="facenet", k=1, fpir=FPIR)
    alarm = c.identify("lfw-open", lfw.vectors["facenet"][non_mated], model="facenet", k=1, fpir=FPIR)
    found = np.array([row[0] == t for row, t in zip(hit.ids, person_id[mated])]) & hit.accepted
    fnir, fpir = float(1 - found.mean()), float(alarm.accepted.mean())
    demo.step("open-set search on LFW")
    plot = report.plot_cmc(curves, demo.out / "cmc_lfw.png", f"LFW: {len(gallery)}-person galleries, unseen people")
    cross = [r for r in rows if "→" in r[0]]
    demo.summary.append((f"LFW rank-1 at {len(gallery)} unseen people (dlib / facenet natively "
                         f"{rows[0][1]:.3f} / {rows[1][1]:.3f})",
                         "; ".join(f"{r[0].split(' ')[0]} {r[1]:.3f}" for r in cross)))
    demo.summary.append((f"LFW open-set facenet→dlib, {len(open_gallery)} enrolled, FPIR {FPIR:g} without labels",
                         f"FNIR {fnir:.3f} ({len(mated)} mated searches), FPIR measured {fpir:.4f} "
                         f"({len(non_mated)} non-mated)"))
    demo.sections.append(
        f"## LFW at {len(gallery)} people\n\n"
        f"Labeled Faces in the Wild, people split in halves (seed {seed}): {len(anchors)} photos of half A are the "
        f"unlabeled anchors; one photo of each of half B's {len(gallery)} people is enrolled, their other "
        f"{len(probes)} photos are the probes. Maps fitted both ways with `auto`; identify with the defaults.\n\n"
        + report.markdown_table(("route", "rank-1", "rank-5"), rows)
        + f"\n\nOpen-set: {len(open_gallery)} of them enrolled in a dlib gallery; {len(mated)} FaceNet photos of enrolled "
        f"people and {len(non_mated)} of the others searched at FPIR {FPIR:g} with the threshold the service "
        f"calibrated without labels ({hit.calibration_searches}): threshold {hit.threshold:.3f}, FNIR {fnir:.3f}, "
        f"FPIR measured on the non-mated searches {fpir:.4f}. Three splits, anchor counts and the pairs protocol: "
        f"`benchmarks/lfw.py`.\n\n![LFW CMC curves]({plot.name})\n"
    )
