"""Who is calling: API keys, roles and tenants — the one place where access rules live.

A tenant is a federation; its parties hold API keys with a role:

* ``reader``: identify, verify, transform, and every read (get / list / count / export);
* ``party``: + upload anchors, register models, fit, enroll, calibrate;
* ``admin``: + every delete, gallery removals and erasure.

Keys look like ``cvg.<key id>.<secret>`` and travel as ``authorization: Bearer <key>`` or
``x-api-key: <key>`` metadata. Only the SHA-256 of the secret is stored; it is compared in
constant time. With authentication off (the default on loopback addresses) every call acts as
an admin of the ``default`` tenant. The health service is never authenticated.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from convergent.server.errors import InvalidInput, PermissionDenied, Unauthenticated
from convergent.server.storage.protocols import KeyStorage

DEFAULT_TENANT = "default"
ROLES = ("reader", "party", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}

# Every RPC and the least role that may call it. A servicer method missing here fails at import.
METHOD_ROLES: dict[str, str] = {
    # models
    "RegisterModel": "party", "GetModel": "reader", "ListModels": "reader", "DeleteModel": "admin",
    # anchors
    "UploadAnchors": "party", "CountAnchors": "reader", "ListAnchorSets": "reader", "DeleteAnchors": "admin",
    # server
    "GetServerInfo": "reader", "ListMethods": "reader", "GetUsage": "reader", "ListAuditLog": "admin",
    # alignment
    "FitAlignment": "party", "FitSharedSpace": "party", "GetFit": "reader", "GetAtlas": "reader", "ListFits": "reader",
    "DeleteFit": "admin", "Transform": "reader", "ExportFit": "reader",
    "FitCooperative": "party", "Predict": "reader",
    # galleries and inference
    "Enroll": "party", "Remove": "admin", "GetGallery": "reader", "ListGalleries": "reader",
    "DeleteGallery": "admin", "Identify": "reader", "IdentifyFused": "reader", "Verify": "reader",
    "VerificationReport": "reader",
    "Calibrate": "party", "Erase": "admin",
}
# Calls written to the audit log (who, when, on what, outcome).
AUDITED = frozenset(
    {"Identify", "IdentifyFused", "Verify", "DeleteModel", "DeleteAnchors", "DeleteFit", "DeleteGallery", "Remove", "Erase"}
)
_KEY = re.compile(r"cvg\.([0-9a-f]{12})\.([A-Za-z0-9_-]{20,128})")


@dataclass(frozen=True)
class Principal:
    tenant: str
    key_id: str
    role: str


ANONYMOUS_ADMIN = Principal(DEFAULT_TENANT, "-", "admin")
principal_var: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal", default=ANONYMOUS_ADMIN)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """(key id, secret, the full key to hand to the party)."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    return key_id, secret, f"cvg.{key_id}.{secret}"


def check_role(role: str) -> str:
    if role not in _RANK:
        raise InvalidInput(f"unknown role {role!r}; choose from {list(ROLES)}", reason="UNKNOWN_OPTION", field="role")
    return role


def load_bootstrap_keys(path: Path) -> dict[str, dict]:
    """Hashed keys from a JSON file (a list of {key_id, tenant, role, name, secret_sha256}),
    e.g. a Kubernetes Secret written by ``convergent keys create --bootstrap-out``."""
    entries = json.loads(path.read_text())
    keys = {}
    for entry in entries:
        missing = {"key_id", "tenant", "role", "secret_sha256"} - set(entry)
        if missing:
            raise ValueError(f"{path}: entry {entry.get('key_id', '?')} lacks {sorted(missing)}")
        check_role(entry["role"])
        keys[entry["key_id"]] = entry
    return keys


class Authenticator:
    """Turns call metadata into a :class:`Principal` and checks the role for the method."""

    def __init__(self, enabled: bool, keys: KeyStorage | None, bootstrap: dict[str, dict] | None = None) -> None:
        self.enabled = enabled
        self.keys = keys
        self.bootstrap = bootstrap or {}

    @staticmethod
    def _presented_key(metadata) -> str | None:  # noqa: ANN001
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
                return value[7:].strip()
            if key == "x-api-key" and isinstance(value, str):
                return value.strip()
        return None

    def authenticate(self, metadata) -> Principal:  # noqa: ANN001
        if not self.enabled:
            return ANONYMOUS_ADMIN
        presented = self._presented_key(metadata)
        if not presented:
            raise Unauthenticated("missing API key: send 'authorization: Bearer <key>' or 'x-api-key: <key>'",
                                  reason="MISSING_API_KEY")
        match = _KEY.fullmatch(presented)
        if match is None:
            raise Unauthenticated("invalid or revoked API key", reason="INVALID_API_KEY")
        key_id, secret = match.groups()
        entry = self.bootstrap.get(key_id)
        if entry is None and self.keys is not None:
            row = self.keys.get(key_id)
            if row is not None and row.revoked_at is None:
                entry = {"tenant": row.tenant, "role": row.role, "secret_sha256": row.secret_sha256}
        # Compare even when the id is unknown, so timing does not tell whether it exists.
        expected = entry["secret_sha256"] if entry else "0" * 64
        if not hmac.compare_digest(hash_secret(secret), expected) or entry is None:
            raise Unauthenticated("invalid or revoked API key", reason="INVALID_API_KEY")
        return Principal(entry["tenant"], key_id, entry["role"])

    @staticmethod
    def authorize(principal: Principal, method: str) -> None:
        needed = METHOD_ROLES[method]
        if _RANK[principal.role] < _RANK[needed]:
            raise PermissionDenied(f"role {principal.role!r} may not call {method} (it needs {needed!r})",
                                   metadata={"role": principal.role, "needed": needed, "method": method})
