"""The leanest gRPC servicers convergent is measured against (one process, same wire messages).

They speak the same ``convergent.v1`` messages on the same method names, so the very same
SDK call (``Client.upload_anchors`` / ``identify`` / ``transform``) drives them and the
client side costs the same; only the server differs. They validate nothing, route nothing,
log nothing.

  --mode ingest     UploadAnchors: append each chunk's bytes as one blob row to SQLite
                    (WAL, synchronous=FULL), commit once per stream.
  --mode identify   Identify: probes @ gallery.T with numpy, argpartition top-k, sort those.
  --mode transform  Transform: X @ W.T + b with numpy (float32).

Prints ``listening on 127.0.0.1:PORT`` on stderr, serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from convergent.v1 import alignment_pb2, anchors_pb2, galleries_pb2, info_pb2, types_pb2

MiB = 1 << 20


def _matrix(a: np.ndarray) -> types_pb2.Matrix:
    a = np.ascontiguousarray(a, dtype="<f4")
    return types_pb2.Matrix(data=a.tobytes(), shape=list(a.shape), dtype=types_pb2.DTYPE_FLOAT32)


def _decode(m: types_pb2.Matrix) -> np.ndarray:
    return np.frombuffer(m.data, dtype="<f4").reshape(int(m.shape[0]), int(m.shape[1]))


def server_info(request, context):  # noqa: ANN001, ARG001
    return info_pb2.ServerInfo(
        version="baseline", api="convergent.v1", max_receive_message_bytes=64 * MiB,
        max_send_message_bytes=64 * MiB, max_vectors_per_message=65536, max_dim=8192,
        max_name_length=128, max_page_size=1000,
    )


class Ingest:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = str(data_dir / "baseline.sqlite3")
        conn = self._connect()
        conn.execute("CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, ids BLOB, data BLOB)")
        conn.close()
        self.lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def upload(self, request_iterator, context):  # noqa: ANN001, ARG002
        n = 0
        with self.lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            for request in request_iterator:
                conn.execute("INSERT INTO chunks (ids, data) VALUES (?, ?)",
                             ("\n".join(request.ids).encode(), request.vectors.data))
                n += len(request.ids)
            conn.execute("COMMIT")
            conn.close()
        return anchors_pb2.UploadAnchorsResponse(received=n, inserted=n, total=n, data_version=1)


class Identify:
    def __init__(self, gallery: Path, ids: Path) -> None:
        self.G = np.load(gallery)  # (n, d) float32, rows already unit length
        self.ids = np.load(ids, allow_pickle=False).astype(object)

    def identify(self, request, context):  # noqa: ANN001, ARG002
        Q = _decode(request.vectors)
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        k = int(request.k)
        S = Q @ self.G.T
        top = np.argpartition(S, S.shape[1] - k, axis=1)[:, -k:]
        vals = np.take_along_axis(S, top, axis=1)
        order = np.argsort(-vals, axis=1)
        top = np.take_along_axis(top, order, axis=1)
        vals = np.take_along_axis(vals, order, axis=1)
        return galleries_pb2.IdentifyResponse(ids=self.ids[top].ravel().tolist(), scores=_matrix(vals), route="direct")


class Transform:
    def __init__(self, W: Path, b: Path) -> None:
        self.Wt = np.ascontiguousarray(np.load(W).astype(np.float32).T)  # (d_s, d_t)
        self.b = np.load(b).astype(np.float32)

    def transform(self, request, context):  # noqa: ANN001, ARG002
        Z = _decode(request.vectors) @ self.Wt + self.b
        return alignment_pb2.TransformResponse(vectors=_matrix(Z), fit_id="baseline", target="baseline")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("ingest", "identify", "transform"), required=True)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--gallery", type=Path)
    p.add_argument("--ids", type=Path)
    p.add_argument("--w", type=Path)
    p.add_argument("--b", type=Path)
    args = p.parse_args()

    def unary(fn, req, resp):  # noqa: ANN001, ANN202
        return grpc.unary_unary_rpc_method_handler(fn, req.FromString, resp.SerializeToString)

    handlers = [grpc.method_handlers_generic_handler(
        "convergent.v1.InfoService",
        {"GetServerInfo": unary(server_info, info_pb2.GetServerInfoRequest, info_pb2.ServerInfo)},
    )]
    if args.mode == "ingest":
        svc = Ingest(args.data_dir)
        handlers.append(grpc.method_handlers_generic_handler("convergent.v1.AnchorService", {
            "UploadAnchors": grpc.stream_unary_rpc_method_handler(
                svc.upload, anchors_pb2.UploadAnchorsRequest.FromString,
                anchors_pb2.UploadAnchorsResponse.SerializeToString),
        }))
    elif args.mode == "identify":
        svc = Identify(args.gallery, args.ids)
        handlers.append(grpc.method_handlers_generic_handler("convergent.v1.GalleryService", {
            "Identify": unary(svc.identify, galleries_pb2.IdentifyRequest, galleries_pb2.IdentifyResponse),
        }))
    else:
        svc = Transform(args.w, args.b)
        handlers.append(grpc.method_handlers_generic_handler("convergent.v1.AlignmentService", {
            "Transform": unary(svc.transform, alignment_pb2.TransformRequest, alignment_pb2.TransformResponse),
        }))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", 64 * MiB), ("grpc.max_send_message_length", 64 * MiB),
                 ("grpc.so_reuseport", 0)],
        handlers=handlers,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()


if __name__ == "__main__":
    main()
