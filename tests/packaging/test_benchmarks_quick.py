"""The benchmark scripts run end to end and write every key (timings are never asserted):
benchmarks/run.py at toy sizes (``--smoke``: the same steps as ``--quick`` and a full run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = (
    "ingest_ratio",
    "fit_affine_ratio",
    "fit_permutation_ratio",
    "identify_ratio",
    "transform_ratio",
    "csls_identify_ratio",
    "fit_memory_growth",
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_benchmark_smoke_run_writes_every_key(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--json", str(out),
         "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())
    for key in KEYS:
        entry = results[key]
        assert {"median", "min", "max", "target", "holds"} <= set(entry), key
        assert entry["min"] <= entry["median"] <= entry["max"], key
    assert results["machine"]["blas"], "the BLAS kernel in use is recorded"
    assert {"ingest", "fit_affine", "fit_permutation", "identify", "csls", "transform", "cuda"} <= set(results["absolute"])
    assert "ingest_ratio" in proc.stdout  # the table is printed


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", [[], ["--service"]])
def test_milvus_benchmark_runs_small(mode: list[str]) -> None:
    """benchmarks/milvus.py on a small gallery: the table is printed, and through the servers the
    Milvus backend's top-10 lists equal the local exact index's."""
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (extra 'milvus')")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "milvus.py"), "--n", "3000", "--queries", "128",
         "--rounds", "1", *mode],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    if mode:
        assert "| local |" in proc.stdout and "| milvus |" in proc.stdout
        assert "identical to local: 1.000" in proc.stdout
    else:
        assert "| milvus FLAT |" in proc.stdout and "| local exact |" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("mode", [[], ["--hnsw"]])
def test_milvus_server_benchmark_runs_small(mode: list[str], milvus_database: str) -> None:
    """benchmarks/milvus_server.py on a small gallery, on the session's Milvus server: the tables
    are printed; through convergent the top-10 lists equal exact numpy's."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "milvus_server.py"), "--uri", milvus_database, "--n", "2000",
         "--queries", "64", "--rounds", "1", "--batches", "32", *mode],
        cwd=ROOT, capture_output=True, text=True, timeout=380,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    if mode:
        assert "| FLAT (exact) |" in proc.stdout and "| HNSW M=32 ef=64 |" in proc.stdout
    else:
        assert "| convergent identify (Milvus backend) |" in proc.stdout
        assert "top-10 identical to exact numpy: convergent 1.000" in proc.stdout
