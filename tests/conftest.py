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
