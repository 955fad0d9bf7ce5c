"""LocalIndexes: an in-memory gallery index kept in step with commits answers as the index a
restart (or another replica) builds from storage, to the bit."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.server.inference import normalize_rows
from convergent.server.records import GalleryRecord, ModelRecord
from convergent.server.registry.gallery_indexes import LocalIndexes

pytest.importorskip("faiss")


class _Stored:
    """The gallery's stored items (what ``GalleryStorage.items`` reads), in enrolment order."""

    def __init__(self) -> None:
        self.version, self.ids, self.vectors = 0, [], np.zeros((0, 64), np.float32)

    def items(self, tenant: str, name: str, dim: int):  # noqa: ANN201
        return self.version, list(self.ids), self.vectors.copy()


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_an_index_kept_in_step_answers_as_one_built_from_storage(kind):
    rng = np.random.default_rng(0)
    G = normalize_rows(rng.standard_normal((4000, 64)))
    Q = normalize_rows(rng.standard_normal((200, 64)))
    ids = [f"g{i}" for i in range(len(G))]
    model = ModelRecord(name="m", dim=64, version=1, normalize=False, created_at=0.0)
    stored = _Stored()
    running = LocalIndexes(stored, "cpu")

    def record() -> GalleryRecord:
        return GalleryRecord(name="g", model="m", model_version=1, index_kind=kind, size=len(stored.ids),
                             created_at=0.0, version=stored.version)

    def answers(indexes: LocalIndexes):  # noqa: ANN202
        with indexes.searchable("t", record(), model) as index:
            return index.search(Q, 30)

    for start, stop in ((0, 1500), (1500, 1501), (1501, 4000)):  # enrolments, the index built after the first
        stored.version += 1
        stored.ids += ids[start:stop]
        stored.vectors = np.vstack([stored.vectors, G[start:stop]])
        if start:
            running.committed("t", "g", stored.version, added_ids=ids[start:stop], added=G[start:stop])
        answers(running)
    gone = set(ids[::3])  # an HNSW graph would keep these as waypoints
    stored.version += 1
    keep = [i for i, x in enumerate(stored.ids) if x not in gone]
    stored.ids, stored.vectors = [stored.ids[i] for i in keep], stored.vectors[keep]
    running.committed("t", "g", stored.version, removed_ids=sorted(gone))
    got, want = answers(running), answers(LocalIndexes(stored, "cpu"))
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
