"""Crash safety: SIGKILL `convergent serve` at seeded random moments, restart, check the store.

The harness lives in ``scripts/crash_soak.py`` (``--kills N --seed S`` runs it longer); here it
runs 20 kills on one data folder, plus kills during the first start-up of fresh folders.
Set ``CONVERGENT_CRASH_SEED`` to replay a seed; the seed and every kill time are printed
(``pytest -s``) and are part of every assertion message.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convergent.client import Client

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("CONVERGENT_CRASH_SEED", "20261126"))


def _load_soak():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("crash_soak", ROOT / "scripts" / "crash_soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("crash_soak", module)
    spec.loader.exec_module(module)
    return module


soak = _load_soak()


@pytest.mark.slow
def test_sigkill_during_writes_keeps_every_acknowledged_write_and_no_partial_one(tmp_path: Path):
    """20 cycles on one data folder: start, stream uploads (some slow, so kills land mid-stream),
    enrolls and ridge fits from a client thread, SIGKILL after a seeded delay of 30-600 ms, then
    read the SQLite file: every acknowledged write present and bit-identical, every
    unacknowledged one all-or-nothing, nothing else stored, data_version = committed uploads,
    each fit's n_anchors = the pairs committed when it ran, integrity_check ok. Each restart
    re-checks the counts through the SDK; a final restart re-uploads everything (a no-op only
    if bit-identical) and fits again."""
    result = soak.run_soak(kills=20, seed=SEED, data_dir=tmp_path / "data")
    print(result.summary())
    context = f"seed={SEED} (replay: CONVERGENT_CRASH_SEED={SEED}); kill times: {result.kill_times()}"
    assert not result.failures, context + "\n" + "\n".join(result.failures)
    assert result.kills == 20, context
    # Not vacuous: writes were acknowledged before the kills, and some kills caught a write in flight.
    assert result.uploads_acked >= 40 and result.enrolls_acked >= 5 and result.fits_acked >= 3, result.summary()
    assert result.in_flight_committed + result.in_flight_absent >= 5, result.summary()


@pytest.mark.slow
def test_sigkill_during_first_start_leaves_a_usable_data_dir(tmp_path: Path):
    """A kill 0-40 ms after 'listening on' lands before, during or after the schema migration of a
    fresh folder; the next start must open the store and serve, and nothing half-made is left."""
    rng = np.random.default_rng(SEED)
    delays = sorted(float(d) for d in rng.uniform(0.0, 0.04, size=4))
    print(f"start-up kills: seed={SEED}, delays {[f'{d * 1e3:.1f}ms' for d in delays]}")
    for number, delay in enumerate(delays):
        data_dir = tmp_path / f"fresh{number}"
        server = soak.ServerProcess(data_dir)
        time.sleep(delay)
        server.kill()
        server = soak.ServerProcess(data_dir)
        context = f"seed={SEED}, kill {number} at {delay * 1e3:.1f} ms after 'listening on'"
        try:
            with Client(server.address, timeout=10) as client:
                client.wait_until_serving(timeout=30)
                assert client.list_models() == [], context
                client.register_model("m", dim=4, normalize=False)
                assert client.upload_anchors("m", anchor_set="s", ids=["x"], vectors=np.ones((1, 4))) == 1, context
        finally:
            code = server.terminate()
        assert code == 0, f"{context}: exit {code}\n{server.log()[-2000:]}"
