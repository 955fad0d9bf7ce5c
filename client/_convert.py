"""Protobuf replies -> the SDK's types, and the checks made before anything is sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from google.protobuf import json_format

from convergent.client import errors
from convergent.client.types import FitInfo, GalleryInfo, ModelInfo
from convergent.v1 import alignment_pb2, galleries_pb2, models_pb2
from convergent.wire import decode_matrix


def _model_info(pb: models_pb2.Model) -> ModelInfo:
    return ModelInfo(name=pb.name, dim=pb.dim, version=pb.version, normalize=pb.normalize)


_INDEX_NAMES = {galleries_pb2.INDEX_KIND_EXACT: "exact", galleries_pb2.INDEX_KIND_HNSW: "hnsw"}
_INDEX_KINDS = {name: value for value, name in _INDEX_NAMES.items()}


def _gallery_info(pb: galleries_pb2.Gallery) -> GalleryInfo:
    return GalleryInfo(
        name=pb.name, model=pb.model, model_version=pb.model_version,
        index=_INDEX_NAMES.get(pb.index, "exact"), size=pb.size,
    )


UINT32_MAX = 2**32 - 1


def _count(value: Any, name: str, low: int = 1, high: int = UINT32_MAX) -> int:
    """An int in [low, high] (bools and floats refused), else :class:`InvalidArgument` before
    anything is sent (protobuf would raise a bare ValueError for a negative uint32)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise errors.InvalidArgument(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return int(value)


def _matrix(vectors: Any, name: str) -> np.ndarray:
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise errors.InvalidArgument(f"{name} must be 2-D (n, dim), got shape {array.shape}")
    return array


def _joined(replies: Sequence[Any]) -> tuple[list[list[str]], np.ndarray]:
    """The ids (row lists) and scores (n, k') of identify replies of consecutive probe batches."""
    ids: list[list[str]] = []
    blocks = []
    for reply in replies:
        scores = decode_matrix(reply.scores)
        ids += _rows(list(reply.ids), scores)
        blocks.append(scores)
    return ids, np.vstack(blocks) if len(blocks) > 1 else blocks[0].copy()


def _rows(flat: list[str], scores: np.ndarray) -> list[list[str]]:
    """Row-major flat ids -> one list per row of ``scores``."""
    width = scores.shape[1]
    return [flat[i * width : (i + 1) * width] for i in range(scores.shape[0])]


def _fit_info(pb: alignment_pb2.Fit) -> FitInfo:
    return FitInfo(
        id=pb.id, method=pb.method, source=pb.source, target=pb.target, anchor_set=pb.anchor_set,
        metrics=dict(pb.metrics), warnings=list(pb.warnings), converged=pb.converged, stale=pb.stale,
        created_at=pb.created_at.ToNanoseconds() / 1e9, requested_method=pb.requested_method,
        source_version=pb.source_version, target_version=pb.target_version, data_version=pb.data_version,
        params=json_format.MessageToDict(pb.params), models=list(pb.models), auto_winner=pb.auto_winner,
    )
