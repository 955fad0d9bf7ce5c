"""Property test of the decoding layer: arbitrary upload streams end in a domain error or a
commit, never in another exception (which the server would report as INTERNAL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convergent.server.errors import ConvergentError
from convergent.server.registry.service import Registry
from convergent.server.rpc import codec
from convergent.server.settings import ServerSettings
from convergent.server.storage.sql import SqlStore
from convergent.v1 import anchors_pb2, types_pb2
from convergent.wire import WireError


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Registry:
    settings = ServerSettings(data_dir=Path(tmp_path_factory.mktemp("fuzz")), max_vectors_per_message=64)
    store = SqlStore(settings.resolved_database_url())
    reg = Registry(store, settings)
    reg.register_model("default", "m", dim=3)
    yield reg
    store.close()


matrices = st.builds(
    types_pb2.Matrix,
    data=st.binary(max_size=64),
    shape=st.lists(st.integers(min_value=0, max_value=40), max_size=3),
    dtype=st.integers(min_value=0, max_value=5),
)
messages = st.builds(
    anchors_pb2.UploadAnchorsRequest,
    model=st.sampled_from(["m", "", "ghost", "bad name"]),
    anchor_set=st.sampled_from(["s", "", "x:y"]),
    model_version=st.integers(min_value=0, max_value=3),
    overwrite=st.booleans(),
    ids=st.lists(st.text(max_size=5), max_size=6),
    vectors=matrices,
    last=st.booleans(),
)


@settings(derandomize=True, deadline=None, max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=st.lists(messages, max_size=4))
def test_arbitrary_upload_streams_fail_cleanly(registry, stream):
    before = registry.count_anchors("default", "m", "s")
    try:
        result = registry.upload_anchors("default", codec.upload_chunks(stream))
    except (ConvergentError, WireError):
        assert registry.count_anchors("default", "m", "s") == before  # all or nothing
        return
    assert result.total == registry.count_anchors("default", "m", "s")
    assert np.isfinite(result.total)
