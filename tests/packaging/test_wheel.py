"""The wheel holds exactly the `convergent` package, every module of it, and every module imports."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Folder on disk -> its import name inside the wheel.
MAPPED = {"proto/convergent": "convergent", "server": "convergent/server", "client": "convergent/client"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (built,) = out.glob("convergent-*.whl")
    return built


def test_every_package_and_module_on_disk_is_in_the_wheel(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for folder, package in MAPPED.items():
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT / folder)
            if "__pycache__" in relative.parts:
                continue
            expected.add(f"{package}/{relative.as_posix()}")
    missing = sorted(expected - names)
    assert not missing, f"missing from the wheel: {missing}"
    for extra in ("convergent/py.typed", "convergent/v1/models.proto",
                  "convergent/server/storage/migrations/script.py.mako"):
        assert extra in names


def test_nothing_top_level_besides_convergent(wheel: Path):
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"convergent"}


def test_every_module_imports_from_the_wheel(wheel: Path, tmp_path: Path):
    zipfile.ZipFile(wheel).extractall(tmp_path)
    modules = sorted(
        name[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        for name in zipfile.ZipFile(wheel).namelist()
        if name.endswith(".py") and "/migrations/" not in name and not name.endswith("__main__.py")
    )
    script = (
        "import importlib, sys\n"
        f"mods = {modules!r}\n"
        "for m in mods:\n"
        "    mod = importlib.import_module(m)\n"
        f"    assert mod.__file__.startswith({str(tmp_path)!r}), (m, mod.__file__)\n"
        "print(len(mods))\n"
    )
    # -S -I: no site-packages editable finder, only the extracted wheel + the venv's dependencies.
    site = [p for p in sys.path if p.endswith("site-packages")]
    env_path = ":".join([str(tmp_path), *site])
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = {env_path.split(':')!r}\n" + script],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == len(modules) > 20
