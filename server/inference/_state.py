"""State helpers shared by the index implementations (no pickling: JSON params + plain arrays)."""

from __future__ import annotations

import numpy as np

from convergent.server.errors import InvalidInput
from convergent.server.inference._validate import as_ids


def check_class(params: dict, name: str) -> None:
    if not isinstance(params, dict) or params.get("class") != name:
        got = params.get("class") if isinstance(params, dict) else params
        raise InvalidInput(f"state is for {got!r}, not {name}")


def state_ids(arr, unique: bool = True) -> list[str]:
    arr = np.asarray(arr)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind != "U"):
        raise InvalidInput(f"state ids must be a 1-D unicode array, got {arr.dtype} {arr.shape}")
    ids = arr.tolist()
    return as_ids(ids, "state ids") if unique else ids
