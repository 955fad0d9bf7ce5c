"""The contract check (proto/check.sh, run by `make check`): buf lint and buf breaking against
every released contract, and that it catches what it is there to catch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import convergent

PROTO = Path(__file__).resolve().parents[2] / "proto"
BUF = Path(sys.executable).parent / "buf"

pytestmark = pytest.mark.skipif(not BUF.exists(), reason=f"buf is not installed at {BUF} (dev dependency buf-bin)")


def check(proto: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(proto / "check.sh")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "BUF": str(BUF)})


def copy_of_contract(tmp_path: Path) -> Path:
    copy = tmp_path / "proto"
    shutil.copytree(PROTO, copy, ignore=shutil.ignore_patterns("*.py", "*.pyi", "__pycache__", "py.typed"))
    return copy


def test_the_contract_passes_lint_and_breaking():
    result = check(PROTO)
    assert result.returncode == 0, result.stdout + result.stderr
    for image in sorted((PROTO / "released").glob("*.binpb")):
        assert f"released/{image.name}" in result.stdout


def test_this_version_is_released():
    """The version the package reports has its contract image: cutting a release = bumping
    __version__ and `buf build -o proto/released/convergent-v1-<version>.binpb`."""
    assert (PROTO / "released" / f"convergent-v1-{convergent.__version__}.binpb").is_file()


def test_a_renumbered_field_is_a_breaking_change(tmp_path):
    proto = copy_of_contract(tmp_path)
    anchors = proto / "convergent" / "v1" / "anchors.proto"
    text = anchors.read_text()
    assert "Matrix vectors = 6;" in text
    anchors.write_text(text.replace("Matrix vectors = 6;", "Matrix vectors = 9;", 1))
    result = check(proto)
    assert result.returncode != 0
    assert "UploadAnchorsRequest" in result.stdout + result.stderr


def test_a_badly_named_message_fails_lint(tmp_path):
    proto = copy_of_contract(tmp_path)
    types = proto / "convergent" / "v1" / "types.proto"
    types.write_text(types.read_text() + "\nmessage bad_name {}\n")
    result = check(proto)
    assert result.returncode != 0
    assert "bad_name" in result.stdout + result.stderr


def test_the_released_image_of_this_version_is_the_current_contract(tmp_path):
    """A change to the protos after a release needs a new version (and image): the image of
    __version__ holds exactly the messages and services the protos build to now (comments aside)."""
    from google.protobuf import descriptor_pb2

    built = tmp_path / "now.binpb"
    subprocess.run([str(BUF), "build", "--exclude-source-info", "-o", str(built)], cwd=PROTO, check=True, timeout=120)
    released = PROTO / "released" / f"convergent-v1-{convergent.__version__}.binpb"

    def files(path: Path) -> dict[str, bytes]:
        image = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
        for file in image.file:
            file.ClearField("source_code_info")
        return {file.name: file.SerializeToString(deterministic=True) for file in image.file}

    assert files(built) == files(released), (
        f"the protos changed since {released.name} was cut: bump convergent.__version__ and build its image "
        "(docs/api.md, 'Releasing the contract')")
