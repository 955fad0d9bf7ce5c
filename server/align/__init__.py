"""Math of convergent: fit linear maps between embedding spaces from paired anchors.

Pure numpy/scipy; no gRPC, no storage. See DESIGN.md, "The math module".
"""

from convergent.server.align.maps import CCAMap, ProcrustesMap, RidgeMap
from convergent.server.align.methods import CANDIDATES, DEFAULT_CANDIDATES, METHODS, estimator_from_state
from convergent.server.align.matching import PermutationMap, SemiMatchingMap, hidden_activations
from convergent.server.align.metrics import (
    linear_cka,
    matched_correlation_stats,
    mutual_knn,
    mutual_knn_chance,
    r2_score,
    retrieval_margin,
    retrieval_topk,
)
from convergent.server.align.mlp import ResidualMLPMap
from convergent.server.align.select import (
    AutoResult,
    diagnostics,
    fit_auto,
    fit_auto_stats,
)
from convergent.server.align.shared import SharedSpace
from convergent.server.align.sparse import SparseMap
from convergent.server.align.spectral import SpectralMatching
from convergent.server.align.device import resolve_device
from convergent.server.align.split import heldout_split
from convergent.server.align.stats import PairedStats

__all__ = [
    "AutoResult",
    "CANDIDATES",
    "CCAMap",
    "DEFAULT_CANDIDATES",
    "METHODS",
    "PairedStats",
    "ProcrustesMap",
    "ResidualMLPMap",
    "RidgeMap",
    "diagnostics",
    "estimator_from_state",
    "fit_auto",
    "fit_auto_stats",
    "heldout_split",
    "resolve_device",
    "linear_cka",
    "matched_correlation_stats",
    "mutual_knn",
    "mutual_knn_chance",
    "r2_score",
    "retrieval_margin",
    "retrieval_topk",
    "PermutationMap",
    "SemiMatchingMap",
    "SharedSpace",
    "SparseMap",
    "SpectralMatching",
    "hidden_activations",
]
