"""Bounded streaming calls, for every streaming method the server serves (convergent's
UploadAnchors and Enroll, health Watch, reflection):

* at most ``max_streams`` streaming calls at once, and ``max_streams_per_client`` per client
  connection (gRPC peer); beyond that a call gets RESOURCE_EXHAUSTED naming the limit;
* a request stream that sends no message for ``stream_idle_seconds`` is ended with
  DEADLINE_EXCEEDED. Its messages are read by a small helper thread into a one-message hand-off
  that the handler waits on with a timeout, so the handler never blocks in gRPC's request
  iterator; the abort raises inside the handler, before any commit, so nothing is stored.

The server's thread pool has ``workers + max_streams`` threads: whatever the streams do, at
least ``workers`` threads are left for unary calls. Server-streaming responses count in the
caps (health Watch sends on status changes only and holds no thread); no idle limit applies
to them. A moment after the last stream ends, freed memory goes back to the OS (a full gc and
glibc ``malloc_trim``, at most every 30 s).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import grpc

from convergent.server.rpc.errors import Failure, abort

log = logging.getLogger("convergent.rpc")

_END = object()
TIDY_AFTER_SECONDS = 1.0  # quiet time after the last stream before memory is given back
TIDY_EVERY_SECONDS = 30.0  # at most this often (a full gc and malloc_trim take ~0.1 s here)


class IdleLimitedRequests:
    """The request iterator of one stream, each message waited for at most ``idle_seconds``;
    then ``on_idle()`` (which raises) is called in the handler's thread."""

    def __init__(self, requests: Iterator[Any], idle_seconds: float, on_idle: Callable[[], NoReturn]) -> None:
        self._requests = requests
        self._idle = idle_seconds
        self._on_idle = on_idle
        self._ready = threading.Condition()
        self._item: Any = None  # a request, _END, or the exception the call's iterator raised
        self._full = False
        self._closed = False
        self._reader: threading.Thread | None = None

    def __iter__(self) -> IdleLimitedRequests:
        return self

    def __next__(self) -> Any:
        with self._ready:
            if self._reader is None:
                self._reader = threading.Thread(target=self._read, name="stream-reader", daemon=True)
                self._reader.start()
            deadline = time.monotonic() + self._idle
            while not self._full and (remaining := deadline - time.monotonic()) > 0:
                self._ready.wait(remaining)
            item, idle = self._item, not self._full
            if self._full and item is not _END and not isinstance(item, BaseException):
                self._item, self._full = None, False
                self._ready.notify_all()
        if idle:
            self._on_idle()
        if item is _END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """The handler is done: the reader drops what it still gets (it ends with the call)."""
        with self._ready:
            self._closed = True
            self._item, self._full = None, False
            self._ready.notify_all()

    def _read(self) -> None:
        try:
            for request in self._requests:
                if not self._hand_over(request):
                    return
            item: Any = _END
        except BaseException as exc:  # noqa: BLE001 - re-raised in the handler's thread
            item = exc
        self._hand_over(item)

    def _hand_over(self, item: Any) -> bool:
        with self._ready:
            while self._full and not self._closed:
                self._ready.wait()
            if self._closed:
                return False
            self._item, self._full = item, True
            self._ready.notify_all()
            return True


class StreamGuard(grpc.ServerInterceptor):
    """Caps concurrent streaming calls and ends request streams that go idle (module docstring)."""

    def __init__(self, max_streams: int, max_streams_per_client: int, idle_seconds: float) -> None:
        self.max_streams = max_streams
        self.per_client = max_streams_per_client
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}  # peer -> streaming calls open
        self.total = 0
        self._tidy: threading.Timer | None = None
        self._tidied = -TIDY_EVERY_SECONDS  # when memory was last released (monotonic)

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        name = handler_call_details.method.rsplit("/", 1)[-1]
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._stream_unary(name, handler.stream_unary))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=self._stream_stream(name, handler.stream_stream))
        return handler._replace(unary_stream=self._unary_stream(name, handler.unary_stream))

    # ------------------------------------------------------------------ wrappers
    def _stream_unary(self, name: str, behaviour: Callable) -> Callable:
        def wrapped(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            with self._slot(name, context), self._limited(name, requests, context) as limited:
                return behaviour(limited, context)

        return wrapped

    def _stream_stream(self, name: str, behaviour: Callable) -> Callable:
        def wrapped(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            with self._slot(name, context), self._limited(name, requests, context) as limited:
                yield from behaviour(limited, context)

        return wrapped

    def _unary_stream(self, name: str, behaviour: Callable) -> Callable:
        if getattr(behaviour, "experimental_non_blocking", False):  # health Watch: answers by callback
            def non_blocking(request: Any, context: grpc.ServicerContext, send: Callable) -> None:
                peer = self._take(name, context)
                if not context.add_callback(lambda: self._give_back(peer)):
                    self._give_back(peer)  # the call has ended already
                behaviour(request, context, send)

            non_blocking.experimental_non_blocking = True  # type: ignore[attr-defined]
            non_blocking.experimental_thread_pool = getattr(behaviour, "experimental_thread_pool", None)  # type: ignore[attr-defined]
            return non_blocking

        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._slot(name, context):
                yield from behaviour(request, context)

        return wrapped

    # ------------------------------------------------------------------ slots and idle limit
    @contextmanager
    def _slot(self, name: str, context: grpc.ServicerContext) -> Iterator[None]:
        peer = self._take(name, context)
        try:
            yield
        finally:
            self._give_back(peer)

    def _take(self, name: str, context: grpc.ServicerContext) -> str:
        """Count the call in, or abort it with RESOURCE_EXHAUSTED."""
        peer = context.peer() or "unknown"
        with self._lock:
            mine = self._open.get(peer, 0)
            if self.total >= self.max_streams:
                refusal = (f"{self.total} streaming calls are open, the server's limit (max_streams="
                           f"{self.max_streams}); retry later")
                limit = ("max_streams", self.max_streams)
            elif mine >= self.per_client:
                refusal = (f"this connection already has {mine} streaming calls open, the limit per client "
                           f"connection (max_streams_per_client={self.per_client}); finish one first")
                limit = ("max_streams_per_client", self.per_client)
            else:
                self._open[peer] = mine + 1
                self.total += 1
                return peer
        log.warning("%s from %s refused: %s", name, peer, refusal)
        abort(context, Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal, reason="TOO_MANY_STREAMS",
                               metadata={"limit": limit[0], "value": str(limit[1])}))
        raise AssertionError("abort raises")  # pragma: no cover

    def _give_back(self, peer: str) -> None:
        with self._lock:
            left = self._open.pop(peer, 1) - 1
            if left > 0:
                self._open[peer] = left
            self.total -= 1
            timer = None
            if self.total == 0 and self._tidy is None:  # soon after the last stream, at most every 30 s
                wait = max(TIDY_AFTER_SECONDS, self._tidied + TIDY_EVERY_SECONDS - time.monotonic())
                self._tidy = timer = threading.Timer(wait, self._release_memory)
                timer.daemon = True
        if timer is not None:
            timer.start()

    def _release_memory(self) -> None:
        """A moment after the last stream ended, if none is open: collect the cycles its
        aborted frames left and give free heap back to the OS (:func:`release_free_memory`)."""
        with self._lock:
            self._tidy = None
            if self.total:
                return
            self._tidied = time.monotonic()
        started = time.perf_counter()
        collected = gc.collect()
        release_free_memory()
        log.debug("no stream open: %d objects collected, memory released in %.1f ms",
                  collected, (time.perf_counter() - started) * 1e3)

    @contextmanager
    def _limited(self, name: str, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[IdleLimitedRequests]:
        idle = self.idle_seconds

        def on_idle() -> NoReturn:
            message = (f"no message for {idle:g} s on this {name} stream (stream_idle_seconds={idle:g}): it was "
                       "ended and nothing of it was stored; send messages more often, or finish with last=true")
            log.warning("%s from %s ended: %s", name, context.peer(), message)
            abort(context, Failure(grpc.StatusCode.DEADLINE_EXCEEDED, message, reason="STREAM_IDLE_TIMEOUT",
                                   metadata={"limit": "stream_idle_seconds", "value": f"{idle:g}"}))
            raise AssertionError("abort raises")  # pragma: no cover

        limited = IdleLimitedRequests(requests, idle, on_idle)
        try:
            yield limited
        finally:
            limited.close()


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None  # glibc only
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give freed heap back to the OS (glibc keeps it otherwise)."""
    if _TRIM is not None:
        _TRIM(0)
