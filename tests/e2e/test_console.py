"""`convergent console` in a real browser: Debian's chromium driven by Playwright against the
console process, itself a client of a real server with API keys on and the real faces enrolled.
Every page loads, the numbers shown equal the SDK's, a reader key is refused the audit log while
an admin sees its own identify there, and the pages are screenshotted (into
$CONVERGENT_SCREENSHOTS when set: docs/console_*.png come from there)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convergent.client import Client
from convergent.server.datasets import load_faces
from convergent.server.rpc.auth import hash_secret, new_key
from convergent.server.storage.key_store import KeyStore

BIN = Path(sys.executable).with_name("convergent")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's notes say: without these Chromium tries the network at every start.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.realdata
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev dependency)")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)", allow_module_level=True)


def _key(server, role: str) -> str:
    key_id, secret, key = new_key()
    KeyStore(server.store.engine).insert(key_id, "default", f"console-{role}", role, hash_secret(secret))
    return key


@pytest.fixture
def federation(start_server, realdata):
    """A server with keys on: the AT&T faces' three models, the atlas fitted, a gallery enrolled."""
    server = start_server(require_auth=True)
    admin, reader = _key(server, "admin"), _key(server, "reader")
    faces = load_faces(realdata)
    anchors, rest = np.flatnonzero(faces.labels < 20), np.flatnonzero(faces.labels >= 20)
    with Client(server.address, api_key=admin, timeout=300) as c:
        for model, vectors in faces.vectors.items():
            c.register_model(model, dim=vectors.shape[1])
            c.upload_anchors(model, anchor_set="att", ids=[faces.ids[i] for i in anchors], vectors=vectors[anchors])
        c.fit_missing_routes("att")
        c.enroll(gallery="staff", model="facenet", ids=[f"p{faces.labels[i]}-{i}" for i in rest],
                 vectors=faces.vectors["facenet"][rest])
        c.identify(gallery="staff", vectors=faces.vectors["dlib"][rest[:5]], model="dlib", k=1)
    return server, admin, reader


def _console(server, key: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([str(BIN), "console", "--server", server.address, "--api-key", key, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    found = re.search(r"http://[\d.]+:\d+/", line)
    assert found, line + proc.stderr.read()
    return proc, found.group(0)


@pytest.fixture
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def _open(page, url: str, timeout: float = 30.0):  # noqa: ANN001, ANN202 - the console starts while we ask
    deadline = time.monotonic() + timeout
    while True:
        try:
            return page.goto(url)
        except playwright_api.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _cells(page, table: str) -> list[list[str]]:  # noqa: ANN001
    return [[c.strip() for c in row.locator("td").all_inner_texts()] for row in page.locator(f"#{table} tr").all()[1:]]


def test_every_page_shows_what_the_sdk_says_and_a_reader_is_refused_the_audit_log(federation, browser, tmp_path):
    server, admin, reader = federation
    shots = Path(os.environ.get("CONVERGENT_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with Client(server.address, api_key=admin, timeout=60) as c:
        atlas, usage, galleries = c.atlas("att"), c.usage(), c.list_galleries()
        report = c.verification_report("dlib", "facenet")
    proc, url = _console(server, admin)
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        assert _open(page, url).status == 200
        assert page.inner_text("#health") == "SERVING" and page.inner_text("#stored") == str(usage.stored_vectors)
        page.screenshot(path=str(shots / "console_overview.png"), full_page=True)
        for href in ("/models", "/fits", "/atlas", "/galleries", "/audit"):
            assert page.goto(url.rstrip("/") + href).status == 200, href
            assert "Traceback" not in page.content()
        page.goto(url + "atlas/att")
        shown = {(row[0], row[1]): row[3] for row in _cells(page, "atlas")}
        assert shown == {(e.source, e.target): f"{e.top1:.3f}" for e in atlas.entries}
        assert page.locator("svg").count() >= 1 and page.inner_text("#clusters") == "\n".join(", ".join(g) for g in atlas.clusters)
        page.screenshot(path=str(shots / "console_atlas.png"), full_page=True)
        page.goto(url + "galleries")
        rows = _cells(page, "galleries")
        assert [(r[0], r[2]) for r in rows] == [(g.name, str(g.size)) for g in galleries]
        assert set(rows[0][4].split(", ")) == {"dlib", "mobileface"}  # current routes into facenet
        page.click("text=dlib→facenet")
        assert [r[3] for r in _cells(page, "points")] == [f"{p.tar:.3f}" for p in report.points]
        assert page.inner_text("#eer") == f"{report.eer:.3f}"
        page.screenshot(path=str(shots / "console_verification.png"), full_page=True)
        deadline = time.monotonic() + 20  # the audit log is written in the background
        while True:
            page.goto(url + "audit")
            calls = [row[2] for row in _cells(page, "audit")]
            if "Identify" in calls or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "Identify" in calls
    finally:
        proc.terminate()
        proc.wait(10)
    proc, url = _console(server, reader)
    try:
        page = browser.new_page()
        assert _open(page, url + "atlas/att").status == 200  # a reader reads the atlas
        refused = page.goto(url + "audit")
        assert refused.status == 403 and "PERMISSION_DENIED" in page.inner_text("#error")
        assert "needs an admin key" in page.content()
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_console_says_in_one_line_when_no_server_answers(tmp_path):
    done = subprocess.run([str(BIN), "console", "--server", "127.0.0.1:9", "--port", "0"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "no server answers at 127.0.0.1:9" in done.stderr and "Traceback" not in done.stderr
