"""Python SDK of convergent (numpy, grpcio, protobuf, tqdm; never torch)."""

from convergent.client.client import Client
from convergent.client.errors import ConvergentError
from convergent.client.types import (
    AnchorSetInfo,
    Atlas,
    AtlasEntry,
    AuditEntry,
    ErasureReport,
    FitInfo,
    GalleryInfo,
    IdentifyResult,
    MethodInfo,
    ModelInfo,
    OperatingPoint,
    ServerInfo,
    TlsConfig,
    Usage,
    VerificationReport,
    VerifyResult,
)

__all__ = [
    "AnchorSetInfo",
    "Atlas",
    "AtlasEntry",
    "AuditEntry",
    "Client",
    "ConvergentError",
    "ErasureReport",
    "FitInfo",
    "GalleryInfo",
    "IdentifyResult",
    "MethodInfo",
    "ModelInfo",
    "OperatingPoint",
    "ServerInfo",
    "TlsConfig",
    "Usage",
    "VerificationReport",
    "VerifyResult",
]
