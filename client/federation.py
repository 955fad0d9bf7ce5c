"""Federated inference through a cooperative head (CE-FI): the SDK's part (numpy + gRPC only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf.struct_pb2 import Struct

from convergent.client import errors
from convergent.client._convert import _count, _fit_info, _matrix
from convergent.v1 import alignment_pb2
from convergent.wire import decode_matrix, encode_matrix, rows_per_chunk

if TYPE_CHECKING:
    from convergent.client.types import FitInfo


class FederationMixin:
    """``fit_cooperative`` and ``predict`` (mixed into :class:`convergent.client.Client`)."""

    _alignment: Any
    _max_message_bytes: int
    timeout: float

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any: ...  # Client's

    def fit_cooperative(self, space: str, anchor_set: str, teachers: Sequence[str], **params: Any) -> FitInfo:
        """Train a classifier on the shared space ``space`` (a ``fit_shared_space`` id) by
        distillation: for the anchors of ``anchor_set`` that every party and teacher embedded,
        it learns to reproduce the mean of the ``teachers``' class probabilities (teacher models
        are registered with ``normalize=False``; their anchor vectors are a party's predicted
        probabilities) from each party's consensus coordinates. No labels anywhere.

        Returns the head as a fit (method "cooperative"); ``fit.metrics`` hold, on held-out
        anchors, ``<party>.agreement`` / ``fused.agreement`` (share of anchors where the head's
        top class equals the combined teachers', higher is better) and ``.cross_entropy`` to
        them (lower is better). ``params``: ``reg``, ``max_iter``, ``seed``.
        """
        if isinstance(teachers, str):
            raise errors.InvalidArgument("teachers must be a list of model names, not one string")
        struct = Struct()
        struct.update(params)
        request = alignment_pb2.FitCooperativeRequest(space=space, anchor_set=anchor_set, teachers=list(teachers),
                                                      params=struct)
        return _fit_info(self._call(self._alignment.FitCooperative, request, timeout=max(self.timeout, 600.0)))

    def predict(self, head: str, vectors: Mapping[str, np.ndarray], model_versions: Mapping[str, int] | None = None,
                batch_size: int = 4096) -> np.ndarray:
        """Class probabilities (n, n_classes) float32 of n items through the cooperative head
        ``head``. ``vectors``: party model -> (n, d_model), row i of every party the same item;
        one party alone works too. The parties are combined by the mean of their consensus
        coordinates, then the head's softmax. Rows go in batches of ``batch_size``."""
        if not isinstance(vectors, Mapping) or not vectors:
            raise errors.InvalidArgument("vectors must be a non-empty dict of party model -> (n, dim) array")
        parties = {m: _matrix(v, f"vectors[{m!r}]") for m, v in vectors.items()}
        versions = dict(model_versions or {})
        n = max(len(v) for v in parties.values())
        width = sum(v.shape[1] for v in parties.values()) or 1
        rows = min(_count(batch_size, "batch_size"), rows_per_chunk(width, batch_size, self._max_message_bytes))
        out = []
        for start in range(0, max(n, 1), rows):
            request = alignment_pb2.PredictRequest(head=head, parties=[
                alignment_pb2.PartyVectors(model=m, model_version=_count(versions.get(m, 0), "model_version", 0),
                                           vectors=encode_matrix(v[start : start + rows]))
                for m, v in parties.items()
            ])
            out.append(decode_matrix(self._call(self._alignment.Predict, request).probabilities))
        return np.vstack(out)
