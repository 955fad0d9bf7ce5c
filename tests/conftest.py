"""Shared fixtures: a real gRPC server on a free loopback port with its own data folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from convergent.client import Client
from convergent.datasets import find_realdata
from convergent.server.rpc.app import ConvergentServer
from convergent.server.settings import ServerSettings


def make_settings(data_dir: Path, **overrides: object) -> ServerSettings:
    return ServerSettings(host="127.0.0.1", port=0, data_dir=data_dir, workers=4, **overrides)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ConvergentServer]:
    with ConvergentServer(make_settings(tmp_path / "data")) as running:
        yield running


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """Start extra servers with overridden settings; all are stopped after the test."""
    started: list[ConvergentServer] = []

    def start(**overrides: object) -> ConvergentServer:
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
