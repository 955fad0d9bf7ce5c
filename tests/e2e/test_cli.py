"""The CLI against a real server: models, upload from .npz with progress, health, demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).with_name("convergent")


def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def test_models_upload_and_list(server, tmp_path: Path, rng):
    address = ["--address", server.address]
    assert "registered face (dim 16, version 1" in run("models", "register", "face", "--dim", "16", *address).stdout
    duplicate = run("models", "register", "face", "--dim", "16", *address, check=False)
    assert duplicate.returncode == 1 and "ALREADY_EXISTS" in duplicate.stderr
    assert "face" in run("models", "list", *address).stdout

    file = tmp_path / "emb.npz"
    np.savez(file, face=rng.standard_normal((700, 16)), ids=np.array([f"p{i}" for i in range(700)]))
    result = run("upload", str(file), "--model", "face", "--anchor-set", "att", "--chunk-size", "100", *address)
    assert "uploaded 700 vectors of face to att; 700 stored" in result.stdout
    assert "7/7" in result.stderr  # tqdm progress over 7 chunks
    assert "att (version 1): face=700" in run("anchors", "list", *address).stdout

    missing = run("upload", str(file), "--model", "face", "--anchor-set", "att", "--key", "nope", *address, check=False)
    assert missing.returncode == 1 and "no array 'nope'" in missing.stderr
    assert "deleted face and 700 anchors" in run("models", "delete", "face", *address).stdout


def test_health_exit_codes(server):
    assert run("health", "--address", server.address).stdout.strip() == "SERVING"
    server.stop(grace=0.2)
    down = run("health", "--address", server.address, check=False, timeout=60)
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr


PLOTS = ("cmc_methods.png", "cmc_fusion.png", "anchors_curve.png", "matched_correlations.png")


def check_report(folder: Path) -> str:
    report = (folder / "report.md").read_text()
    for plot in PLOTS:
        assert (folder / plot).stat().st_size > 10_000, plot  # a real PNG, not an empty figure
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot})" in report
    return report


@pytest.mark.slow
def test_demo_quick_synthetic(tmp_path: Path):
    result = run("demo", "--quick", "--synthetic", "--out", str(tmp_path / "report"))
    report = check_report(tmp_path / "report")
    assert "SYNTHETIC data" in report and "**These numbers come from synthetic data" in report
    assert "fused" in report and "model-c" in report
    assert "report:" in result.stdout and "digits MLPs mean matched correlation" in result.stdout


@pytest.mark.slow
def test_demo_quick_realdata(tmp_path: Path, realdata: Path):
    result = run("demo", "--quick", "--realdata", str(realdata), "--out", str(tmp_path / "report"))
    report = check_report(tmp_path / "report")
    assert "real embeddings from" in report and "SYNTHETIC" not in report
    for method in ("auto", "ridge", "procrustes", "cca", "permutation", "semi_matching", "sparse", "spectral", "shared space"):
        assert f"| {method}" in report, method
    import re

    fused = re.search(r"\| fused \| ([0-9.]+) \|", report)
    solo = [float(x) for x in re.findall(r"\| (?:dlib|facenet) \| ([0-9.]+) \|", report)]
    assert fused and len(solo) == 2 and float(fused.group(1)) > max(solo)
    assert "text minilm_l6→mpnet" in result.stdout


def test_fit_transform_and_fits_commands(server, tmp_path: Path, rng):
    address = ["--address", server.address]
    X = rng.standard_normal((300, 8))
    Y = X @ rng.standard_normal((8, 6))
    ids = np.array([f"a{i}" for i in range(300)])
    np.savez(tmp_path / "src.npz", src=X, ids=ids)
    np.savez(tmp_path / "tgt.npz", tgt=Y, ids=ids)
    for name, dim, file in (("src", 8, "src.npz"), ("tgt", 6, "tgt.npz")):
        run("models", "register", name, "--dim", str(dim), "--raw", *address)
        run("upload", str(tmp_path / file), "--model", name, "--anchor-set", "s", *address)

    fitted = run("fit", "--source", "src", "--target", "tgt", "--anchor-set", "s", "--method", "ridge",
                 "--param", "alpha=0.5", *address).stdout
    assert "method ridge (requested ridge)" in fitted and "'alpha': 0.5" in fitted
    fit_id = fitted.split()[1].rstrip(":")
    bad = run("fit", "--source", "src", "--target", "tgt", "--anchor-set", "s", "--param", "nope=1", *address, check=False)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "nope" in bad.stderr

    assert fit_id in run("fits", "list", *address).stdout
    assert "r2" in run("fits", "show", fit_id, *address).stdout
    run("fits", "export", fit_id, "--out", str(tmp_path / "maps.npz"), *address)
    with np.load(tmp_path / "maps.npz") as maps:
        W, b = maps["W"], maps["b"]
    assert W.shape == (6, 8) and b.shape == (6,)

    run("transform", str(tmp_path / "src.npz"), "--source", "src", "--target", "tgt",
        "--out", str(tmp_path / "mapped.npz"), *address)
    with np.load(tmp_path / "mapped.npz") as mapped:
        np.testing.assert_allclose(mapped["vectors"], (X @ W.T + b).astype(np.float32), rtol=1e-4, atol=1e-4)
        assert list(mapped["ids"][:2]) == ["a0", "a1"]


def test_enroll_identify_verify_commands(server, tmp_path: Path, rng):
    address = ["--address", server.address]
    run("models", "register", "face", "--dim", "8", *address)
    G = rng.standard_normal((30, 8))
    np.savez(tmp_path / "gallery.npz", face=G, ids=np.array([f"person{i}" for i in range(30)]))
    assert "gallery size 30" in run("enroll", str(tmp_path / "gallery.npz"), "--gallery", "staff", "--model", "face", *address).stdout
    np.savez(tmp_path / "probes.npz", face=G[:4] + 0.01)
    result = run("identify", str(tmp_path / "probes.npz"), "--gallery", "staff", "--model", "face", "--k", "3",
                 "--out", str(tmp_path / "hits.npz"), *address)
    assert "route: direct" in result.stdout and "0: person0" in result.stdout
    with np.load(tmp_path / "hits.npz") as hits:
        assert hits["ids"].shape == (4, 3) and list(hits["ids"][:, 0]) == [f"person{i}" for i in range(4)]
    np.savez(tmp_path / "a.npz", face=G[:3])
    failed = run("verify", str(tmp_path / "a.npz"), str(tmp_path / "a.npz"), "--a-model", "face", "--b-model", "face", *address, check=False)
    assert failed.returncode == 1 and "FAILED_PRECONDITION" in failed.stderr and "calibrate" in failed.stderr

    # Labelled pairs from the CLI: 200 genuine (a photo and a slightly different one), 2000 impostors.
    A = rng.standard_normal((2200, 8))
    same = np.r_[np.ones(200, bool), np.zeros(2000, bool)]
    B = np.where(same[:, None], A + 0.05 * rng.standard_normal(A.shape), rng.standard_normal(A.shape))
    np.savez(tmp_path / "la.npz", face=A, same=same)
    np.savez(tmp_path / "lb.npz", face=B)
    nokey = run("calibrate", str(tmp_path / "la.npz"), str(tmp_path / "lb.npz"), "--a-model", "face", "--b-model", "face",
                "--same-key", "labels", *address, check=False)
    assert nokey.returncode == 1 and "--same-key" in nokey.stderr
    stored = run("calibrate", str(tmp_path / "la.npz"), str(tmp_path / "lb.npz"), "--a-model", "face", "--b-model", "face", *address)
    assert "stored 200 genuine and 2000 impostor labelled pairs" in stored.stdout
    verified = run("verify", str(tmp_path / "a.npz"), str(tmp_path / "a.npz"), "--a-model", "face", "--b-model", "face",
                   "--far", "0.01", *address).stdout
    assert "calibration labelled" in verified and "2200 labelled pairs" in verified and "accepted 3 of 3 pairs" in verified
    report = run("verification-report", "--a-model", "face", "--b-model", "face", *address).stdout
    assert "FAR 0.01: threshold" in report and "FAR 0.001: threshold" not in report and "EER" in report


def test_backup_and_restore_commands(server, tmp_path: Path, rng):
    if server.store.engine.dialect.name != "sqlite":
        pytest.skip("convergent backup copies the SQLite store; for PostgreSQL use pg_dump")
    address = ["--address", server.address]
    run("models", "register", "face", "--dim", "4", *address)
    np.savez(tmp_path / "x.npz", face=rng.standard_normal((50, 4)))
    run("upload", str(tmp_path / "x.npz"), "--model", "face", "--anchor-set", "s", *address)
    data_dir = str(server.settings.data_dir)
    wrote = run("backup", str(tmp_path / "b.tar.gz"), "--data-dir", data_dir).stdout
    assert "anchors=50" in wrote and "models=1" in wrote
    assert "verified" in run("backup", str(tmp_path / "b.tar.gz"), "--verify").stdout
    restored = run("restore", str(tmp_path / "b.tar.gz"), "--data-dir", str(tmp_path / "copy")).stdout
    assert "restored" in restored
    again = run("restore", str(tmp_path / "b.tar.gz"), "--data-dir", str(tmp_path / "copy"), check=False)
    assert again.returncode == 1 and "force" in again.stderr
    (tmp_path / "bad.tar").write_bytes(b"not a backup")
    bad = run("backup", str(tmp_path / "bad.tar"), "--verify", check=False)
    assert bad.returncode == 1 and "error:" in bad.stderr
