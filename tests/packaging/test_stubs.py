"""The committed gRPC stubs are exactly what the pinned grpcio-tools generates from the protos."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def test_regenerated_stubs_match_committed(tmp_path: Path):
    shutil.copytree(PROTO / "convergent" / "v1", tmp_path / "convergent" / "v1",
                    ignore=shutil.ignore_patterns("*_pb2*", "__pycache__"))
    protos = sorted((tmp_path / "convergent" / "v1").glob("*.proto"))
    assert protos, "no .proto files found"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(tmp_path), f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", *map(str, protos)],
        check=True, capture_output=True, text=True,
    )
    differences = []
    for proto in protos:
        for suffix in GENERATED:
            name = proto.stem + suffix
            fresh = (tmp_path / "convergent" / "v1" / name).read_text()
            committed_path = PROTO / "convergent" / "v1" / name
            if not committed_path.exists() or committed_path.read_text() != fresh:
                differences.append(name)
    assert not differences, f"stale generated stubs (run proto/gen.sh and commit): {differences}"


def test_every_proto_has_committed_stubs():
    stems = {p.stem for p in (PROTO / "convergent" / "v1").glob("*.proto")}
    for stem in stems:
        for suffix in GENERATED:
            assert (PROTO / "convergent" / "v1" / f"{stem}{suffix}").exists()
