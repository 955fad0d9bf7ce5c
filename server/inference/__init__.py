"""Pure inference math: gallery indexes, verification, threshold calibration, score fusion.

No gRPC, no storage. Scores are similarities everywhere: higher = more similar; the
verification rule is ``accept iff score >= threshold``.
"""

from convergent.server.inference.calibration import (
    Calibration,
    EqualErrorRate,
    OperatingPoint,
    PairScores,
    calibrate_threshold,
    equal_error_rate,
    labelled_pairs,
    min_impostors_for,
    operating_points,
    pairs_from_anchor_set,
)
from convergent.server.inference.repeats import RepeatedSubjects, find_repeated_subjects
from convergent.server.inference.fusion import FusedResult, combination_weights, fuse_dense, fuse_scores, zscore_rows
from convergent.server.inference.identify import cosine_scores, normalize_rows
from convergent.server.inference.index import ExactIndex, HnswIndex, VectorIndex, index_from_state, matmul_backend
from convergent.server.inference.verify import both_spaces, verify

__all__ = [
    "Calibration",
    "EqualErrorRate",
    "ExactIndex",
    "FusedResult",
    "HnswIndex",
    "OperatingPoint",
    "PairScores",
    "RepeatedSubjects",
    "VectorIndex",
    "both_spaces",
    "calibrate_threshold",
    "combination_weights",
    "cosine_scores",
    "equal_error_rate",
    "find_repeated_subjects",
    "fuse_dense",
    "fuse_scores",
    "index_from_state",
    "labelled_pairs",
    "matmul_backend",
    "min_impostors_for",
    "normalize_rows",
    "operating_points",
    "pairs_from_anchor_set",
    "verify",
    "zscore_rows",
]
