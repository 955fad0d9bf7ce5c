"""Routes between models: the fit that maps one model into another, and vectors through it.

Shared by gallery search and verification. Every similarity downstream is a cosine of unit
rows: higher is more similar.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from convergent.server.records import FitRecord, ModelRecord

if TYPE_CHECKING:
    from convergent.server.registry.alignment import Alignment


def unit(X: np.ndarray) -> np.ndarray:
    """Unit rows of X (n, d), float32 (a zero row stays zero)."""
    from convergent.server.inference import normalize_rows

    return normalize_rows(X)


def route_name(fit: FitRecord | None) -> str:
    return "direct" if fit is None else f"fit:{fit.id}"


class Routed:
    """Route helpers for use cases that hold ``self.alignment`` (an :class:`Alignment`)."""

    alignment: Alignment

    def _route(self, tenant: str, src: ModelRecord, tgt: ModelRecord) -> FitRecord | None:
        """None for the same model, else the fit that maps ``src`` into ``tgt``."""
        if src.name == tgt.name:
            return None
        return self.alignment.latest_route(tenant, src, tgt)

    def _into(self, tenant: str, fit: FitRecord | None, X: np.ndarray, src: ModelRecord, tgt: ModelRecord) -> np.ndarray:
        """Prepared vectors of ``src`` (checked once, by ``prepare_vectors``) as unit vectors in
        ``tgt``'s space, through ``fit``: normalised once here (rows of a model that normalises
        are unit already and pass as they are)."""
        if fit is None:
            return X if src.normalize else unit(X)
        return unit(self.alignment.map_prepared(tenant, fit, X, src, tgt))
