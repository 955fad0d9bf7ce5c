"""Galleries on Milvus (milvus-lite file): the same answers as the local index."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.client import Client, errors

pytest.importorskip("pymilvus", reason="pymilvus is not installed (extra 'milvus')")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (extra 'milvus')")


def unit(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def test_milvus_backend_matches_the_local_index(start_server, tmp_path, rng):
    local = start_server()
    milvus = start_server(gallery_backend="milvus", milvus_uri=str(tmp_path / "galleries.db"))
    d, n = 16, 600
    R = np.linalg.qr(rng.standard_normal((d, d)))[0]
    X = rng.standard_normal((n, d))
    people = rng.standard_normal((400, d))
    probes = people[:60] + 0.05 * rng.standard_normal((60, d))
    results = {}
    for name, server in (("local", local), ("milvus", milvus)):
        with Client(server.address) as c:
            c.register_model("a", dim=d)
            c.register_model("b", dim=d)
            ids = [f"x{i}" for i in range(n)]
            c.upload_anchors("a", anchor_set="s", ids=ids, vectors=X)
            c.upload_anchors("b", anchor_set="s", ids=ids, vectors=X @ R.T)
            c.fit_alignment("a", "b", anchor_set="s", method="procrustes")
            c.enroll(gallery="g", model="b", ids=[f"p{i}" for i in range(400)], vectors=people @ R.T, index="exact")
            with pytest.raises(errors.AlreadyExists):
                c.enroll(gallery="g", model="b", ids=["p1"], vectors=people[:1] @ R.T)
            assert c.remove(gallery="g", ids=["p5"]) == 1
            results[name] = c.identify(gallery="g", vectors=probes, model="a", k=5)
            fused = c.identify(gallery="g", vectors={"a": probes, "b": probes @ R.T}, k=3)
            assert fused.ids[0][0] == "p0"
    assert results["milvus"].ids == results["local"].ids  # FLAT = exact
    np.testing.assert_allclose(results["milvus"].scores, results["local"].scores, atol=1e-4)
    assert all("p5" not in row for row in results["milvus"].ids)
    milvus.stop(grace=0.5)
    # After a restart the collection is rebuilt from the database: same answers.
    again = start_server(gallery_backend="milvus", milvus_uri=str(tmp_path / "galleries.db"),
                         data_dir=milvus.settings.data_dir)
    with Client(again.address) as c:
        assert c.identify(gallery="g", vectors=probes, model="a", k=5).ids == results["local"].ids
        c.delete_gallery("g")
        assert c.list_galleries() == []
