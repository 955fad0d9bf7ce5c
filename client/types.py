"""Plain results of SDK calls (frozen dataclasses; no protobuf types leak to users)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: ``dim`` floats per vector; ``normalize`` = server L2-normalises them."""

    name: str
    dim: int
    version: int
    normalize: bool


@dataclass(frozen=True)
class AnchorSetInfo:
    """An anchor set: anchor count per model, and a version that grows with every change."""

    name: str
    models: dict[str, int] = field(default_factory=dict)
    data_version: int = 0


@dataclass(frozen=True)
class ServerInfo:
    version: str
    api: str
    max_receive_message_bytes: int
    max_send_message_bytes: int
    max_vectors_per_message: int
    max_dim: int
    max_name_length: int
    max_page_size: int


@dataclass(frozen=True)
class MethodInfo:
    """A fit method the server offers (``Client.list_methods``). ``name``: FitAlignment's
    ``method`` (or, for FitSharedSpace and FitCooperative, the method's name in the docs);
    ``rpc``: the call that takes it; ``params_schema``: the JSON Schema (draft 2020-12) of its
    ``params`` as a dict, each property with its type, bounds, description and default (absent
    where the server chooses from the data); ``candidates``: ``auto``'s, simple to complex."""

    name: str
    rpc: str
    summary: str
    params_schema: dict[str, Any]
    candidates: list[str] = field(default_factory=list)

    @property
    def defaults(self) -> dict[str, Any]:
        """The parameters that have a default, at their defaults (a valid ``params``)."""
        return {key: prop["default"] for key, prop in self.params_schema.get("properties", {}).items() if "default" in prop}


@dataclass(frozen=True)
class FitInfo:
    """A fitted source -> target map. ``metrics`` are measured on ``n_heldout`` held-out anchors
    (docs/alignment.md "Diagnostics" lists each key's range and direction); ``stale``: the anchor set or a model
    changed since the fit; ``created_at``: seconds since the Unix epoch."""

    id: str
    method: str
    source: str
    target: str
    anchor_set: str
    metrics: dict[str, float]
    warnings: list[str]
    converged: bool
    stale: bool
    created_at: float
    requested_method: str = ""
    source_version: int = 0
    target_version: int = 0
    data_version: int = 0
    params: dict = field(default_factory=dict)
    models: list[str] = field(default_factory=list)  # method "shared": the models of the space
    auto_winner: str = ""  # requested_method "auto": the winning candidate, e.g. "procrustes_scaled"


@dataclass(frozen=True)
class GalleryInfo:
    """A gallery of one model's vectors, searched with an ``exact`` or ``hnsw`` index."""

    name: str
    model: str
    model_version: int
    index: str
    size: int


@dataclass(frozen=True)
class IdentifyResult:
    """``ids[i]``: gallery ids for probe i, best first; ``scores`` (n, k'): higher = more
    similar, k' = min(k, gallery size); hnsw pads missing hits with "" / -inf. ``scoring``:
    what the scores are, "cosine" (in [-1, 1]) or "csls" (2 cos - r_T - r_S, in [-4, 4]).
    ``route``: "direct" or "fit:<id>" (the map the probes went through). A fused identify
    (several parties) returns fused z-scores instead (higher = better) and fills ``parties``."""

    ids: list[list[str]]
    scores: Any
    route: str = ""
    scoring: str = "cosine"
    direction: str = "forward"          # "forward" (the gallery's space) or "both" (both models' spaces averaged)
    direction_reason: str = ""
    # Open-set identify (fpir given) only: accepted[i] = scores[i, 0] >= threshold; the threshold
    # was calibrated for fpir_requested on n_calibration_searches non-mated searches
    # (calibration "anchors": the route's anchors, no labels; "labelled": non_mated probes given),
    # where it achieved fpir_calibration.
    accepted: Any = None
    threshold: float = 0.0
    fpir_requested: float = 0.0
    fpir_calibration: float = 0.0
    n_calibration_searches: int = 0
    calibration: str = ""
    calibration_searches: str = ""
    n_excluded: int = 0
    # Fused identify only: party model -> weight (0 = did not contribute), and how it was set.
    parties: dict[str, float] = field(default_factory=dict)
    party_routes: dict[str, str] = field(default_factory=dict)
    weight_sources: dict[str, str] = field(default_factory=dict)

    @property
    def contributors(self) -> list[str]:
        """Parties whose scores went into the fused result (weight > 0)."""
        return [party for party, weight in self.parties.items() if weight > 0]


@dataclass(frozen=True)
class VerifyResult:
    """``scores`` (n,): cosine of each pair in b's space, or (``direction`` "both") the mean of its
    cosines in b's and in a's space (higher = more similar; ``direction_reason`` says why that
    direction); ``accept`` (n,):
    score >= ``threshold``, the threshold calibrated for ``far_requested``. ``far_calibration`` /
    ``tar_calibration``: false / true accept rates measured on the calibration pairs
    (``n_genuine`` / ``n_impostor`` of them), whose population ``calibration_pairs`` names in
    words. ``calibration``: "labelled" (pairs given to calibrate), "anchors-repeats-excluded"
    (anchor pairs, with ``n_excluded`` pairs of different anchors that look like one subject
    left out of the impostors) or "anchors-distinct". Anchor genuine pairs are the same item
    seen by both models, each mapped by a refit that never saw it: their TAR is higher than
    two different photos of one person get (docs/verification.md has both)."""

    scores: Any
    accept: Any
    threshold: float
    far_requested: float
    far_calibration: float
    tar_calibration: float
    calibration: str
    n_genuine: int
    n_impostor: int
    route: str
    calibration_pairs: str = ""
    n_excluded: int = 0
    direction: str = "a_to_b"
    direction_reason: str = ""


@dataclass(frozen=True)
class OperatingPoint:
    """TAR at a requested FAR: accept iff score >= ``threshold``; ``far`` as achieved on the
    calibration impostors (<= ``requested_far``), ``tar`` on its genuine pairs."""

    requested_far: float
    threshold: float
    far: float
    tar: float


@dataclass(frozen=True)
class VerificationReport:
    """Operating points of a model pair's verification calibration (see :class:`VerifyResult`
    for ``calibration`` and ``calibration_pairs``). ``points``: only the FARs the impostor pairs
    resolve (>= 10 / FAR of them). ``eer``: equal error rate, at ``eer_threshold``."""

    calibration: str
    calibration_pairs: str
    route: str
    points: list[OperatingPoint]
    eer: float
    eer_threshold: float
    n_genuine: int
    n_impostor: int
    n_excluded: int
    direction: str = "a_to_b"
    direction_reason: str = ""


@dataclass(frozen=True)
class TlsConfig:
    """TLS for :class:`~convergent.client.Client`: ``ca_cert`` (PEM bytes or a path; None = the
    system roots) verifies the server; ``client_cert`` + ``client_key`` authenticate this client
    (mutual TLS); ``server_name`` overrides the name checked in the server's certificate."""

    ca_cert: bytes | str | None = None
    client_cert: bytes | str | None = None
    client_key: bytes | str | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class Usage:
    """The caller's tenant, the vectors it stores (anchors + gallery items) against its quota
    (0 = none), and the calling key's id and role."""

    tenant: str
    stored_vectors: int
    max_vectors: int
    role: str
    key_id: str


@dataclass(frozen=True)
class ErasureReport:
    anchors_deleted: int
    gallery_items_deleted: int
    anchor_sets_changed: list[str]
    galleries_changed: list[str]
    stale_fits: list[str]


@dataclass(frozen=True)
class AtlasEntry:
    """One ordered pair of an anchor set's atlas: the newest fit of ``source`` -> ``target`` on
    the set (``fit_id`` "": none; ``stale``: the set or a model changed since) and its held-out
    diagnostics, measured on ``n_heldout`` anchors the map was not fitted on (NaN: not measured).
    ``top1``, ``cka``, ``mutual_knn``: higher is better; ``condition_number``: lower is better."""

    source: str
    target: str
    n_pairs: int
    fit_id: str
    method: str
    stale: bool
    top1: float
    cka: float
    mutual_knn: float
    condition_number: float
    n_heldout: int

    @property
    def current(self) -> bool:
        return bool(self.fit_id) and not self.stale


@dataclass(frozen=True)
class Atlas:
    """The compatibility atlas of ``anchor_set`` at ``data_version``: ``entries`` for every
    ordered pair of ``models`` (in the clustering's leaf order) and ``clusters``: models whose
    average-linkage distance 1 - symmetric held-out top-1 is at most ``cluster_distance``."""

    anchor_set: str
    data_version: int
    models: list[str]
    entries: list[AtlasEntry]
    clusters: list[list[str]]
    cluster_distance: float

    def entry(self, source: str, target: str) -> AtlasEntry:
        for e in self.entries:
            if (e.source, e.target) == (source, target):
                return e
        raise KeyError((source, target))

    def missing(self) -> list[AtlasEntry]:
        """Routes with no current fit (none, or stale), with anchors to fit them on."""
        return [e for e in self.entries if not e.current and e.n_pairs > 0]


@dataclass(frozen=True)
class AuditEntry:
    """Who (``key_id``) called ``method`` on ``target``, when (``at``: seconds since the Unix epoch),
    and the ``outcome`` ("OK" or the status code's name)."""

    at: float
    key_id: str
    method: str
    target: str
    outcome: str
    request_id: str
