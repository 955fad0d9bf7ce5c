"""Server settings: environment variables ``CONVERGENT_*`` and CLI flags, one pydantic model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class ServerSettings(BaseSettings):
    """Everything ``convergent serve`` can be told. Flags override environment variables."""

    model_config = SettingsConfigDict(env_prefix="CONVERGENT_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    data_dir: Path = Path("./convergent-data")
    reflection: bool = False
    workers: int = Field(8, ge=1, le=256, description="threads serving unary RPCs (streams get max_streams more)")
    max_streams: int = Field(
        64, ge=1, le=1024, description="streaming calls (uploads, enrolls, watches) open at once; more: RESOURCE_EXHAUSTED"
    )
    max_streams_per_client: int = Field(
        8, ge=1, le=1024, description="streaming calls open at once on one client connection; more: RESOURCE_EXHAUSTED"
    )
    stream_idle_seconds: float = Field(
        30.0, gt=0, le=86400, description="a request stream that sends no message for this long is ended (DEADLINE_EXCEEDED)"
    )
    max_receive_message_bytes: int = Field(64 * MiB, ge=1 * MiB, le=1024 * MiB)
    max_send_message_bytes: int = Field(64 * MiB, ge=1 * MiB, le=1024 * MiB)
    max_vectors_per_message: int = Field(65536, ge=1)
    max_dim: int = Field(8192, ge=1, le=65536)
    max_page_size: int = Field(1000, ge=1)
    default_page_size: int = Field(100, ge=1)
    max_id_length: int = Field(256, ge=1, le=4096)
    max_k: int = Field(10_000, ge=1, description="largest k of identify")
    max_fit_bytes: int = Field(
        8 * 1024 * MiB, ge=64 * MiB, description="a fit whose estimated working memory exceeds this is refused"
    )
    spool_memory_bytes: int = Field(
        64 * MiB, ge=0, description="an upload stream is buffered in memory up to this, then on disk"
    )
    grace_seconds: float = Field(10.0, ge=0, description="how long in-flight RPCs get on shutdown")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    require_auth: bool | None = Field(
        None, description="API keys required; default: on unless host is a loopback address"
    )
    bootstrap_keys_file: Path | None = Field(None, description="JSON list of hashed keys (e.g. a Kubernetes Secret)")
    tls_cert: Path | None = Field(None, description="PEM certificate chain of the server")
    tls_key: Path | None = Field(None, description="PEM private key of the server")
    tls_client_ca: Path | None = Field(None, description="PEM CA bundle: require client certificates (mTLS)")
    max_vectors_per_tenant: int | None = Field(
        None, ge=1, description="quota: anchors + gallery items one tenant may store"
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="where fits' statistics and exact search run: cpu, cuda, or auto (CUDA when present)"
    )
    gallery_backend: Literal["local", "milvus"] = Field(
        "local", description="where gallery indexes live: in the server process, or in Milvus"
    )
    milvus_uri: str | None = Field(
        None, description="Milvus server URI, or a milvus-lite .db file (default: milvus.db in data_dir)"
    )
    milvus_token: SecretStr | None = Field(
        None, description="Milvus credentials ('user:password' or an API key); environment only: CONVERGENT_MILVUS_TOKEN"
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve Prometheus /metrics on this port (0: a free one); off if unset"
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file convergent.sqlite3 in data_dir"
    )
    allow_damaged: bool = Field(
        False, description="serve a store whose start-up check found damage (the damaged objects answer DATA_LOSS)"
    )
    startup_check: Literal["full", "quick"] = Field(
        "full", description="start-up check of the store: full (every checksum; ~3 s per GB) or quick (structure and counts)"
    )

    master_key_file: Path | None = Field(
        None, description="file holding the master key (mode 600) that wraps the tenants' data keys: the store is "
        "encrypted at rest (docs/operations.md, 'Encryption at rest'); off if unset",
    )
    master_key: SecretStr | None = Field(
        None, description="the master key itself (base64 or hex); environment only: CONVERGENT_MASTER_KEY",
    )
    keyring_file: Path | None = Field(
        None, description="the tenants' keys of an encrypted store, sealed by the master key (default: keyring.json "
        "in data_dir); keep a copy with the master key, apart from data backups",
    )
    data_key_max_age_days: float | None = Field(
        None, gt=0, description="an encrypted store gives each tenant a new data key once its newest is this old, and "
        "re-seals the tenant's rows under it in the background; off if unset (`convergent rotate-data-key` does it by hand)",
    )
    key_rotation_interval_seconds: float = Field(
        10.0, gt=0, le=3600, description="how often the background re-sealing of an encrypted store looks for work",
    )
    milvus_with_encryption: Literal["refuse", "allow"] = Field(
        "refuse", description="an encrypted store with gallery_backend=milvus: refuse to start (Milvus keeps the "
        "vectors it searches in clear), or allow it knowingly",
    )

    @model_validator(mode="after")
    def _tls_pairs(self) -> ServerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mTLS) needs tls_cert and tls_key")
        return self

    def resolved_keyring_file(self) -> Path:
        return self.keyring_file or self.data_dir / "keyring.json"

    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str((self.data_dir / "milvus.db").resolve())

    def auth_enabled(self) -> bool:
        """Explicit setting, else on for every host that is not a loopback address."""
        if self.require_auth is not None:
            return self.require_auth
        return not _is_loopback(self.host)

    def resolved_database_url(self) -> str:
        """``database_url`` (a plain ``postgresql://`` URL uses psycopg 3), else SQLite in data_dir."""
        if self.database_url:
            for plain in ("postgresql://", "postgres://"):
                if self.database_url.startswith(plain):
                    return "postgresql+psycopg://" + self.database_url[len(plain):]
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'convergent.sqlite3').resolve()}"


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
