"""Where the heavy products run: "cpu" (numpy, the default) or a CUDA device through torch."""

from __future__ import annotations

from convergent.server.errors import InvalidInput

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(requested: str = "cpu") -> str:
    """``"cpu"``, ``"cuda"`` (a GPU must be present) or ``"auto"`` (CUDA when present) -> the device used."""
    if requested not in DEVICES:
        raise InvalidInput(f"device must be one of {list(DEVICES)}, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a server dependency
        torch = None
    available = torch is not None and torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise InvalidInput("device 'cuda' requested but no CUDA device is available")
    return "cuda" if available else "cpu"
