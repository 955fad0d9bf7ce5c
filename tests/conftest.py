"""Shared fixtures: a real gRPC server on a free loopback port with its own data folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from convergent.client import Client
from convergent.server.datasets import find_realdata
from convergent.server.rpc.app import ConvergentServer
from convergent.server.settings import ServerSettings


def stored_runs(vectors: np.ndarray) -> list[bytes]:
    """Three 4-value runs of every row as they would be stored (start, middle, end): what a search
    of a file for templates in clear looks for."""
    raw = np.ascontiguousarray(vectors)
    row_bytes, width = raw.shape[1] * raw.dtype.itemsize, 4 * raw.dtype.itemsize
    return [r.tobytes()[i : i + width] for r in raw for i in (0, row_bytes // 2, row_bytes - width)]


def runs_found(blob: bytes, vectors: np.ndarray) -> float:
    """The share of ``vectors``' stored runs that appear in ``blob`` (0.0: none of them)."""
    runs = stored_runs(vectors)
    return sum(blob.find(r) >= 0 for r in runs) / len(runs)


def make_settings(data_dir: Path, **overrides: object) -> ServerSettings:
    return ServerSettings(host="127.0.0.1", port=0, data_dir=data_dir, workers=4, **overrides)


def _require_milvus() -> None:
    pytest.importorskip("pymilvus", reason="pymilvus is not installed (extra 'milvus')")
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (extra 'milvus')")


# Milvus comes in two kinds in the tests: "lite" (a milvus-lite file in the server's data folder,
# the default when no milvus_uri is set) and "server" (a Milvus standalone server that the session
# starts from the `milvus` package, one fresh Milvus database per test).
MILVUS_KINDS = ["lite", "server"]


@pytest.fixture
def milvus_target() -> dict:
    """Where this test's Milvus galleries live: {"uri": None} (milvus-lite) or a server database URI."""
    return {"uri": None}


def _use_milvus(request, kind: str) -> str | None:
    """Prepare Milvus of this kind for the test; the URI its servers use (None: milvus-lite)."""
    _require_milvus()
    if kind != "server":
        return None
    uri = request.getfixturevalue("milvus_database")
    request.getfixturevalue("milvus_target")["uri"] = uri
    return uri


def _serve(request, tmp_path: Path, database: str, gallery_backend: str = "local") -> Iterator[ConvergentServer]:
    milvus_uri = None
    if gallery_backend.startswith("milvus"):
        milvus_uri = _use_milvus(request, "server" if gallery_backend == "milvus-server" else "lite")
        gallery_backend = "milvus"
    database_url = request.getfixturevalue("fresh_postgres") if database == "postgresql" else None
    settings = make_settings(tmp_path / "data", database_url=database_url, gallery_backend=gallery_backend, milvus_uri=milvus_uri)
    with ConvergentServer(settings) as running:  # milvus-lite: a file in the data folder
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request, tmp_path: Path) -> Iterator[ConvergentServer]:
    """A running server on SQLite in its own data folder, and again on a fresh PostgreSQL database."""
    yield from _serve(request, tmp_path, request.param)


@pytest.fixture(params=["sqlite", "postgresql", "sqlite-milvus", "postgresql-milvus-server"])
def gallery_server(request, tmp_path: Path) -> Iterator[ConvergentServer]:
    """``server`` on both databases with galleries in process, on SQLite with galleries in
    milvus-lite (one process's file), and on PostgreSQL with a Milvus server (a deployment's
    pair). Gallery test modules use it as their ``server``. (PostgreSQL with milvus-lite adds
    nothing these four do not cover.)"""
    database, _, backend = request.param.partition("-")
    yield from _serve(request, tmp_path, database, backend or "local")


@pytest.fixture(params=["local", "milvus", "milvus-server"])
def gallery_backend(request) -> str:
    """The gallery backends, for tests that start their own servers (``start_server``): "milvus"
    on milvus-lite, then again on a Milvus server (``start_server`` points at it)."""
    if request.param == "local":
        return "local"
    _use_milvus(request, "server" if request.param == "milvus-server" else "lite")
    return "milvus"


@pytest.fixture(params=MILVUS_KINDS)
def milvus_kind(request) -> str:
    """Run a test on milvus-lite and on a Milvus server: servers started with
    ``gallery_backend="milvus"`` and no milvus_uri use that kind (see ``milvus_uri``)."""
    _use_milvus(request, request.param)
    return request.param


@pytest.fixture
def milvus_uri(milvus_kind: str, milvus_target: dict, tmp_path: Path):  # noqa: ANN201
    """A Milvus URI of this test's kind that several servers can share: a milvus-lite file
    (servers in one process) or the test's database on the Milvus server."""
    return milvus_target["uri"] or str(tmp_path / "shared-milvus.db")


@pytest.fixture
def start_server(tmp_path: Path, milvus_target: dict) -> Iterator:
    """Start extra servers with overridden settings; all are stopped after the test. A Milvus
    server's URI is filled in when the test asked for one (``gallery_backend``, ``milvus_kind``)."""
    started: list[ConvergentServer] = []

    def start(**overrides: object) -> ConvergentServer:
        if overrides.get("gallery_backend") == "milvus" and milvus_target["uri"] and "milvus_uri" not in overrides:
            overrides["milvus_uri"] = milvus_target["uri"]
        data_dir = overrides.pop("data_dir", tmp_path / f"data{len(started)}")
        running = ConvergentServer(make_settings(data_dir, **overrides))
        running.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop(grace=1.0)


@pytest.fixture
def client(server: ConvergentServer) -> Iterator[Client]:
    with Client(server.address, timeout=20) as c:
        yield c


@pytest.fixture(scope="session")
def realdata() -> Path:
    folder = find_realdata()
    if folder is None:
        pytest.skip(
            "real embeddings not found: expected shared/realdata beside the repository "
            "(or set CONVERGENT_REALDATA)"
        )
    return folder


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# Property tests are derandomised in CI (HYPOTHESIS_PROFILE=ci) so a run is reproducible.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
_hypothesis_settings.register_profile("dev", deadline=None)
_hypothesis_settings.load_profile(__import__("os").environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, made now."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path: Path) -> Path:  # noqa: ANN001
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("convergent test CA")).issuer_name(name("convergent test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, usage, sans=None):  # noqa: ANN001, ANN202
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_key, server_cert = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                                   [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_key, client_cert = leaf("party-1", ExtendedKeyUsageOID.CLIENT_AUTH)
    files = {"ca": folder / "ca.pem", "server_cert": folder / "server.pem", "client_cert": folder / "client.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["server_cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files["client_cert"].write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    files["server_key"] = write_key(server_key, folder / "server.key")
    files["client_key"] = write_key(client_key, folder / "client.key")
    return files


def _postgres_bin() -> Path | None:
    import glob
    import shutil

    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on a free loopback port (skipped when not installed)."""
    import os
    import shutil
    import socket
    import subprocess

    pytest.importorskip("psycopg", reason="psycopg is not installed (extra 'postgres')")
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; .ci/run installs them")
    import tempfile

    # Not under pytest's tmp folder: that one is private to root, and the cluster may run as 'postgres'.
    root = Path(tempfile.mkdtemp(prefix="convergent-pg-"))
    data = root / "data"
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the cluster as 'postgres'
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        root.chmod(0o755)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=on"
    subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
                   check=True, capture_output=True, timeout=120)
    try:
        subprocess.run([*prefix, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "convergent"],
                       check=True, capture_output=True, timeout=60)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/convergent"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fresh_postgres(postgres_url) -> Iterator[str]:
    """A new, empty database in the session's PostgreSQL cluster (dropped afterwards)."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """The same tests on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'convergent.sqlite3'}"
    return request.getfixturevalue("fresh_postgres")


def _start_milvus_server(folder: Path, timeout: float):  # noqa: ANN202
    """Start a Milvus standalone server (the `milvus` package's binary) in its own process group;
    (process, URI) once a client call succeeds (/healthz answers seconds before clients are
    taken), or (None, why) if it does not start within ``timeout`` seconds."""
    import re
    import socket
    import subprocess
    import sys
    import time

    from pymilvus import MilvusClient

    with socket.socket() as sock:  # a free port to start from: the package takes the first free one from it
        sock.bind(("127.0.0.1", 0))
        start_port = sock.getsockname()[1]
    launcher = ("import sys; from milvus import MilvusServer; s = MilvusServer(wait_for_started=False); "
                "s.set_base_dir(sys.argv[1]); s.config.set('proxy_port', int(sys.argv[2])); s.start(); "
                "print('PORT', s.listen_port, flush=True); s.wait()")
    out = folder / "launcher.log"
    with open(out, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", launcher, str(folder / "milvus"), str(start_port)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline, uri, why = time.monotonic() + timeout, None, "no answer"
    while time.monotonic() < deadline and proc.poll() is None:
        if uri is None:
            found = re.search(r"PORT (\d+)", out.read_text())
            uri = f"http://127.0.0.1:{found.group(1)}" if found else None
        if uri is not None:
            try:
                client = MilvusClient(uri, timeout=5)
                client.list_collections()
                client.close()
                return proc, uri
            except Exception as exc:  # noqa: BLE001 - not ready yet: retried until the deadline
                why = str(exc)[:200]
        time.sleep(0.5)
    exited = proc.poll()
    _stop_milvus_server(proc)
    logs = folder / "milvus" / "logs" / "milvus-stderr.log"
    tail = (logs.read_text()[-300:] if logs.exists() else out.read_text()[-300:]).strip()
    return None, (f"exited with {exited}" if exited is not None else f"not ready in {timeout:.0f} s ({why})") + f"; {tail}"


def _stop_milvus_server(proc) -> None:  # noqa: ANN001
    """Stop the launcher and the server by their process group (the server may panic on shutdown)."""
    import subprocess

    _stop_process_group(proc.pid, lambda timeout: proc.wait(timeout=timeout), subprocess.TimeoutExpired)


def _stop_process_group(pid: int, wait, timeout_error) -> None:  # noqa: ANN001
    """SIGTERM, then SIGKILL, the process group ``pid`` leads; ``wait(timeout)`` waits for its leader."""
    import os
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        try:
            wait(15)
            os.killpg(pid, signal.SIGKILL)  # whatever of the group is left
        except (timeout_error, ProcessLookupError):
            continue
        return


def _wait_for_exit(pid: int, timeout: float) -> None:
    """Wait until process ``pid`` (not our child) is gone; TimeoutError after ``timeout`` s."""
    import os
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child (this worker started it): reaped
                return
        except ChildProcessError:  # another worker's child: gone once signal 0 finds nothing
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.2)
    raise TimeoutError(pid)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> Iterator[str]:
    """The URI of a Milvus standalone server for the session: CONVERGENT_TEST_MILVUS_URI if set,
    else one started from the `milvus` package in a temporary folder (skipped with the reason
    when it is not installed or does not start).

    One server serves every pytest-xdist worker (a second one does not start beside it: it
    binds fixed ports of its own): the first worker that needs it starts it and records it in a
    file under the run's shared temporary folder; each user counts itself in and out under a
    file lock, and the last one out stops it."""
    import fcntl
    import json
    import os
    import shutil
    import tempfile

    _require_milvus()
    if os.environ.get("CONVERGENT_TEST_MILVUS_URI"):
        yield os.environ["CONVERGENT_TEST_MILVUS_URI"]
        return
    pytest.importorskip("milvus", reason="the Milvus server package is not installed (`milvus`, in the dev extra)")
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each worker's own
    record, lock_path = shared / "milvus-server.json", shared / "milvus-server.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(record.read_text()) if record.exists() else None
        if state is None:
            folder = Path(tempfile.mkdtemp(prefix="convergent-milvus-"))
            proc, found = _start_milvus_server(folder, timeout=float(os.environ.get("CONVERGENT_TEST_MILVUS_START_S", "180")))
            if proc is None:
                shutil.rmtree(folder, ignore_errors=True)
                state = {"error": found, "users": 0}
            else:
                state = {"uri": found, "pid": proc.pid, "folder": str(folder), "users": 0}
        if "error" not in state:
            state["users"] += 1
        record.write_text(json.dumps(state))
    if "error" in state:
        pytest.skip(f"the Milvus server did not start: {state['error']}")
    try:
        yield state["uri"]
    finally:
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = json.loads(record.read_text())
            state["users"] -= 1
            if state["users"] == 0:
                _stop_process_group(state["pid"], lambda timeout: _wait_for_exit(state["pid"], timeout), TimeoutError)
                shutil.rmtree(state["folder"], ignore_errors=True)
                record.unlink()
            else:
                record.write_text(json.dumps(state))


@pytest.fixture
def milvus_database(milvus_server: str) -> Iterator[str]:
    """A new, empty Milvus database on the session's server for one test (dropped afterwards)."""
    import uuid

    from pymilvus import MilvusClient

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = MilvusClient(milvus_server)
    admin.create_database(name)
    yield f"{milvus_server.rstrip('/')}/{name}"
    scoped = MilvusClient(f"{milvus_server.rstrip('/')}/{name}")
    for collection in scoped.list_collections():
        scoped.drop_collection(collection)
    scoped.close()
    admin.drop_database(name)
    admin.close()

