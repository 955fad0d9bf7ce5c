"""The dependency direction of DESIGN.md holds: math and inference are pure, use cases and
transport never touch the database layer directly, and the SDK never imports the server."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports(folder: str) -> dict[str, set[str]]:
    found = {}
    for path in (ROOT / folder).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("folder", ["server/align", "server/inference"])
def test_math_is_pure(folder):
    for path, names in imports(folder).items():
        bad = {n for n in names if n.split(".")[0] in {"grpc", "sqlalchemy", "alembic"}
               or n.startswith(("convergent.server.storage", "convergent.server.rpc", "convergent.server.registry"))}
        assert not bad, (path, bad)


@pytest.mark.parametrize("folder", ["server/registry", "server/rpc"])
def test_use_cases_and_transport_see_only_storage_protocols(folder):
    allowed = {"convergent.server.storage", "convergent.server.storage.protocols"}
    for path, names in imports(folder).items():
        bad = {n for n in names if n.split(".")[0] in {"sqlalchemy", "alembic"}
               or (n.startswith("convergent.server.storage") and n not in allowed)}
        assert not bad, (path, bad)


def test_registry_does_not_import_grpc():
    for path, names in imports("server/registry").items():
        assert not {n for n in names if n.split(".")[0] == "grpc" or n.startswith("convergent.server.rpc")}, path


def test_client_never_imports_server_or_torch():
    for path, names in imports("client").items():
        assert not {n for n in names if n.startswith("convergent.server") or n.split(".")[0] in {"torch", "sklearn", "scipy"}}, path


def test_storage_never_imports_the_use_cases_and_domain_types_import_no_server():
    for path, names in imports("server/storage").items():
        assert not {n for n in names if n.startswith(("convergent.server.registry", "convergent.server.rpc"))}, path
    tree = ast.parse((ROOT / "server" / "records.py").read_text())
    names = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert names and not {n for n in names if n.startswith("convergent.server")}, names
