"""Cost of a gallery's record on a large gallery (SQLite): what identify and enroll read per call.

Since migration 0006 a gallery row keeps its size and newest enrolment number; before, every
identify counted the gallery's items and every enroll also scanned them for MAX(seq). The
baseline runs those two queries on the same database in the same process.

    .venv/bin/python benchmarks/gallery_records.py [--n 200000] [--dim 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import count
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from convergent.server.storage.schema import gallery_item_ids as gallery_items
from convergent.server.storage.sql import SqlStore


def ms_per_call(fn, repeat: int = 20) -> float:  # noqa: ANN001
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = SqlStore(f"sqlite:///{Path(tmp) / 'bench.sqlite3'}")
        X = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
        store.galleries.enroll("t", "g", "m", 1, "exact", [([f"p{i}" for i in range(args.n)], X)])
        key = (gallery_items.c.tenant == "t") & (gallery_items.c.gallery == "g")

        def scans() -> None:  # what each call read before 0006
            with store.engine.connect() as conn:
                conn.execute(sa.select(sa.func.count()).select_from(gallery_items).where(key)).scalar()
                conn.execute(sa.select(sa.func.max(gallery_items.c.seq)).where(key)).scalar()

        numbers = count()
        record = ms_per_call(lambda: store.galleries.get("t", "g"))
        baseline = ms_per_call(scans)
        enroll = ms_per_call(lambda: store.galleries.enroll("t", "g", "m", 1, "exact", [([f"q{next(numbers)}"], X[:1])]))
        store.close()
    print(f"| gallery of {args.n:,} x {args.dim} (SQLite) | ms per call |")
    print("|---|---|")
    print(f"| gallery record (size, version, last enrolment number) | {record:.2f} |")
    print(f"| baseline: COUNT(*) + MAX(seq) over the items | {baseline:.2f} |")
    print(f"| enroll one item (whole transaction) | {enroll:.2f} |")
    print(f"\nrecord / baseline = {record / baseline:.3f}")


if __name__ == "__main__":
    main()
