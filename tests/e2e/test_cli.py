"""The CLI against a real server: models, upload from .npz with progress, health, demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).with_name("convergent")


@pytest.fixture
def server(start_server):
    """A server on SQLite only: the CLI is a client, and the database behind the server changes
    nothing it prints (tests/service run every call on SQLite and PostgreSQL)."""
    return start_server()


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
    assert down.returncode == 1 and f"NOT_SERVING or unreachable at {server.address}" in down.stdout


PLOTS = ("cmc_methods.png", "det_verification.png", "cmc_fusion.png", "anchors_curve.png", "matched_correlations.png")


def check_report(folder: Path) -> str:
    report = (folder / "report.md").read_text()
    for plot in PLOTS:
        assert (folder / plot).stat().st_size > 10_000, plot  # a real PNG, not an empty figure
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot})" in report
    return report


@pytest.mark.slow
def test_demo_quick_synthetic(tmp_path: Path):
    result = run("demo", "--quick", "--synthetic", "--out", str(tmp_path / "report"), timeout=300)  # a guard, not a target
    report = check_report(tmp_path / "report")
    assert "SYNTHETIC data" in report and "**These numbers come from synthetic data" in report
    assert "fused" in report and "model-c" in report
    assert "report:" in result.stdout and "digits MLPs mean matched correlation" in result.stdout


@pytest.mark.slow
def test_demo_quick_realdata(tmp_path: Path, realdata: Path):
    result = run("demo", "--quick", "--realdata", str(realdata), "--out", str(tmp_path / "report"), timeout=300)
    report = check_report(tmp_path / "report")
    assert "real embeddings from" in report and "SYNTHETIC" not in report
    for method in ("auto", "ridge", "procrustes", "cca", "permutation", "semi_matching", "sparse", "spectral", "mlp", "shared space"):
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

    # --both-ways: the map back as well (verify then scores pairs in both models' spaces)
    both = run("fit", "--source", "src", "--target", "tgt", "--anchor-set", "s", "--method", "ridge", "--both-ways",
               *address).stdout
    assert both.count("method ridge (requested ridge)") == 2 and "src -> tgt" in both and "tgt -> src" in both


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
    # open-set on the gallery's own model: a threshold from non-mated probes (people not enrolled)
    np.savez(tmp_path / "strangers.npz", face=rng.standard_normal((300, 8)))
    needs_fpir = run("identify", str(tmp_path / "probes.npz"), "--gallery", "staff", "--model", "face",
                     "--non-mated", str(tmp_path / "strangers.npz"), *address, check=False)
    assert needs_fpir.returncode == 1 and "give --fpir too" in needs_fpir.stderr
    no_anchors = run("identify", str(tmp_path / "probes.npz"), "--gallery", "staff", "--model", "face", "--fpir", "0.05",
                     *address, check=False)
    assert no_anchors.returncode == 1 and "FAILED_PRECONDITION" in no_anchors.stderr and "non_mated" in no_anchors.stderr
    opened = run("identify", str(tmp_path / "probes.npz"), "--gallery", "staff", "--model", "face", "--fpir", "0.05",
                 "--non-mated", str(tmp_path / "strangers.npz"), "--out", str(tmp_path / "open.npz"), *address).stdout
    assert "open-set: threshold" in opened and "labelled" in opened and "on 300 non-mated searches" in opened
    assert "4 of 4 probes pass" in opened and "0: person0 (" in opened and ") pass" in opened
    with np.load(tmp_path / "open.npz") as hits:
        assert hits["accepted"].tolist() == [True] * 4
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
    assert "scores: cosine in face's space (auto: a and b are the same model)" in verified
    sideways = run("verify", str(tmp_path / "a.npz"), str(tmp_path / "a.npz"), "--a-model", "face", "--b-model", "face",
                   "--direction", "sideways", *address, check=False)
    assert sideways.returncode == 1 and "INVALID_ARGUMENT" in sideways.stderr and "unknown direction 'sideways'" in sideways.stderr
    report = run("verification-report", "--a-model", "face", "--b-model", "face", *address).stdout
    assert "FAR 0.01: threshold" in report and "FAR 0.001: threshold" not in report and "EER" in report


def test_backup_and_restore_commands(server, tmp_path: Path, rng):
    address = ["--address", server.address]
    run("models", "register", "face", "--dim", "4", *address)
    np.savez(tmp_path / "x.npz", face=rng.standard_normal((50, 4)))
    run("upload", str(tmp_path / "x.npz"), "--model", "face", "--anchor-set", "s", "--row-ids", *address)
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


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The command failed with exactly one line on stderr, starting with 'error:'."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("E1", "W1", "I1"))]
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_user_mistakes_give_one_line_and_change_nothing(server, tmp_path: Path, rng):
    address = ["--address", server.address]
    run("models", "register", "face", "--dim", "4", *address)
    (tmp_path / "bad.npz").write_text("not numpy at all")
    assert "not an .npz or .npy file" in one_error_line(run("upload", str(tmp_path / "bad.npz"), "--model", "face", "--anchor-set", "s", *address, check=False))
    np.savez(tmp_path / "obj.npz", face=np.array([object()] * 4, dtype=object))
    assert "object (pickled) array" in one_error_line(run("upload", str(tmp_path / "obj.npz"), "--model", "face", "--anchor-set", "s", *address, check=False))
    np.savez(tmp_path / "x.npz", face=rng.standard_normal((20, 4)), ids=np.array([f"i{k}" for k in range(20)]))
    typo = one_error_line(run("upload", str(tmp_path / "x.npz"), "--model", "face", "--anchor-set", "s", "--ids-key", "idz", *address, check=False))
    assert "no ids array 'idz'" in typo and "--row-ids" in typo
    wrong_key = run("upload", str(tmp_path / "x.npz"), "--model", "face", "--anchor-set", "s", "--key", "vecs", *address, check=False)
    assert "no array 'vecs'" in one_error_line(wrong_key)
    assert "has no" in one_error_line(run("enroll", str(tmp_path / "x.npz"), "--gallery", "g", "--model", "face", "--ids-key", "nope", *address, check=False))
    assert "s (" not in run("anchors", "list", *address).stdout  # nothing was stored by any of them
    # A .npy file holds one array: fine where ids come from the rows on request.
    np.save(tmp_path / "one.npy", rng.standard_normal((6, 4)))
    assert "ids array" in one_error_line(run("upload", str(tmp_path / "one.npy"), "--model", "face", "--anchor-set", "s", *address, check=False))
    assert "uploaded 6 vectors" in run("upload", str(tmp_path / "one.npy"), "--model", "face", "--anchor-set", "s", "--row-ids", *address).stdout
    assert "convergent " in run("--version").stdout


def test_server_down_and_serve_mistakes(tmp_path: Path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on, then one that is taken
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        down = one_error_line(run("models", "list", "--address", f"127.0.0.1:{port}", check=False))
        assert f"cannot reach a convergent server at 127.0.0.1:{port}" in down and "convergent serve" in down
        sock.listen()
        taken = one_error_line(run("serve", "--port", str(port), "--data-dir", str(tmp_path / "d"), check=False, timeout=60))
        assert f"cannot listen on 127.0.0.1:{port}" in taken and "--port" in taken
    nowhere = one_error_line(run("serve", "--port", "0", "--data-dir", "/proc/convergent-nope", check=False, timeout=60))
    assert "cannot use the data folder /proc/convergent-nope" in nowhere and "--data-dir" in nowhere
    # a misspelt method is a usage error (exit 2) naming the right one, before any connection
    typo = run("fit", "--source", "a", "--target", "b", "--anchor-set", "s", "--method", "ridgee",
               "--address", f"127.0.0.1:{port}", check=False)
    assert typo.returncode == 2 and "unknown method 'ridgee'" in typo.stderr and "'ridge'" in typo.stderr
    assert "cannot reach" not in typo.stderr


def test_gallery_anchor_erase_usage_and_shared_space_commands(server, tmp_path: Path, rng):
    address = ["--address", server.address]
    ids = np.array([f"p{i}" for i in range(40)])
    for name, dim in (("a", 6), ("b", 5), ("c", 4)):
        run("models", "register", name, "--dim", str(dim), *address)
        np.savez(tmp_path / f"{name}.npz", **{name: rng.standard_normal((40, dim))}, ids=ids)
        run("upload", str(tmp_path / f"{name}.npz"), "--model", name, "--anchor-set", "s", *address)
    shared = run("fit-shared", "--model", "a", "--model", "b", "--model", "c", "--anchor-set", "s", "--param", "n_components=3", *address).stdout
    assert "method shared" in shared and "a->b.top1" in shared
    run("enroll", str(tmp_path / "a.npz"), "--gallery", "g", "--model", "a", *address)
    assert "g " in run("galleries", "list", *address).stdout
    assert "gallery g: model a v1, index exact, 40 items" in run("galleries", "show", "g", *address).stdout
    assert "removed 2 of 3 ids from g" in run("galleries", "remove", "g", "--id", "p0", "--id", "p1", "--id", "zz", *address).stdout
    assert "deleted 1 anchors of c from s" in run("anchors", "delete", "s", "--model", "c", "--id", "p5", *address).stdout
    erased = run("erase", "p7", *address).stdout
    assert "erased 3 anchors and 1 gallery items" in erased and "'s'" in erased
    assert "vectors stored" in run("usage", *address).stdout
    assert "deleted gallery g" in run("galleries", "delete", "g", *address).stdout
    missing = one_error_line(run("galleries", "show", "g", *address, check=False))
    assert "NOT_FOUND" in missing and "`convergent galleries list` shows the galleries" in missing


def test_fit_cooperative_and_predict_commands(server, tmp_path: Path, rng):
    address = ["--address", server.address]
    ids = np.array([f"x{i}" for i in range(60)])
    Z = rng.standard_normal((60, 3))
    logits = Z @ rng.standard_normal((3, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    files = {"pa": Z @ rng.standard_normal((3, 6)), "pb": Z @ rng.standard_normal((3, 5)), "teacher": probs}
    for name, data in files.items():
        run("models", "register", name, "--dim", str(data.shape[1]), "--raw", *address)
        np.savez(tmp_path / f"{name}.npz", **{name: data}, ids=ids)
        run("upload", str(tmp_path / f"{name}.npz"), "--model", name, "--anchor-set", "s", *address)
    shared = run("fit-shared", "--model", "pa", "--model", "pb", "--anchor-set", "s", "--param", "n_components=3", *address).stdout
    space_id = shared.split()[1].rstrip(":")
    head = run("fit-cooperative", "--space", space_id, "--anchor-set", "s", "--teacher", "teacher", *address).stdout
    assert "method cooperative" in head and "fused.agreement" in head
    head_id = head.splitlines()[1].split()[1].rstrip(":")
    out = tmp_path / "probs.npz"
    predicted = run("predict", head_id, "--party", f"pa={tmp_path / 'pa.npz'}", "--party", f"pb={tmp_path / 'pb.npz'}",
                    "--out", str(out), *address).stdout
    assert "60 items, 4 classes, from pa, pb" in predicted
    P = np.load(out)["probabilities"]
    assert P.shape == (60, 4) and np.mean(P.argmax(1) == probs.argmax(1)) > 0.8  # anchors it was trained on
    bad = one_error_line(run("predict", head_id, "--party", "pa", *address, check=False))
    assert "MODEL=FILE.npz" in bad


def test_methods_command_lists_every_method_and_parameter(server):
    from convergent.server.align import methods

    out = run("methods", "--address", server.address).stdout  # the server's catalogue (ListMethods)
    for name in (*methods.PARAMS, *methods.OTHER_PARAMS):
        assert f"\n{name}: " in f"\n{out}", name
        for key, *_ in methods.describe(name):
            assert f"  {key} " in out, (name, key)
    assert run("methods", "--markdown").stdout.strip() == methods.markdown_table().strip()
