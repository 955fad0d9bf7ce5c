"""Server assembly: gRPC server, servicers, health, reflection, storage, graceful stop."""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from convergent.server.errors import StartupError
from convergent.server.metrics import Metrics
from convergent.server.registry.alignment import Alignment
from convergent.server.registry.galleries import Galleries
from convergent.server.registry.service import Registry
from convergent.server.rpc.auth import Authenticator, load_bootstrap_keys
from convergent.server.rpc.interceptors import interceptors
from convergent.server.rpc.servicers import (
    AlignmentServicer,
    AnchorServicer,
    Backend,
    GalleryServicer,
    InfoServicer,
    ModelServicer,
    TenantServicer,
)
from convergent.server.rpc.streams import StreamGuard
from convergent.server.settings import ServerSettings
from convergent.server.registry.key_rotation import KeyRotationWorker
from convergent.server.storage import master_keys, open_store
from convergent.server.storage.protocols import Store
from convergent.v1 import (
    alignment_pb2,
    alignment_pb2_grpc,
    anchors_pb2,
    galleries_pb2,
    galleries_pb2_grpc,
    anchors_pb2_grpc,
    info_pb2,
    info_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
)

log = logging.getLogger("convergent.server")

SERVICE_DESCRIPTORS = (
    models_pb2.DESCRIPTOR.services_by_name["ModelService"],
    anchors_pb2.DESCRIPTOR.services_by_name["AnchorService"],
    info_pb2.DESCRIPTOR.services_by_name["InfoService"],
    alignment_pb2.DESCRIPTOR.services_by_name["AlignmentService"],
    galleries_pb2.DESCRIPTOR.services_by_name["GalleryService"],
    tenant_pb2.DESCRIPTOR.services_by_name["TenantService"],
)
SERVICE_NAMES = tuple(service.full_name for service in SERVICE_DESCRIPTORS)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ConvergentServer:
    """One convergent server: ``start()`` binds and opens storage, ``stop()`` drains and closes.

    Health (``grpc.health.v1``) reports NOT_SERVING until storage is open and again while
    stopping; RPCs that arrive before storage is open get UNAVAILABLE.
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.port: int | None = None
        self.store: Store | None = None
        self.key_rotation: KeyRotationWorker | None = None
        self._backend = Backend()
        self.metrics = Metrics()
        self._backend.metrics = self.metrics
        self._health = health.HealthServicer()
        self._stopped = threading.Event()
        options = [
            ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
            ("grpc.max_send_message_length", settings.max_send_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        own_methods = [m.name for service in SERVICE_DESCRIPTORS for m in service.methods]
        # Streams hold a thread each (at most max_streams of them): `workers` stay for unary calls.
        self.streams = StreamGuard(settings.max_streams, settings.max_streams_per_client, settings.stream_idle_seconds)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.workers + settings.max_streams, thread_name_prefix="rpc"),
            options=options,
            interceptors=[self.streams, *interceptors(self._backend, self.metrics, own_methods)],
        )
        models_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self._backend), self._server)
        anchors_pb2_grpc.add_AnchorServiceServicer_to_server(AnchorServicer(self._backend), self._server)
        info_pb2_grpc.add_InfoServiceServicer_to_server(InfoServicer(settings, self._backend), self._server)
        alignment_pb2_grpc.add_AlignmentServiceServicer_to_server(AlignmentServicer(self._backend), self._server)
        galleries_pb2_grpc.add_GalleryServiceServicer_to_server(GalleryServicer(self._backend), self._server)
        tenant_pb2_grpc.add_TenantServiceServicer_to_server(TenantServicer(self._backend), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        if settings.reflection:
            _enable_reflection(self._server, (*SERVICE_NAMES, health.SERVICE_NAME))
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    def _set_health(self, status: int) -> None:
        self._health.set("", status)
        for name in SERVICE_NAMES:
            self._health.set(name, status)

    @property
    def address(self) -> str:
        return _address(self.settings.host, self.port or 0)

    def start(self) -> int:
        """Bind, start serving, open storage, then report SERVING. Returns the bound port.

        :class:`StartupError` (before binding) for a data folder that cannot be written or a
        port that cannot be bound."""
        s = self.settings
        if not s.database_url:  # SQLite (and milvus-lite) live in the data folder
            _check_data_dir(s.data_dir)
        master_key = master_keys.load(s.master_key_file, s.master_key.get_secret_value() if s.master_key else None)
        if master_key is not None and s.gallery_backend == "milvus" and s.milvus_with_encryption == "refuse":
            raise StartupError(
                "the store is to be encrypted at rest, but Milvus keeps the vectors it searches in clear on its own "
                "disk: use --gallery-backend local (the index lives in memory, built from the encrypted store), or "
                "set CONVERGENT_MILVUS_WITH_ENCRYPTION=allow to accept clear templates in Milvus")
        address = _address(s.host, s.port)
        try:
            if s.tls_cert is not None:
                credentials = grpc.ssl_server_credentials(
                    [(s.tls_key.read_bytes(), s.tls_cert.read_bytes())],
                    root_certificates=s.tls_client_ca.read_bytes() if s.tls_client_ca else None,
                    require_client_auth=s.tls_client_ca is not None,
                )
                self.port = self._server.add_secure_port(address, credentials)
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc: "Failed to bind to address ..."
            raise StartupError(
                f"cannot listen on {address}: the port is in use (another `convergent serve`?) or the host is not "
                f"an address of this machine; choose another with --port (0 picks a free one) or --host"
            ) from exc
        except OSError as exc:
            raise StartupError(f"cannot read the TLS files: {exc}") from exc
        if self.port == 0:
            raise StartupError(f"cannot listen on {address}; choose another with --port or --host")
        self._server.start()
        security = "mTLS" if s.tls_client_ca else "TLS" if s.tls_cert else "plaintext"
        log.info("listening on %s (%s, API keys %s)", self.address, security, "required" if s.auth_enabled() else "off")
        try:
            self.store = open_store(s.resolved_database_url(), master_key, s.resolved_keyring_file() if master_key else None)
        except StartupError:
            self._server.stop(0)
            raise
        if master_key is not None:
            log.info("the store is encrypted at rest (master key %s from %s, keyring %s)", master_key.key_id,
                     master_key.source, s.resolved_keyring_file())
        self._check_store(self.store)
        if self.store.encrypted:
            self.key_rotation = KeyRotationWorker(self.store.rotation, s)
            self.key_rotation.start()
        alignment = Alignment(self.store, s)
        bootstrap = load_bootstrap_keys(s.bootstrap_keys_file) if s.bootstrap_keys_file else None
        authenticator = Authenticator(s.auth_enabled(), self.store.keys, bootstrap)
        galleries = Galleries(self.store, alignment, s)
        galleries.connect_backend()
        self._backend.open(Registry(self.store, s), alignment, galleries, authenticator)
        if s.metrics_port is not None:
            self.metrics.watch_store(self.store.vector_counts, galleries.index_sizes)
            self.metrics.serve(s.host, s.metrics_port)
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("storage open (%s); serving", self.store.describe())
        return self.port

    def _check_store(self, store: Store) -> None:
        """The start-up check (``startup_check``: :func:`~convergent.server.storage.integrity.full_check`
        or ``quick_check``): damage is logged, and refused (:class:`StartupError`) unless
        ``allow_damaged``; then the damaged objects answer DATA_LOSS and the rest is served."""
        started = time.perf_counter()
        damage = store.check(full=self.settings.startup_check == "full")
        log.info("%s start-up check of the store: %d findings in %.2f s", self.settings.startup_check, len(damage),
                 time.perf_counter() - started)
        for finding in damage:
            log.error("damaged: %s", finding)
        if damage and not self.settings.allow_damaged:
            store.close()
            self._server.stop(0)
            shown = "; ".join(str(d) for d in damage[:3]) + (f"; and {len(damage) - 3} more" if len(damage) > 3 else "")
            raise StartupError(
                f"the store is damaged: {shown}. Run `convergent check --data-dir DIR` for the whole report and restore "
                "from a backup (`convergent restore`), or start with --allow-damaged to serve the rest (the damaged "
                "objects answer DATA_LOSS)"
            )
        if damage:
            log.warning("serving a damaged store (--allow-damaged): %d damaged objects answer DATA_LOSS", len(damage))
            store.serve_damaged(damage)

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, let in-flight RPCs finish within ``grace`` seconds, close storage."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.grace_seconds if grace is None else grace
        log.info("stopping (grace %.1f s)", grace)
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self.metrics.stop()
        if self.key_rotation is not None:
            self.key_rotation.stop()
        self._backend.close()
        if self.store is not None:
            self.store.close()
        log.info("stopped")

    def flush_audit(self, timeout: float = 10.0) -> bool:
        """Block until the audit entries of the calls answered so far are written (False on timeout)."""
        writer = self._backend.audit_writer
        return writer is None or writer.flush(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` has been called (True) or ``timeout`` passes (False)."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> ConvergentServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)


def _check_data_dir(folder: Path) -> None:
    """Create the data folder if needed; :class:`StartupError` if it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".convergent-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"cannot use the data folder {folder} ({exc.strerror or exc}); choose a writable one with --data-dir"
        ) from exc


def serve(settings: ServerSettings) -> None:
    """Run a server in the foreground until SIGTERM or SIGINT, then stop gracefully."""
    server = ConvergentServer(settings)
    stop_requested = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop_requested.set()

    server.start()  # a StartupError leaves nothing to stop
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop_requested.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _enable_reflection(server: grpc.Server, service_names: tuple[str, ...]) -> None:
    """Server reflection as ``grpc.reflection.v1`` (what grpcurl and Postman ask first) and the
    older ``v1alpha``. grpcio-reflection ships only v1alpha; the two protocols' messages are the
    same fields under another package, so one servicer answers both (``list_services`` names
    v1alpha, whose descriptors the servicer holds)."""
    from grpc_reflection.v1alpha import reflection, reflection_pb2

    servicer = reflection.ReflectionServicer((*service_names, reflection.SERVICE_NAME))
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(tuple(
        grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
        for name in (REFLECTION_V1, reflection.SERVICE_NAME)
    ))
