"""``convergent demo``: the whole service in one command, on embedded defaults.

An embedded server on a free port with a temporary data folder; SDK clients play the parties:
they upload anchors, fit every alignment method, enroll a gallery, identify unmapped vs
mapped vs fused, align MiniLM to mpnet text, reproduce Convergent Learning on two small
networks, search LFW at 2,875 people (:mod:`.demo_lfw`; real data only, not ``--quick``), and
write ``OUT/report.md`` with PNG plots. Real embeddings from
``shared/realdata`` are used when present; otherwise everything runs on synthetic data the
demo generates (and the report says so).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convergent.server import report
from convergent.server.datasets import EmbeddingSet, find_realdata, load_faces, load_lfw, load_text, synthetic_identities
from convergent.wire import FIT_METHODS

PAIR_METHODS = tuple(FIT_METHODS)  # every method of the contract, auto first


@dataclass
class Scenario:
    """What the demo runs on: faces-like identities (3 models) and a text-like pair."""

    provenance: str
    faces: EmbeddingSet
    probe: str      # the party whose probes are identified
    gallery: str    # the gallery's model
    third: str      # a third model (fusion gallery)
    text: EmbeddingSet
    text_source: str
    text_target: str
    synthetic: bool
    notes: list[str] = field(default_factory=list)
    lfw: EmbeddingSet | None = None  # LFW (dlib, facenet) when the real data holds it: the demo's large face stage


def _scenario(realdata: Path | None, synthetic: bool) -> Scenario:
    folder = None if synthetic else find_realdata(realdata)
    if folder is not None:
        return Scenario(
            f"real embeddings from {folder}", load_faces(folder), "dlib", "facenet", "mobileface",
            load_text(folder), "minilm_l6", "mpnet", synthetic=False, lfw=load_lfw(folder),
        )
    reason = "--synthetic was given" if synthetic else "no real data found (looked for shared/realdata)"
    faces = synthetic_identities(n_people=40, photos_per_person=10,
                                 dims={"model-a": 64, "model-b": 96, "model-c": 80}, noise=0.6, seed=0)
    text = synthetic_identities(n_people=2500, photos_per_person=1, dims={"small": 96, "large": 192},
                                latent_dim=64, noise=0.0, seed=1)
    return Scenario(
        f"SYNTHETIC data ({reason}): identities seen through random two-layer tanh encoders",
        faces, "model-a", "model-b", "model-c", text, "small", "large", synthetic=True,
    )


def _rank_of_truth(ids: list[list[str]], truth: list[str]) -> np.ndarray:
    """1-based rank of the true id in each row (0 = not returned)."""
    return np.array([row.index(t) + 1 if t in row else 0 for row, t in zip(ids, truth)])


def _unit(A: np.ndarray) -> np.ndarray:
    return A / np.linalg.norm(A, axis=1, keepdims=True)


class Demo:
    def __init__(self, client, scenario: Scenario, out: Path, quick: bool, progress) -> None:  # noqa: ANN001
        self.c, self.s, self.out, self.quick, self.progress = client, scenario, out, quick, progress
        self.sections: list[str] = []
        self.summary: list[tuple[str, str]] = []
        labels = scenario.faces.labels
        self.people = int(labels.max()) + 1
        half = self.people // 2
        self.anchors = np.flatnonzero(labels < half)
        self.unseen = np.flatnonzero(labels >= half)

    def step(self, text: str) -> None:
        self.progress.set_description(text)
        self.progress.update(1)

    # ---------------------------------------------------------------- stages
    def upload(self) -> None:
        faces = self.s.faces
        for model, X in faces.vectors.items():
            self.c.register_model(model, dim=X.shape[1])
            self.c.upload_anchors(model, anchor_set="faces", ids=[faces.ids[i] for i in self.anchors], vectors=X[self.anchors])
        for model, X in self.s.text.vectors.items():
            self.c.register_model(model, dim=X.shape[1])
        self.step("uploaded face anchors")

    def methods(self) -> None:
        """Fit every method probe -> gallery model, identify unseen people through each."""
        s, labels = self.s, self.s.faces.labels
        gallery = np.array([self.unseen[labels[self.unseen] == p][0] for p in range(self.people // 2, self.people)])
        probes = np.setdiff1d(self.unseen, gallery)
        truth = [f"person{label}" for label in labels[probes]]
        G, P = s.faces.vectors[s.gallery][gallery], s.faces.vectors[s.probe][probes]
        self.c.enroll(gallery="staff", model=s.gallery, ids=[f"person{labels[i]}" for i in gallery], vectors=G)
        width = len(gallery)
        curves, rows = {}, []
        if P.shape[1] == G.shape[1]:  # without convergent: raw cosine across the two spaces
            order = np.argsort(-(_unit(P) @ _unit(G).T), axis=1)
            ranks = _rank_of_truth([[f"person{labels[gallery][j]}" for j in row] for row in order], truth)
            curves["unmapped"] = report.cmc(ranks, width)
            rows.append(("unmapped (no map)", "—", "—", "—", float(curves["unmapped"][0]), float(curves["unmapped"][0])))
        for method in PAIR_METHODS:
            fit = self.c.fit_alignment(s.probe, s.gallery, anchor_set="faces", method=method)
            result = self.c.identify(gallery="staff", vectors=P, model=s.probe, k=width, fit_id=fit.id)  # auto: CSLS
            cosine = self.c.identify(gallery="staff", vectors=P, model=s.probe, k=width, fit_id=fit.id, scoring="cosine")
            label = method if method != "auto" else f"auto ({fit.auto_winner or fit.method})"
            curves[label] = report.cmc(_rank_of_truth(result.ids, truth), width)
            rows.append((label, f"{fit.metrics.get('top1', float('nan')):.3f}", f"{fit.metrics.get('r2_variance_weighted', float('nan')):.3f}",
                         f"{fit.metrics.get('fit_seconds', 0):.2f}", float(report.cmc(_rank_of_truth(cosine.ids, truth), width)[0]),
                         float(curves[label][0])))
            self.step(f"fitted {method}")
        shared = self.c.fit_shared_space(models=[s.probe, s.gallery, s.third], anchor_set="faces")
        result = self.c.identify(gallery="staff", vectors=P, model=s.probe, k=width, fit_id=shared.id)
        cosine = self.c.identify(gallery="staff", vectors=P, model=s.probe, k=width, fit_id=shared.id, scoring="cosine")
        curves["shared space (3 models)"] = report.cmc(_rank_of_truth(result.ids, truth), width)
        rows.append(("shared space (3 models)", f"{shared.metrics.get(f'{s.probe}->{s.gallery}.top1', float('nan')):.3f}", "—",
                     f"{shared.metrics.get('fit_seconds', 0):.2f}", float(report.cmc(_rank_of_truth(cosine.ids, truth), width)[0]),
                     float(curves["shared space (3 models)"][0])))
        self.step("fitted the shared space")
        auto = next(label for label in curves if label.startswith("auto"))
        plot = report.plot_cmc(curves, self.out / "cmc_methods.png",
                               f"{s.probe} probes vs {s.gallery} gallery, unseen people", highlight=auto)
        best = max(rows, key=lambda r: r[-1])
        unmapped = f"unmapped {rows[0][-1]:.3f} → " if rows[0][0].startswith("unmapped") else ""
        auto_row = next(r for r in rows if r[0] == auto)
        self.summary.append((f"{s.probe}→{s.gallery} rank-1 on unseen people (CSLS scoring)",
                             f"{unmapped}{auto} {float(curves[auto][0]):.3f}, cosine {auto_row[-2]:.3f} "
                             f"(best method on these test probes, picked on them: {best[0]} {best[-1]:.3f})"))
        self.sections.append(
            f"## Every method: {s.probe} probes against a {s.gallery} gallery\n\n"
            f"Anchors: {len(self.anchors)} unlabeled items of identities 0–{self.people // 2 - 1}, embedded by both "
            f"models. Gallery: the first item of each of identities {self.people // 2}–{self.people - 1} in {s.gallery}; "
            f"probes: their other {len(probes)} items in {s.probe}. Rank-1 among {width}; chance {1 / width:.3f}. "
            f"Scored by cosine and by CSLS (hubness-corrected, the default through a map; the CMC curves).\n\n"
            + report.markdown_table(("method", "held-out top-1 (anchors)", "held-out R² (var.-weighted)", "fit s",
                                     "rank-1 unseen, cosine", "rank-1 unseen, CSLS"), rows)
            + f"\n\n![CMC curves]({plot.name})\n"
        )

    def verification(self) -> None:
        """Verify probe vs gallery model on unseen people: the default (unlabeled) calibration
        and a labelled one, as operating points on a DET curve of the same pairs."""
        s, labels = self.s, self.s.faces.labels
        rng = np.random.default_rng(0)

        def pairs(rows: np.ndarray, impostors: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            i, j = np.meshgrid(rows, rows, indexing="ij")
            i, j = i[i != j], j[i != j]
            same = labels[i] == labels[j]
            keep = np.r_[np.flatnonzero(same), rng.choice(np.flatnonzero(~same), impostors, replace=False)]
            return s.faces.vectors[s.probe][i[keep]], s.faces.vectors[s.gallery][j[keep]], same[keep]

        self.c.fit_alignment(s.probe, s.gallery, anchor_set="faces")  # verify's routes: auto, both ways
        self.c.fit_alignment(s.gallery, s.probe, anchor_set="faces")
        A, B, same = pairs(self.unseen, 10_000)
        one_way = self.c.verify(a=A, a_model=s.probe, b=B, b_model=s.gallery, far=1e-2, direction="a_to_b")
        unlabeled = self.c.verify(a=A, a_model=s.probe, b=B, b_model=s.gallery, far=1e-2)
        La, Lb, Lsame = pairs(self.anchors, 10_000)
        self.c.calibrate(a=La, a_model=s.probe, b=Lb, b_model=s.gallery, same=Lsame)
        labelled = self.c.verify(a=A, a_model=s.probe, b=B, b_model=s.gallery, far=1e-2)
        points, rows = {}, []
        for name, scores, v in (
            (f"no labels ({unlabeled.calibration}), both spaces (default)", "mean of both spaces' cosines", unlabeled),
            ("labelled anchor pairs, both spaces", "mean of both spaces' cosines", labelled),
            (f"no labels, one way ({s.probe} into {s.gallery}'s space)", f"cosine in {s.gallery}'s space", one_way),
        ):
            far, tar = float(v.accept[~same].mean()), float(v.accept[same].mean())
            if v is not one_way:  # the DET curve is of the default scores
                points[name] = (far, 1 - tar)
            rows.append((name, scores, f"{v.threshold:.3f}", f"{far:.4f}", f"{tar:.3f}"))
        self.step("verified unseen pairs")
        plot = report.plot_det(report.det_curve(unlabeled.scores[same], unlabeled.scores[~same]), points,
                               self.out / "det_verification.png",
                               f"{s.probe} vs {s.gallery} verification (both spaces), unseen people")
        self.summary.append((f"{s.probe} vs {s.gallery} verification at FAR 1e-2, no labels (unseen pairs)",
                             f"measured FAR {rows[0][3]}, TAR {rows[0][4]} (labelled: TAR {rows[1][4]}; "
                             f"one way, {s.probe} into {s.gallery}'s space: TAR {rows[2][4]})"))
        self.sections.append(
            f"## Verification without labels: {s.probe} vs {s.gallery}\n\n"
            f"Requested FAR 1e-2. Measured on unseen identities: all {int(same.sum())} genuine pairs (two different items "
            f"of one identity) and {int((~same).sum())} sampled impostor pairs. With fits both ways the default scores a "
            f"pair by the mean of its cosines in both models' spaces ({unlabeled.direction_reason}). Default calibration: "
            f"{unlabeled.calibration_pairs}. Labelled: {int(Lsame.sum())} genuine and {int((~Lsame).sum())} impostor "
            f"pairs of the anchor identities.\n\n"
            + report.markdown_table(("calibration", "score", "threshold", "measured FAR", "measured TAR"), rows)
            + f"\n\n![DET curve]({plot.name})\n"
        )

    def fusion(self) -> None:
        """Parties probe -> third-model gallery alone and fused, over several gallery draws."""
        s, labels = self.s, self.s.faces.labels
        parties = (s.probe, s.gallery)
        for party in parties:
            self.c.fit_alignment(party, s.third, anchor_set="faces")
        draws = 5 if self.quick else 20
        scores: dict[str, list[float]] = {}
        curves: dict[str, np.ndarray] = {}
        weights: dict[str, float] = {}
        weight_source = ""
        for draw in range(draws):
            rng = np.random.default_rng(draw)
            gallery = np.array([rng.choice(self.unseen[labels[self.unseen] == p]) for p in range(self.people // 2, self.people)])
            probes = np.setdiff1d(self.unseen, gallery)
            truth = [f"person{label}" for label in labels[probes]]
            name = f"fusion-{draw}"
            self.c.enroll(gallery=name, model=s.third, ids=[f"person{labels[i]}" for i in gallery],
                          vectors=s.faces.vectors[s.third][gallery])
            runs = {p: self.c.identify(gallery=name, vectors=s.faces.vectors[p][probes], model=p, k=len(gallery)) for p in parties}
            fused = self.c.identify(gallery=name, vectors={p: s.faces.vectors[p][probes] for p in parties}, k=len(gallery))
            runs["fused"] = fused
            weights, weight_source = fused.parties, next(iter(fused.weight_sources.values()), "")
            for label, result in runs.items():
                ranks = _rank_of_truth(result.ids, truth)
                scores.setdefault(label, []).append(float(np.mean(ranks == 1)))
                curves[label] = curves.get(label, 0) + report.cmc(ranks, len(gallery)) / draws
            self.c.delete_gallery(name)
        self.step("fused the parties")
        mean = {k: float(np.mean(v)) for k, v in scores.items()}
        plot = report.plot_cmc({f"{k}, fusion weight {weights[k]:.2f}" if k in weights else k: v for k, v in curves.items()},
                               self.out / "cmc_fusion.png", f"{s.third} gallery: each party alone and fused ({draws} draws)",
                               highlight="fused", legend_title="party (mean over draws)")
        rows = [(label, mean[label], float(np.std(scores[label]))) for label in (*parties, "fused")]
        best_solo = max(mean[p] for p in parties)
        self.summary.append((f"fusion on a {s.third} gallery, rank-1 (CSLS)", f"best party {best_solo:.3f} → fused {mean['fused']:.3f}"))
        self.sections.append(
            f"## Federated inference: {' + '.join(parties)} parties, {s.third} gallery\n\n"
            f"Each party embeds the same probes with its own model; its scores reach the {s.third} gallery "
            f"through its own fit, are CSLS-scored (the default), z-normalised per probe and averaged with weights "
            f"{', '.join(f'{k}: {v:.2f}' for k, v in weights.items())}, set by the server: {weight_source}. "
            f"Mean over {draws} seeded draws of which item of each identity is enrolled.\n\n"
            + report.markdown_table(("party", "mean rank-1", "std over draws"), rows)
            + f"\n\n![fusion CMC]({plot.name})\n"
        )

    def text_curve(self) -> None:
        """Quality vs number of anchors, through the n ~ d region, service vs least squares."""
        s = self.s
        X, Y = s.text.vectors[s.text_source], s.text.vectors[s.text_target]
        dim = X.shape[1]
        test = slice(len(X) - 1000, len(X))
        grid = (dim // 2, dim, 2 * dim) if self.quick else (dim // 4, dim // 2, 3 * dim // 4, dim, 5 * dim // 4, 2 * dim, 3 * dim)
        counts = [c for c in grid if c <= len(X) - 1000]
        service, lstsq = [], []
        for n in counts:
            name = f"text-{n}"
            for model, data in ((s.text_source, X), (s.text_target, Y)):
                self.c.upload_anchors(model, anchor_set=name, ids=s.text.ids[:n], vectors=data[:n])
            fit = self.c.fit_alignment(s.text_source, s.text_target, anchor_set=name)
            mapped = self.c.transform(X[test], source=s.text_source, fit_id=fit.id)
            service.append(float(np.mean(np.argmax(_unit(mapped) @ _unit(Y[test]).T, axis=1) == np.arange(1000))))
            Xa = np.hstack([_unit(X[:n]), np.ones((n, 1))])
            W = np.linalg.lstsq(Xa, _unit(Y[:n]), rcond=None)[0]
            pred = np.hstack([_unit(X[test]), np.ones((1000, 1))]) @ W
            lstsq.append(float(np.mean(np.argmax(_unit(pred) @ _unit(Y[test]).T, axis=1) == np.arange(1000))))
            self.step(f"text with {n} anchors")
        plot = report.plot_anchor_curve(counts, {"convergent (auto)": service, "plain least squares": lstsq}, dim,
                                        self.out / "anchors_curve.png", f"{s.text_source} → {s.text_target}: 1000-way top-1")
        rows = [(n, a, b) for n, a, b in zip(counts, service, lstsq)]
        self.summary.append((f"text {s.text_source}→{s.text_target} top-1 at n = d = {dim}",
                             f"least squares {lstsq[counts.index(dim)]:.3f}, convergent {service[counts.index(dim)]:.3f}"))
        self.sections.append(
            f"## Text: {s.text_source} ({dim}-d) → {s.text_target}, quality vs number of anchors\n\n"
            f"Top-1 retrieval of 1000 unseen items among each other. Plain least squares collapses when the "
            f"number of anchors n is close to the dimension d (the interpolation threshold); the service's "
            f"choice does not, and its fits in that region carry a warning.\n\n"
            + report.markdown_table(("anchors", "convergent (auto)", "plain least squares"), rows)
            + f"\n\n![quality vs anchors]({plot.name})\n"
        )

    def convergent_learning(self) -> None:
        """Li et al. 2016 in miniature: two MLPs from different seeds on the digits data set."""
        import warnings

        from sklearn.datasets import load_digits
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        from convergent.server.align import hidden_activations

        X, y = load_digits(return_X_y=True)
        X = X / 16.0
        ids = [f"digit{i}" for i in range(len(X))]
        from threadpoolctl import threadpool_limits

        for seed in (0, 1):
            # one BLAS thread: these small products ran 14x slower on two threads of a busy 2-core machine
            with warnings.catch_warnings(), threadpool_limits(1):
                warnings.simplefilter("ignore", ConvergenceWarning)
                mlp = MLPClassifier(hidden_layer_sizes=(64,), random_state=seed, max_iter=200).fit(X, y)
            self.c.register_model(f"mlp-seed{seed}", dim=64, normalize=False)
            self.c.upload_anchors(f"mlp-seed{seed}", anchor_set="digits", ids=ids, vectors=hidden_activations(mlp, X))
        fits = {m: self.c.fit_alignment("mlp-seed0", "mlp-seed1", anchor_set="digits", method=m, sign=False)
                for m in ("permutation", "semi_matching")}
        per_unit = {("bipartite" if m == "permutation" else "semi-matching"): self.c.export_fit(f.id)["matched_correlation"]
                    for m, f in fits.items()}
        self.step("reproduced Convergent Learning")
        plot = report.plot_histogram(per_unit, self.out / "matched_correlations.png",
                                     "hidden units of two MLPs (seeds 0, 1) on digits")
        b, sm = per_unit["bipartite"], per_unit["semi-matching"]
        self.summary.append(("digits MLPs mean matched correlation", f"bipartite {np.nanmean(b):.3f}, semi {np.nanmean(sm):.3f}"))
        self.sections.append(
            "## Convergent Learning in miniature (Li, Yosinski et al., ICLR 2016)\n\n"
            "Two 64-unit MLPs trained on scikit-learn's digits from different seeds; their hidden "
            "activations on the 1797 digits are two models (not normalised). Bipartite matching pairs each "
            "unit with one unit of the other net; semi-matching lets each take its best partner.\n\n"
            + report.markdown_table(("matching", "mean matched correlation", "units > 0.9", "units < 0.5"),
                                    [(k, float(np.nanmean(v)), int(np.sum(v > 0.9)), int(np.sum(v < 0.5))) for k, v in per_unit.items()])
            + "\n\nAs in the paper, semi-matching ≥ bipartite, and a few units match very well while many do not "
            "(paper, conv1: 0.703 semi / 0.663 bipartite). Units at 0 never fire on these digits (dead ReLUs) "
            "and correlate with nothing.\n\n"
            f"![matched correlations]({plot.name})\n"
        )


def run_demo(out: Path, realdata: Path | None = None, quick: bool = False, synthetic: bool = False) -> Path:
    """Run the demo; writes ``out/report.md`` (+ PNGs) and returns its path."""
    from tqdm.auto import tqdm

    from convergent.client import Client
    from convergent.server import logs
    from convergent.server.rpc.app import ConvergentServer
    from convergent.server.settings import ServerSettings

    logs.configure("WARNING")
    started = time.perf_counter()
    scenario = _scenario(realdata, synthetic)
    out.mkdir(parents=True, exist_ok=True)
    lfw = None if quick else scenario.lfw  # --quick keeps to the small faces
    total = 1 + len(PAIR_METHODS) + 1 + 1 + 1 + (3 if quick else 7) + 1 + (3 if lfw is not None else 0)
    with tempfile.TemporaryDirectory(prefix="convergent-demo-") as data_dir:
        settings = ServerSettings(host="127.0.0.1", port=0, data_dir=Path(data_dir))
        with ConvergentServer(settings) as server, Client(server.address, timeout=120) as client, \
                tqdm(total=total, desc="demo", unit="step") as progress:
            tqdm.write(f"embedded server on {server.address}; {scenario.provenance}")
            demo = Demo(client, scenario, out, quick, progress)
            demo.upload()
            demo.methods()
            demo.verification()
            demo.fusion()
            demo.text_curve()
            demo.convergent_learning()
            if lfw is not None:
                from convergent.server.demo_lfw import lfw_stage

                lfw_stage(demo, lfw)
    seconds = time.perf_counter() - started
    header = [
        "# convergent demo report", "",
        f"Data: {scenario.provenance}.", "",
        f"Made by `convergent demo{' --quick' if quick else ''}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"in {seconds:.0f} s, through a real gRPC server on a free loopback port (temporary data folder).", "",
        "## Summary", "", report.markdown_table(("what", "result"), demo.summary), "",
    ]
    if scenario.synthetic:
        header.insert(4, "**These numbers come from synthetic data, not real embeddings.**\n")
    path = out / "report.md"
    path.write_text("\n".join(header) + "\n" + "\n".join(demo.sections))
    print(report.text_table(("what", "result"), demo.summary))
    print(f"report: {path.resolve()}")
    return path
