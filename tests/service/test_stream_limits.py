"""Bounded streams (issue 29): request streams that stop sending are ended after
``stream_idle_seconds`` with DEADLINE_EXCEEDED and store nothing; streaming calls beyond
``max_streams`` / ``max_streams_per_client`` get RESOURCE_EXHAUSTED; and while many idle and
slow streams are open, health and small identify calls keep answering.

Every test fails on a server without the limits: its streams wait forever, so the clients'
own deadlines (a few seconds) end them instead, with other codes or messages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from convergent.client import Client
from convergent.v1 import anchors_pb2, anchors_pb2_grpc, galleries_pb2, galleries_pb2_grpc
from convergent.wire import encode_matrix

DIM = 8
IDLE = 1.0  # stream_idle_seconds of these servers


def _rows(prefix: str, n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    return [f"{prefix}-{i}" for i in range(n)], np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _anchor_chunks(stop: threading.Event, chunks: int, every: float = 0.0, prefix: str = "x") -> Iterator:
    """``chunks`` upload messages (``every`` seconds apart), never last=true, then silence until ``stop``."""
    for c in range(chunks):
        ids, vectors = _rows(f"{prefix}{c}", 4, c)
        header = {"model": "m", "anchor_set": "s"} if c == 0 else {}
        yield anchors_pb2.UploadAnchorsRequest(**header, ids=ids, vectors=encode_matrix(vectors))
        if every and stop.wait(every):
            return
    stop.wait()


def _enroll_chunks(stop: threading.Event) -> Iterator:
    ids, vectors = _rows("late", 4)
    yield galleries_pb2.EnrollRequest(gallery="g", model="m", ids=ids, vectors=encode_matrix(vectors))
    stop.wait()


def _connection(address: str) -> grpc.Channel:
    """A channel on its own TCP connection (channels of one process share one by default)."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def _failure(future: grpc.Future) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        future.result()
    return info.value


@pytest.fixture
def stopper() -> Iterator[threading.Event]:
    """Set at the end of a test: the tests' request generators return (their streams end)."""
    stop = threading.Event()
    yield stop
    stop.set()


def _prepare(address: str) -> None:
    with Client(address) as client:
        client.register_model("m", DIM, normalize=False)
        client.upload_anchors("m", anchor_set="s", ids=_rows("kept", 10)[0], vectors=_rows("kept", 10)[1])
        client.enroll("g", "m", *_rows("item", 20, 1))


def test_idle_and_unfinished_streams_end_with_deadline_exceeded_and_store_nothing(start_server, stopper):
    """An upload that sends nothing, one that sends chunks but never last=true, and an enroll
    without last=true: each ends after stream_idle_seconds with DEADLINE_EXCEEDED naming the
    silence; anchor count and gallery size are unchanged and no slot or reader thread is left."""
    server = start_server(stream_idle_seconds=IDLE)
    _prepare(server.address)
    with grpc.insecure_channel(server.address) as channel:
        anchors = anchors_pb2_grpc.AnchorServiceStub(channel)
        galleries = galleries_pb2_grpc.GalleryServiceStub(channel)
        started = time.monotonic()
        calls = [
            anchors.UploadAnchors.future(_anchor_chunks(stopper, 0), timeout=10),
            anchors.UploadAnchors.future(_anchor_chunks(stopper, 3), timeout=10),
            galleries.Enroll.future(_enroll_chunks(stopper), timeout=10),
        ]
        failures = [_failure(call) for call in calls]
        elapsed = time.monotonic() - started
    for failure in failures:
        assert failure.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert f"no message for {IDLE:g} s" in failure.details()
        assert "stream_idle_seconds" in failure.details() and "nothing" in failure.details()
    assert IDLE <= elapsed < IDLE + 5
    with Client(server.address) as client:
        assert client.count_anchors("m", anchor_set="s") == 10
        assert client.get_gallery("g").size == 20
    assert _wait_for(lambda: server.streams.total == 0 and not _readers())


def _wait_for(condition, timeout: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def _readers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "stream-reader"]


def test_streaming_calls_beyond_the_caps_get_resource_exhausted(start_server, stopper):
    """max_streams_per_client=2 on one connection, then max_streams=3 in total (a health Watch
    counts as a stream); a slot freed is a slot again."""
    server = start_server(stream_idle_seconds=20, max_streams=3, max_streams_per_client=2)
    _prepare(server.address)
    a, b, c = (_connection(server.address) for _ in range(3))
    try:
        upload_a, upload_c = (anchors_pb2_grpc.AnchorServiceStub(ch).UploadAnchors for ch in (a, c))
        first_stop = threading.Event()
        held = [upload_a.future(_anchor_chunks(first_stop, 0), timeout=30) for _ in range(2)]
        assert _wait_for(lambda: server.streams.total == 2)  # both hold their slots before the third comes
        over = _failure(upload_a.future(_anchor_chunks(stopper, 0), timeout=5))
        assert over.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_streams_per_client=2" in over.details()
        watch = health_pb2_grpc.HealthStub(b).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        over = _failure(upload_c.future(_anchor_chunks(stopper, 0), timeout=5))
        assert over.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_streams=3" in over.details()
        first_stop.set()  # the two uploads end (empty streams: INVALID_ARGUMENT), freeing their slots
        assert all(_failure(f).code() is grpc.StatusCode.INVALID_ARGUMENT for f in held)
        ids, vectors = _rows("after", 3)
        with Client(server.address) as client:
            assert client.upload_anchors("m", anchor_set="s", ids=ids, vectors=vectors) == 13
        watch.cancel()
    finally:
        for ch in (a, b, c):
            ch.close()


def test_health_and_identify_answer_while_many_idle_and_slow_streams_are_open(start_server, stopper):
    """32 uploads over 5 connections, a third slow (a chunk every 0.3 s), the rest idle: the
    caps take 24, refuse 8. Meanwhile 12 health checks and 12 small identify calls of another
    client all answer within their 3 s deadline (median well under a second) on the tests' 4
    unary workers; afterwards the 24 have ended by the idle limit, storing nothing."""
    server = start_server(stream_idle_seconds=3.0, max_streams=24, max_streams_per_client=6)
    _prepare(server.address)
    channels = [_connection(server.address) for _ in range(5)]
    try:
        calls = []
        for i in range(32):  # 6 per connection accepted, up to 24 in all; the rest refused
            upload = anchors_pb2_grpc.AnchorServiceStub(channels[i % 5]).UploadAnchors
            slow = i % 3 == 2
            calls.append(upload.future(_anchor_chunks(stopper, 8 if slow else 0, 0.3, f"s{i}-"), timeout=30))
        _wait_for(lambda: server.streams.total == 24)  # the streams are open and hold their slots
        open_streams = server.streams.total
        latencies = []
        probe = np.random.default_rng(5).standard_normal((1, DIM)).astype(np.float32)
        with Client(server.address, timeout=3) as client:
            for _ in range(12):
                started = time.perf_counter()
                assert client.health()
                client.identify("g", probe, model="m", k=3)
                latencies.append(time.perf_counter() - started)
        assert np.median(latencies) < 1.0, latencies
        assert open_streams == 24
        codes = [_failure(call).code() for call in calls]
    finally:
        for ch in channels:
            ch.close()
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 32 - 24
    assert codes.count(grpc.StatusCode.DEADLINE_EXCEEDED) == 24
    with Client(server.address) as client:
        assert client.count_anchors("m", anchor_set="s") == 10
