"""``convergent demo``: an embedded server on a free port, the parties played by SDK clients.

It uploads the anchors every party would send (real embeddings from ``shared/realdata``
when present, else synthetic ones it generates), and prints what the server stored.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from convergent.datasets import EmbeddingSet, find_realdata, load_faces, load_text, synthetic_identities


def _datasets(realdata: Path | None, quick: bool, synthetic: bool) -> tuple[list[EmbeddingSet], str]:
    folder = None if synthetic else find_realdata(realdata)
    if folder is None:
        reason = "--synthetic was given" if synthetic else "no real data found"
        return [synthetic_identities()], f"synthetic data ({reason})"
    return [load_faces(folder), load_text(folder, n=500 if quick else None)], f"real data from {folder}"


def run_demo(out: Path, realdata: Path | None = None, quick: bool = False, synthetic: bool = False) -> Path:
    """Run the demo; writes ``out/report.md`` and returns its path."""
    from convergent.client import Client
    from convergent.server import logs
    from convergent.server.rpc.app import ConvergentServer
    from convergent.server.settings import ServerSettings

    logs.configure("WARNING")
    datasets, provenance = _datasets(realdata, quick, synthetic)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# convergent demo report", "", f"Data: {provenance}.", ""]
    with tempfile.TemporaryDirectory(prefix="convergent-demo-") as data_dir:
        settings = ServerSettings(host="127.0.0.1", port=0, data_dir=Path(data_dir))
        with ConvergentServer(settings) as server, Client(server.address) as client:
            print(f"embedded server on {server.address} (data in {data_dir}); {provenance}")
            rows = []
            for dataset in datasets:
                for model, vectors in dataset.vectors.items():
                    client.register_model(model, dim=vectors.shape[1], normalize=True)
                    started = time.perf_counter()
                    total = client.upload_anchors(
                        model, anchor_set=dataset.name, ids=dataset.ids, vectors=vectors, progress=True
                    )
                    rate = len(vectors) / (time.perf_counter() - started)
                    rows.append((dataset.name, model, vectors.shape[1], total, rate))
            first_model, first_vectors = next(iter(datasets[0].vectors.items()))
            again = client.upload_anchors(
                first_model, anchor_set=datasets[0].name, ids=datasets[0].ids, vectors=first_vectors
            )
            sets = client.list_anchor_sets()
    header = f"{'anchor set':<22} {'model':<12} {'dim':>5} {'stored':>7} {'vectors/s':>10}"
    table = [header, "-" * len(header)]
    table += [f"{s:<22} {m:<12} {d:>5} {n:>7} {r:>10.0f}" for s, m, d, n, r in rows]
    print("\n".join(table))
    print(f"re-upload of the same anchors is a no-op: {again} stored (unchanged)")
    for s in sets:
        shared = min(s.models.values()) if s.models else 0
        print(f"anchor set {s.name}: {len(s.models)} models, {shared} ids each, data version {s.data_version}")
    lines += ["```", *table, "```", "", f"Re-uploading the first model's anchors stored nothing new ({again} total)."]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    print(f"report: {report.resolve()}")
    return report

