"""Galleries on Milvus (a milvus-lite file, and a Milvus standalone server): the same answers as
the local index."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.client import Client, errors

pytest.importorskip("pymilvus", reason="pymilvus is not installed (extra 'milvus')")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (extra 'milvus')")


def unit(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def test_milvus_backend_matches_the_local_index(start_server, milvus_uri, rng):
    local = start_server()
    milvus = start_server(gallery_backend="milvus", milvus_uri=milvus_uri)
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
    again = start_server(gallery_backend="milvus", milvus_uri=milvus_uri,
                         data_dir=milvus.settings.data_dir)
    with Client(again.address) as c:
        assert c.identify(gallery="g", vectors=probes, model="a", k=5).ids == results["local"].ids
        c.delete_gallery("g")
        assert c.list_galleries() == []


def test_replicas_sharing_one_milvus_agree(start_server, fresh_postgres, milvus_uri, rng):
    """Two servers on one PostgreSQL database and one Milvus (one milvus-lite file, both servers
    in this process, or a Milvus server): writes through either, concurrent ones included, are
    seen by both, at once (read-your-writes on any replica)."""
    import threading

    shared = {"database_url": fresh_postgres, "gallery_backend": "milvus", "milvus_uri": milvus_uri}
    a, b = start_server(**shared), start_server(**shared)
    d = 8
    X = unit(rng.standard_normal((400, d)))
    with Client(a.address) as ca, Client(b.address) as cb:
        ca.register_model("m", dim=d)
        ca.enroll(gallery="g", model="m", ids=[f"x{i}" for i in range(100)], vectors=X[:100])
        assert cb.identify(gallery="g", vectors=X[:5], model="m", k=1).ids == [[f"x{i}"] for i in range(5)]
        assert cb.remove(gallery="g", ids=["x0"]) == 1
        assert "x0" not in ca.identify(gallery="g", vectors=X[:1], model="m", k=3).ids[0]

        def writer(client: Client, start: int) -> None:
            for i in range(start, start + 150, 15):  # ten enrolls of 15, then one remove
                client.enroll(gallery="g", model="m", ids=[f"x{j}" for j in range(i, i + 15)], vectors=X[i : i + 15])
            client.remove(gallery="g", ids=[f"x{start}", f"x{start + 1}"])

        threads = [threading.Thread(target=writer, args=(c, s)) for c, s in ((ca, 100), (cb, 250))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        kept = [i for i in range(1, 400) if i not in (100, 101, 250, 251)]
        assert ca.count_gallery("g") == cb.count_gallery("g") == len(kept)
        expected = [[f"x{kept[j]}" for j in np.argsort(-(q @ X[kept].T))[:5]] for q in X[:40]]
        for client in (ca, cb):
            assert client.identify(gallery="g", vectors=X[:40], model="m", k=5).ids == expected


@pytest.mark.usefixtures("milvus_kind")
def test_a_write_that_dies_after_changing_milvus_is_never_served(start_server, rng):
    """Another replica's enroll reaches Milvus, then its database transaction fails: the next
    identify sees a state token that matches no committed version and rebuilds the collection."""
    from convergent.server.inference.milvus_index import MilvusCatalog, collection_name
    from convergent.server.registry.alignment import Alignment
    from convergent.server.registry.galleries import Galleries

    server = start_server(gallery_backend="milvus")
    X = unit(rng.standard_normal((51, 8)))
    with Client(server.address) as c:
        c.register_model("m", dim=8)
        c.enroll(gallery="g", model="m", ids=[f"p{i}" for i in range(50)], vectors=X[:50])
        replica = Galleries(server.store, Alignment(server.store, server.settings), server.settings)
        sync = replica.before_commit("default")

        def dies_before_commit(change):  # noqa: ANN001, ANN202
            sync(change)
            raise RuntimeError("the replica died before its commit")

        with pytest.raises(RuntimeError):
            server.store.galleries.enroll("default", "g", "m", 1, "exact", [(["ghost"], X[50:])], before_commit=dies_before_commit)
        catalog = MilvusCatalog(server.settings.resolved_milvus_uri())
        name = collection_name("default", "g")
        assert "ghost" in catalog.index(catalog.state(name).physical, 8, "FLAT")  # Milvus has it ...
        assert c.count_gallery("g") == 50  # ... the database does not
        assert c.identify(gallery="g", vectors=X[50:], model="m", k=50).ids[0].count("ghost") == 0
        assert "ghost" not in catalog.index(catalog.state(name).physical, 8, "FLAT")  # rebuilt without it
        replica.close()


@pytest.mark.usefixtures("milvus_kind")
def test_a_restart_reuses_the_collections(start_server, monkeypatch, rng):
    """Collections outlive the server: after a restart the state tokens match and nothing is rebuilt."""
    from convergent.server.inference.milvus_index import MilvusCatalog

    rebuilds = []
    original, aside = MilvusCatalog.rebuild, MilvusCatalog.build_aside
    monkeypatch.setattr(MilvusCatalog, "rebuild", lambda self, *a, **kw: rebuilds.append(a[0]) or original(self, *a, **kw))
    monkeypatch.setattr(MilvusCatalog, "build_aside", lambda self, *a, **kw: rebuilds.append(a[0]) or aside(self, *a, **kw))
    server = start_server(gallery_backend="milvus")
    X = unit(rng.standard_normal((30, 8)))
    with Client(server.address) as c:
        c.register_model("m", dim=8)
        c.enroll(gallery="g", model="m", ids=[f"p{i}" for i in range(20)], vectors=X[:20], index="hnsw")
        c.enroll(gallery="g", model="m", ids=[f"p{i}" for i in range(20, 30)], vectors=X[20:])
        before = c.identify(gallery="g", vectors=X[:5], model="m", k=3)
    assert len(rebuilds) == 1  # the gallery's creation; the second enroll was incremental
    server.stop(grace=0.5)
    again = start_server(gallery_backend="milvus", data_dir=server.settings.data_dir)
    with Client(again.address) as c:
        assert c.identify(gallery="g", vectors=X[:5], model="m", k=3).ids == before.ids
    assert len(rebuilds) == 1


@pytest.mark.usefixtures("milvus_kind")
def test_erasure_reaches_milvus_after_the_gallery_model_was_deleted(start_server, rng):
    server = start_server(gallery_backend="milvus")
    with Client(server.address) as c:
        c.register_model("m", dim=4)
        c.enroll(gallery="g", model="m", ids=["alice", "bob"], vectors=rng.standard_normal((2, 4)))
        c.delete_model("m")
        report = c.erase(["alice"])
        assert report.gallery_items_deleted == 1 and report.galleries_changed == ["g"]
    from convergent.server.inference.milvus_index import MilvusCatalog, collection_name

    catalog = MilvusCatalog(server.settings.resolved_milvus_uri())
    stored = catalog.client.query(collection_name("default", "g"), filter="", output_fields=["id"], limit=10, consistency_level="Strong")
    assert [row["id"] for row in stored] == ["bob"]


def test_milvus_unreachable_is_unavailable_and_stores_nothing(start_server):
    server = start_server(gallery_backend="milvus", milvus_uri="http://127.0.0.1:9")
    with Client(server.address, timeout=20) as c:
        c.register_model("m", dim=4)
        with pytest.raises(errors.Unavailable, match="Milvus"):
            c.enroll(gallery="g", model="m", ids=["a"], vectors=np.ones((1, 4)))
        assert c.list_galleries() == []


@pytest.mark.usefixtures("milvus_kind")
def test_start_up_logs_whether_milvus_answers(start_server, tmp_path, caplog):
    import logging

    import time

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "convergent.galleries"]

    with caplog.at_level(logging.INFO, logger="convergent.galleries"):
        good = start_server(gallery_backend="milvus")
        start_server(gallery_backend="milvus", milvus_uri="http://127.0.0.1:9")
        expected = (f"galleries in Milvus at {good.settings.resolved_milvus_uri()} (0 gallery collections)",
                    "Milvus at http://127.0.0.1:9 is not reachable")
        deadline = time.monotonic() + 60  # the connection is made in the background
        while not all(any(m.startswith(e) for m in logged()) for e in expected):
            assert time.monotonic() < deadline, logged()
            time.sleep(0.1)
    assert any("gallery calls answer UNAVAILABLE until it is" in m for m in logged())


@pytest.mark.usefixtures("milvus_kind")
def test_a_rebuild_runs_off_the_write_lock(start_server, monkeypatch, rng):
    """A stale gallery is rebuilt blue-green: while its new collection is being filled, writes to
    another gallery and to the gallery itself complete; the switch catches up on them."""
    import threading
    import time

    from convergent.server.inference.milvus_index import MilvusCatalog, collection_name

    server = start_server(gallery_backend="milvus")
    X = unit(rng.standard_normal((70, 8)))
    filling, release = threading.Event(), threading.Event()
    original = MilvusCatalog.build_aside

    def held_build(self, *args, **kwargs):  # noqa: ANN001, ANN202
        built = original(self, *args, **kwargs)
        filling.set()
        assert release.wait(120), "the test never released the rebuild"
        return built

    with Client(server.address, timeout=30) as c:
        c.register_model("m", dim=8)
        c.enroll(gallery="big", model="m", ids=[f"p{i}" for i in range(50)], vectors=X[:50])
        c.enroll(gallery="other", model="m", ids=[f"o{i}" for i in range(10)], vectors=X[50:60])
        catalog = MilvusCatalog(server.settings.resolved_milvus_uri())
        name = collection_name("default", "big")
        catalog.set_state(name, "dirty")  # as a write that failed half-way leaves it
        deadline = time.monotonic() + 30  # identify reads the state without waiting: once Milvus applied it
        while catalog.state(name, fresh=False).token != "dirty":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        monkeypatch.setattr(MilvusCatalog, "build_aside", held_build)
        found: dict = {}

        def rebuilding_identify() -> None:
            with Client(server.address, timeout=120) as reader:
                found["ids"] = reader.identify(gallery="big", vectors=X[:1], model="m", k=1).ids

        reader = threading.Thread(target=rebuilding_identify)
        reader.start()
        assert filling.wait(60), "the identify did not start a rebuild"
        # The rebuild is in progress (held): writes go on, each well inside the client's 30 s.
        c.enroll(gallery="other", model="m", ids=["o-new"], vectors=X[60:61])
        assert c.identify(gallery="other", vectors=X[60:61], model="m", k=1).ids == [["o-new"]]
        c.enroll(gallery="big", model="m", ids=["late"], vectors=X[61:62])
        assert c.remove(gallery="big", ids=["p1"]) == 1
        assert reader.is_alive()  # still waiting for its rebuild
        release.set()
        reader.join(timeout=120)
        assert found["ids"] == [["p0"]]
        assert catalog.state(name).physical != name  # switched to the collection built aside
        ids = c.identify(gallery="big", vectors=X[[0, 1, 61]], model="m", k=3).ids
        assert ids[0][0] == "p0" and ids[2][0] == "late" and all("p1" not in row for row in ids)
        stored = catalog.client.query(catalog.state(name).physical, filter="", output_fields=["id"], limit=100,
                                      consistency_level="Strong")
        assert sorted(row["id"] for row in stored) == sorted([f"p{i}" for i in range(50) if i != 1] + ["late"])
