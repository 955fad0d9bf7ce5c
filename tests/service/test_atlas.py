"""The compatibility atlas through a real server: synthetic models of known structure cluster as
built (rotations of one space together, an unrelated space apart), a route turns stale and drops
out of its cluster when its anchors change, every number equals the fit's own, the real faces'
three models get a full atlas, `convergent atlas` prints it and writes a heatmap, and bad input is
a precise status."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convergent.client import Client, errors
from convergent.server.datasets import load_faces

BIN = Path(sys.executable).with_name("convergent")
DIM, N = 24, 500


def _known_structure(c: Client, rng: np.random.Generator) -> None:
    """a; b = a rotated (+ noise); c = b rotated (+ noise); z unrelated to all three."""
    A = rng.standard_normal((N, DIM)).astype(np.float32)
    R1, R2 = (np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].astype(np.float32) for _ in range(2))
    B = A @ R1 + 0.05 * rng.standard_normal((N, DIM)).astype(np.float32)
    C = B @ R2 + 0.05 * rng.standard_normal((N, DIM)).astype(np.float32)
    Z = rng.standard_normal((N, DIM)).astype(np.float32)
    ids = [f"x{i}" for i in range(N)]
    for name, vectors in (("a", A), ("b", B), ("c", C), ("z", Z)):
        c.register_model(name, dim=DIM)
        c.upload_anchors(name, anchor_set="s", ids=ids, vectors=vectors)


def test_models_of_known_structure_cluster_as_built_and_the_numbers_are_the_fits(server, rng):
    with Client(server.address, timeout=120) as c:
        _known_structure(c, rng)
        empty = c.atlas("s")
        assert len(empty.entries) == 12 and len(empty.missing()) == 12 and all(not e.fit_id for e in empty.entries)
        assert sorted(len(g) for g in empty.clusters) == [1, 1, 1, 1]  # nothing measured: nothing is close
        seen = []
        fits = c.fit_missing_routes("s", method="procrustes", progress=lambda entry, fit, done, total: seen.append((entry.source, entry.target, done, total)))
        assert len(fits) == len(seen) == 12 and [s[2:] for s in seen] == [(k, 12) for k in range(1, 13)]
        atlas = c.atlas("s")
        assert atlas.missing() == [] and atlas.data_version == empty.data_version
        assert sorted(map(sorted, atlas.clusters)) == [["a", "b", "c"], ["z"]]
        for entry in atlas.entries:
            fit = c.get_fit(entry.fit_id)
            assert (fit.source, fit.target, fit.anchor_set, fit.stale) == (entry.source, entry.target, "s", False)
            assert entry.top1 == fit.metrics["top1"] and entry.cka == fit.metrics["cka"]
            assert entry.mutual_knn == fit.metrics["mutual_knn"] and entry.n_heldout == int(fit.metrics["n_heldout"])
            assert entry.n_pairs == N
            if "z" in (entry.source, entry.target):
                assert entry.top1 < 0.1, entry
            else:
                assert entry.top1 > 0.9, entry
        # new anchors of a: its routes turn stale, count as unmeasured, and a leaves the cluster
        more = rng.standard_normal((50, DIM)).astype(np.float32)
        c.upload_anchors("a", anchor_set="s", ids=[f"y{i}" for i in range(50)], vectors=more)
        stale = c.atlas("s")
        assert stale.data_version > atlas.data_version
        assert {(e.source, e.target) for e in stale.entries if e.stale} == {(e.source, e.target) for e in stale.entries}
        assert len(stale.missing()) == 12
        c.fit_missing_routes("s", method="procrustes", max_routes=2)
        assert len(c.atlas("s").missing()) == 10


@pytest.mark.realdata
def test_the_real_faces_three_models_get_a_full_atlas(server, realdata):
    faces = load_faces(realdata)
    anchors = np.flatnonzero(faces.labels < 20)
    with Client(server.address, timeout=300) as c:
        for model, vectors in faces.vectors.items():
            c.register_model(model, dim=vectors.shape[1])
            c.upload_anchors(model, anchor_set="att", ids=[faces.ids[i] for i in anchors], vectors=vectors[anchors])
        c.fit_missing_routes("att")
        atlas = c.atlas("att")
    assert sorted(atlas.models) == ["dlib", "facenet", "mobileface"] and len(atlas.entries) == 6
    assert all(e.current and e.n_pairs == len(anchors) and e.n_heldout > 0 for e in atlas.entries)
    assert all(0.0 <= e.top1 <= 1.0 and math.isfinite(e.cka) for e in atlas.entries)
    print("\n" + "\n".join(f"{e.source}->{e.target}: {e.method} top1 {e.top1:.3f} cka {e.cka:.3f} "
                           f"(held out {e.n_heldout})" for e in atlas.entries), atlas.clusters)


def test_convergent_atlas_prints_the_table_and_writes_a_heatmap(server, rng, tmp_path):
    with Client(server.address, timeout=120) as c:
        _known_structure(c, rng)
    out = tmp_path / "atlas.png"
    run = subprocess.run([str(BIN), "atlas", "--anchor-set", "s", "--fit-missing", "--method", "procrustes", "--out", str(out),
                          "--address", server.address], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    clusters = run.stdout.split("clusters (average linkage")[1].splitlines()[1:3]
    assert sorted(sorted(line.split(": ")[1].split(", ")) for line in clusters) == [["a", "b", "c"], ["z"]], run.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "atlas.svg"
    again = subprocess.run([str(BIN), "atlas", "--anchor-set", "s", "--out", str(svg), "--address", server.address],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and b"<svg" in svg.read_bytes()[:500] and "no fit" not in again.stdout
    bad = subprocess.run([str(BIN), "atlas", "--anchor-set", "s", "--out", str(tmp_path / "atlas.txt"), "--address",
                          server.address], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and ".png or .svg" in bad.stderr


def test_an_unknown_or_badly_named_anchor_set_is_a_precise_status(server):
    with Client(server.address, timeout=30) as c:
        with pytest.raises(errors.NotFound, match="anchor set 'nowhere' not found") as missing:
            c.atlas("nowhere")
        assert missing.value.reason == "ANCHOR_SET_NOT_FOUND"
        with pytest.raises(errors.InvalidArgument):
            c.atlas("bad name!")
        c.register_model("only", dim=4)
        c.upload_anchors("only", anchor_set="one", ids=["i"], vectors=np.ones((1, 4), np.float32))
        lonely = c.atlas("one")
        assert lonely.models == ["only"] and lonely.entries == [] and lonely.clusters == [["only"]]
