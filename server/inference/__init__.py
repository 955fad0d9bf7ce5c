"""Pure inference math: gallery indexes, verification, threshold calibration, score fusion.

No gRPC, no storage. Scores are similarities everywhere: higher = more similar; the
verification rule is ``accept iff score >= threshold``.
"""

from convergent.server.inference.calibration import (
    Calibration,
    PairScores,
    calibrate_threshold,
    labelled_pairs,
    min_impostors_for,
    pairs_from_anchor_set,
)
from convergent.server.inference.fusion import FusedResult, fuse_dense, fuse_scores, zscore_rows
from convergent.server.inference.identify import cosine_scores, normalize_rows
from convergent.server.inference.index import ExactIndex, HnswIndex, VectorIndex, index_from_state, matmul_backend
from convergent.server.inference.verify import verify

__all__ = [
    "Calibration",
    "ExactIndex",
    "FusedResult",
    "HnswIndex",
    "PairScores",
    "VectorIndex",
    "calibrate_threshold",
    "cosine_scores",
    "fuse_dense",
    "fuse_scores",
    "index_from_state",
    "labelled_pairs",
    "matmul_backend",
    "min_impostors_for",
    "normalize_rows",
    "pairs_from_anchor_set",
    "verify",
    "zscore_rows",
]
