"""examples/node: the face flow from Node.js (the .proto files only) against a real server.

The script runs on one server with API keys required; the same flow through the Python SDK
runs on a second, identical server; both must give the same rank-1 numbers (the server does
the math, so any difference is a wire or flow difference). A deliberate mistake (identify
against a gallery nobody enrolled) must come back from Node as NOT_FOUND, and a call without
the key as UNAUTHENTICATED.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from convergent.client import Client
from convergent.server.datasets import write_tour_files
from convergent.server.rpc.auth import hash_secret, new_key
from convergent.server.storage.key_store import KeyStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NODE is None, reason="node (Node.js >= 18) is not on PATH: the Node example cannot run"),
    pytest.mark.skipif(not (EXAMPLE / "node_modules").is_dir(),
                       reason="examples/node/node_modules is missing: run `npm ci --prefix examples/node`"),
]


def party_key(server) -> str:
    key_id, secret, key = new_key()
    KeyStore(server.store.engine).insert(key_id, "acme", "acme-party", "party", hash_secret(secret))
    return key


def run_node(data: Path, address: str, key: str | None, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CONVERGENT_ADDRESS", "CONVERGENT_API_KEY")}
    if key is not None:
        env["CONVERGENT_API_KEY"] = key
    assert NODE is not None
    return subprocess.run([NODE, str(EXAMPLE / "face_flow.js"), str(data), "--address", address, *extra],
                          env=env, capture_output=True, text=True, timeout=60)


def sdk_flow(address: str, key: str, data: Path) -> dict:
    """The README tour's flow through the Python SDK, as face_flow.js does it over the wire."""
    anchors, gallery, probes = (np.load(data / f"{name}.npz") for name in ("anchors", "gallery", "probes"))
    with Client(address, api_key=key, timeout=30) as c:
        c.register_model("dlib", dim=128)
        c.register_model("facenet", dim=128)
        c.upload_anchors("dlib", anchor_set="att", ids=anchors["ids"], vectors=anchors["dlib"])
        c.upload_anchors("facenet", anchor_set="att", ids=anchors["ids"], vectors=anchors["facenet"])
        fit = c.fit_alignment("dlib", "facenet", anchor_set="att")
        c.enroll("staff", model="facenet", ids=gallery["ids"], vectors=gallery["facenet"])
        result: dict = {"n_probes": len(probes["person"]), "fit_method": fit.method}
        for scoring in ("auto", "cosine"):
            r = c.identify(gallery="staff", vectors=probes["dlib"], model="dlib", k=1, scoring=scoring)
            result[f"rank1_{r.scoring}"] = float(np.mean([row[0] == person for row, person in zip(r.ids, probes["person"])]))
            if scoring == "auto":
                result["auto_scoring"] = r.scoring
    return result


def test_node_face_flow_matches_the_sdk(start_server, tmp_path: Path):
    data = tmp_path / "tour"
    write_tour_files(data)  # what `convergent example-data` writes (real faces when shared/realdata is there)
    for_node, for_sdk = start_server(require_auth=True), start_server(require_auth=True)
    key = party_key(for_node)

    ran = run_node(data, for_node.address, key)
    assert ran.returncode == 0, f"face_flow.js failed:\n{ran.stdout}\n{ran.stderr}"
    node = json.loads(ran.stdout.strip().splitlines()[-1])
    assert node["n_probes"] == 180 and node["auto_scoring"] == "csls" and node["route"].startswith("fit:")
    assert f"rank-1 (csls): {node['rank1_csls']:.3f} over 180 probes" in ran.stdout
    assert f"rank-1 (cosine): {node['rank1_cosine']:.3f} over 180 probes" in ran.stdout

    sdk = sdk_flow(for_sdk.address, party_key(for_sdk), data)
    assert sdk["auto_scoring"] == "csls" and sdk["fit_method"] == node["fit_method"]
    assert node["rank1_csls"] == pytest.approx(sdk["rank1_csls"], abs=1e-9)
    assert node["rank1_cosine"] == pytest.approx(sdk["rank1_cosine"], abs=1e-9)
    assert node["rank1_csls"] >= 0.5, ran.stdout  # 0.922 on the real faces; synthetic identities without them

    mistake = run_node(data, for_node.address, key, "--missing-gallery")
    assert mistake.returncode == 1, mistake.stdout + mistake.stderr
    assert "GalleryService.Identify failed: NOT_FOUND: gallery 'no-such-gallery' not found" in mistake.stderr

    anonymous = run_node(data, for_node.address, None, "--missing-gallery")
    assert anonymous.returncode == 1 and "InfoService.GetServerInfo failed: UNAUTHENTICATED" in anonymous.stderr, anonymous.stderr
