"""Domain types shared by storage, the use cases (registry) and the RPC codec (pydantic, immutable).

They import nothing of the server, so storage and registry both depend on this module and not
on each other (storage never imports registry)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class ModelRecord(Record):
    """A registered embedding model: the space its vectors live in."""

    name: str
    dim: int
    version: int
    normalize: bool
    created_at: float  # seconds since the Unix epoch


class AnchorSetRecord(Record):
    """An anchor set: ids embedded by one or more models; ``models`` maps model -> anchor count."""

    name: str
    models: dict[str, int]
    data_version: int
    updated_at: float


class UploadResult(Record):
    """Outcome of one committed upload stream (counts of rows, by what happened to them)."""

    received: int
    inserted: int
    unchanged: int
    overwritten: int
    total: int
    data_version: int


class Page(Record):
    """One page of a List call; ``next_token`` is "" on the last page."""

    items: tuple
    next_token: str


class FitRecord(Record):
    """A fitted source -> target map and how good it is on held-out anchors.

    ``stale`` is not stored: the registry sets it when the anchor set or a model changed
    after the fit (``data_version`` or a model version no longer current).
    """

    id: str
    method: str
    requested_method: str
    source: str
    source_version: int
    target: str
    target_version: int
    anchor_set: str
    data_version: int
    params: dict
    metrics: dict[str, float]
    warnings: list[str]
    converged: bool
    created_at: float
    stale: bool = False


class AtlasEntry(Record):
    """One ordered pair of an anchor set's atlas: the newest fit of source -> target on the set
    (``fit_id`` empty: none) and its held-out diagnostics (NaN where none was measured)."""

    source: str
    target: str
    n_pairs: int  # anchors of the set both models embedded
    fit_id: str = ""
    method: str = ""
    stale: bool = False
    top1: float = float("nan")
    cka: float = float("nan")
    mutual_knn: float = float("nan")
    condition_number: float = float("nan")
    n_heldout: int = 0


class AtlasRecord(Record):
    """The compatibility atlas of an anchor set (see ``server/align/atlas.py``)."""

    anchor_set: str
    data_version: int
    models: list[str]  # in the clustering's leaf order
    entries: list[AtlasEntry]
    clusters: list[list[str]]
    cluster_distance: float


class GalleryRecord(Record):
    """A gallery: enrolled vectors of one model (version), searched with one index kind."""

    name: str
    model: str
    model_version: int
    index_kind: str
    size: int
    created_at: float
    version: int = 0  # grows with every change of the items


class ErasureReport(Record):
    """What one erasure removed, and the fits it made stale."""

    anchors_deleted: int
    gallery_items_deleted: int
    anchor_sets_changed: list[str]
    galleries_changed: list[str]
    stale_fits: list[str]


@dataclass
class GalleryChange:
    """What a write transaction does to one gallery, handed to a ``before_commit`` hook while
    the write lock is held (no other write anywhere meanwhile). If the hook raises, nothing
    is committed.

    ``before`` is None for a gallery this transaction creates, ``after`` None for one it
    deletes; both are the same record when nothing changes (the store's ``hold``).
    ``items()`` reads the gallery as the transaction sees it: (ids, (n, dim) float32).
    """

    before: GalleryRecord | None
    after: GalleryRecord | None
    items: Callable[[], tuple[list[str], np.ndarray]]
    added_ids: list[str] = field(default_factory=list)
    added: np.ndarray | None = None
    removed_ids: list[str] = field(default_factory=list)


BeforeCommit = Callable[[GalleryChange], None]
# GalleryStorage.hold_since's action: (record or None, ids enrolled since, their vectors, a reader of all ids).
HoldAction = Callable[[GalleryRecord | None, list[str], np.ndarray, Callable[[], list[str]]], None]
