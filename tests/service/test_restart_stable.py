"""Every answer is a function of stored state: the same fit, gallery and probes give the same
identify answer (top-k ids and scores bit for bit, open-set thresholds, the direction and its
reason) after more anchors were uploaded to the fit's anchor set, after a restart on the same
database file, and on a second replica of that file, for CSLS and cosine on exact and HNSW
galleries, closed- and open-set, direction "auto".

Synthetic identities: the fits' anchors are every photo of people 0-299; 3,000 more anchors
(people 300-899) arrive after the fits. The galleries (exact, HNSW) hold one photo of people
900-1399 and unstructured distractors, enrolled in steps with searches in between (so the
in-memory indexes are built, then updated) and a removal; the probes are other photos of
enrolled people and photos of people nobody enrolled. Then 100 of the fits' anchors are
deleted: every server answers from the fits' surviving pairs, alike.
"""

from __future__ import annotations

import numpy as np

from convergent.client import Client
from convergent.server.datasets import synthetic_identities

FIT_PEOPLE, LATER_PEOPLE, ENROLLED = range(0, 300), range(300, 900), range(900, 1400)
GALLERIES = ("g-exact", "g-hnsw")
ALONE = 8  # items enrolled one per call (r_S of one row)


def _data():
    data = synthetic_identities(n_people=1500, photos_per_person=5, seed=7, noise=0.2)
    labels = np.asarray(data.labels)
    rows = np.arange(len(labels))
    first = rows % 5 == 0
    enrolled = rows[(labels >= ENROLLED.start) & (labels < ENROLLED.stop) & first]
    rng = np.random.default_rng(3)
    distractors = rng.standard_normal((1500, data.vectors["model-b"].shape[1])).astype(np.float32)
    gallery_ids = [f"p{labels[i]}" for i in enrolled] + [f"d{j}" for j in range(len(distractors))]
    gallery = np.vstack([data.vectors["model-b"][enrolled], distractors])
    order = rng.permutation(len(gallery_ids))
    order = np.append(order[order >= ALONE], np.arange(ALONE))  # the first probes' people last, one by one
    mated = rows[(labels >= ENROLLED.start) & (labels < ENROLLED.stop) & (rows % 5 == 1)][:40]
    strangers = rows[(labels >= ENROLLED.stop) & first][:40]
    return {
        "data": data,
        "fit_anchors": rows[labels < FIT_PEOPLE.stop],
        "later_anchors": rows[(labels >= LATER_PEOPLE.start) & (labels < LATER_PEOPLE.stop)],
        "gallery_ids": [gallery_ids[i] for i in order], "gallery": gallery[order],
        "probes": data.vectors["model-a"][np.concatenate([mated, strangers])],
    }


def _upload(c: Client, data, rows) -> None:
    for model in ("model-a", "model-b"):
        c.upload_anchors(model, anchor_set="s", ids=[data.ids[i] for i in rows], vectors=data.vectors[model][rows])


def _ask(c: Client, probes: np.ndarray) -> dict:
    """Every answer compared: closed-set forward (CSLS, cosine; exact, HNSW), direction "auto"
    (both spaces on the exact gallery, judged on held-out anchors) and open-set at FPIR 0.05."""
    out = {}
    for gallery in GALLERIES:
        for scoring in ("csls", "cosine"):
            out[gallery, scoring] = c.identify(gallery, probes, model="model-a", k=5, scoring=scoring, direction="forward")
            out[gallery, scoring, "fpir"] = c.identify(gallery, probes, model="model-a", k=3, scoring=scoring,
                                                       direction="forward", fpir=0.05)
    for scoring in ("csls", "cosine"):
        out["auto", scoring] = c.identify("g-exact", probes, model="model-a", k=5, scoring=scoring)
        out["auto", scoring, "fpir"] = c.identify("g-exact", probes, model="model-a", k=3, scoring=scoring, fpir=0.05)
    return out


def _bits(scores) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(scores, np.float32)).view(np.uint32)


def _assert_same(before: dict, after: dict, when: str) -> None:
    for key, want in before.items():
        got = after[key]
        changed = sum(a != b for a, b in zip(want.ids, got.ids))
        assert changed == 0, f"{when}, {key}: {changed} of {len(want.ids)} probes have another top-k"
        moved = int(np.count_nonzero(_bits(want.scores) != _bits(got.scores)))
        assert moved == 0, f"{when}, {key}: {moved} scores changed in their bits"
        assert (got.direction, got.direction_reason) == (want.direction, want.direction_reason), f"{when}, {key}"
        assert got.scoring == want.scoring and got.route == want.route, f"{when}, {key}"
        if want.accepted is not None:
            assert got.threshold == want.threshold, f"{when}, {key}: threshold {want.threshold!r} -> {got.threshold!r}"
            assert np.array_equal(got.accepted, want.accepted), f"{when}, {key}: other probes accepted"
            assert (got.n_calibration_searches, got.calibration_searches) == (
                want.n_calibration_searches, want.calibration_searches), f"{when}, {key}"


def test_answers_do_not_depend_on_when_the_server_started(start_server, tmp_path):
    case = _data()
    data, probes = case["data"], case["probes"]
    database_url = f"sqlite:///{tmp_path / 'db' / 'convergent.sqlite3'}"
    first = start_server(database_url=database_url, data_dir=tmp_path / "first")
    ids, gallery = case["gallery_ids"], case["gallery"]
    half = len(ids) // 2
    with Client(first.address, timeout=120) as c:
        for model, dim in (("model-a", 64), ("model-b", 96)):
            c.register_model(model, dim=dim)
        _upload(c, data, case["fit_anchors"])
        c.fit_alignment("model-a", "model-b", anchor_set="s", method="ridge")
        c.fit_alignment("model-b", "model-a", anchor_set="s", method="ridge")  # direction "auto" may score both spaces
        for name in GALLERIES:
            c.enroll(gallery=name, model="model-b", ids=ids[:half], vectors=gallery[:half], index=name[2:])
        _ask(c, probes[:4])  # builds the in-memory indexes, which the changes below then update
        for name in GALLERIES:
            c.enroll(gallery=name, model="model-b", ids=ids[half:-ALONE], vectors=gallery[half:-ALONE])
            for j in range(len(ids) - ALONE, len(ids)):
                c.enroll(gallery=name, model="model-b", ids=ids[j : j + 1], vectors=gallery[j : j + 1])
            assert c.remove(gallery=name, ids=ids[10:13]) == 3
        before = _ask(c, probes)
        assert before["g-exact", "csls"].scoring == "csls"
        assert before["auto", "csls"].direction_reason.startswith("auto: fits both ways")  # judged on held-out anchors
        _upload(c, data, case["later_anchors"])  # 3,000 more anchors in the fits' set: the fits are not refitted
        _assert_same(before, _ask(c, probes), "same server, after the upload")
    first.stop(grace=1.0)
    restarted = start_server(database_url=database_url, data_dir=tmp_path / "first")
    replica = start_server(database_url=database_url, data_dir=tmp_path / "replica")
    for server, when in ((restarted, "after a restart"), (replica, "on a second replica")):
        with Client(server.address, timeout=120) as c:
            _assert_same(before, _ask(c, probes), when)
    # A delete in the set since the fit: the fit's surviving pairs, read anew by every server
    # (the replica's caches were built before the delete), so the answers still agree.
    with Client(restarted.address, timeout=120) as c:
        assert c.delete_anchors("model-a", anchor_set="s", ids=[data.ids[i] for i in case["fit_anchors"][:100]]) == 100
        deleted = _ask(c, probes)
    moved = np.count_nonzero(_bits(deleted["g-exact", "csls"].scores) != _bits(before["g-exact", "csls"].scores))
    assert moved, "the delete changed no CSLS score: the references were not read anew"
    fresh = start_server(database_url=database_url, data_dir=tmp_path / "fresh")
    for server, when in ((replica, "on the replica, after the delete"), (fresh, "on a new server, after the delete")):
        with Client(server.address, timeout=120) as c:
            _assert_same(deleted, _ask(c, probes), when)
