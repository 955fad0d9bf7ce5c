"""Several server replicas on one database (PostgreSQL, and a shared SQLite file on one host),
galleries in process or in one shared Milvus."""

from __future__ import annotations

import threading

import numpy as np

from convergent.client import Client


def test_two_replicas_share_state(start_server, database_url, gallery_backend, milvus_target, tmp_path, rng):
    """Each replica sees the other's writes at once, galleries in process and in one Milvus (a
    milvus-lite file both replicas in this process open, or a Milvus server)."""
    shared: dict = {"database_url": database_url, "gallery_backend": gallery_backend}
    if gallery_backend == "milvus":
        shared["milvus_uri"] = milvus_target["uri"] or str(tmp_path / "shared-milvus.db")
    first = start_server(**shared)
    second = start_server(**shared)
    with Client(first.address) as a, Client(second.address) as b:
        a.register_model("m1", dim=8)
        b.register_model("m2", dim=8)
        ids = [f"x{i}" for i in range(200)]
        X = rng.standard_normal((200, 8))
        a.upload_anchors("m1", anchor_set="s", ids=ids, vectors=X)
        b.upload_anchors("m2", anchor_set="s", ids=ids, vectors=X @ np.linalg.qr(rng.standard_normal((8, 8)))[0])
        fit = b.fit_alignment("m1", "m2", anchor_set="s", method="procrustes")
        assert a.get_fit(fit.id).metrics["n_anchors"] == 200

        G = rng.standard_normal((50, 8))
        a.enroll(gallery="g", model="m2", ids=[f"p{i}" for i in range(50)], vectors=G)
        assert b.identify(gallery="g", vectors=G[:3], model="m2", k=1).ids == [["p0"], ["p1"], ["p2"]]  # b builds its index
        a.enroll(gallery="g", model="m2", ids=["late"], vectors=G[:1] * 3 + 0.01)  # a changes the gallery
        assert b.identify(gallery="g", vectors=G[:1] * 3 + 0.01, model="m2", k=1).ids == [["late"]]  # b sees it
        b.remove(gallery="g", ids=["p1"])
        assert "p1" not in a.identify(gallery="g", vectors=G[1:2], model="m2", k=5).ids[0]
        assert a.erase(["p2"]).gallery_items_deleted == 1
        assert "p2" not in b.identify(gallery="g", vectors=G[2:3], model="m2", k=5).ids[0]


def test_concurrent_uploads_through_two_replicas(start_server, database_url, rng):
    replicas = [start_server(database_url=database_url) for _ in range(2)]
    with Client(replicas[0].address) as c:
        c.register_model("m", dim=16)
    errors: list[Exception] = []

    def upload(replica, worker: int) -> None:
        try:
            with Client(replica.address) as client:
                for batch in range(5):
                    ids = [f"w{worker}-b{batch}-{i}" for i in range(40)]
                    client.upload_anchors("m", anchor_set="s", ids=ids, vectors=rng.standard_normal((40, 16)))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(replicas[w % 2], w)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    with Client(replicas[1].address) as c:
        assert c.count_anchors("m", anchor_set="s") == 4 * 5 * 40
        assert c.list_anchor_sets()[0].data_version == 20  # every committed upload counted once
