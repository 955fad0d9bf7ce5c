"""Quality of every alignment method on the real embeddings, through a real server.

Prints a markdown table: method x data set -> rank-1 (faces) / top-1 (text), with anchor
counts. Protocol as in tests/service/test_service_realdata.py. Usage:

    .venv/bin/python benchmarks/alignment_quality.py [--realdata PATH]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from convergent.client import Client
from convergent.server.datasets import find_realdata, load_faces, load_text
from convergent.server import logs
from convergent.server.rpc.app import ConvergentServer
from convergent.server.settings import ServerSettings

METHODS = ("auto", "ridge", "procrustes", "cca")


def unit(A: np.ndarray) -> np.ndarray:
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=None)
    args = parser.parse_args()
    folder = find_realdata(args.realdata)
    if folder is None:
        raise SystemExit("real data not found (see ../shared/realdata or --realdata)")
    logs.configure("WARNING")
    faces, text = load_faces(folder), load_text(folder)
    labels = faces.labels
    anchors = np.flatnonzero(labels < 20)
    unseen = np.flatnonzero(labels >= 20)
    gallery = np.array([unseen[labels[unseen] == p][0] for p in range(20, 40)])
    probes = np.setdiff1d(unseen, gallery)
    tasks = [
        ("faces dlib→FaceNet", "dlib", "facenet"),
        ("faces FaceNet→dlib", "facenet", "dlib"),
        ("faces MobileFace→FaceNet", "mobileface", "facenet"),
        ("text MiniLM→mpnet", "minilm_l6", "mpnet"),
    ]
    results: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        settings = ServerSettings(host="127.0.0.1", port=0, data_dir=Path(data_dir))
        with ConvergentServer(settings) as server, Client(server.address) as client:
            for name, vectors in faces.vectors.items():
                client.register_model(name, dim=vectors.shape[1])
                client.upload_anchors(name, anchor_set="att", ids=[faces.ids[i] for i in anchors], vectors=vectors[anchors])
            for name, vectors in text.vectors.items():
                client.register_model(name, dim=vectors.shape[1])
                client.upload_anchors(name, anchor_set="glosses", ids=text.ids[:400], vectors=vectors[:400])
            for task, source, target in tasks:
                is_text = task.startswith("text")
                anchor_set = "glosses" if is_text else "att"
                for method in ("none", *METHODS):
                    if is_text:
                        X, Y = text.vectors[source][1500:], text.vectors[target][1500:]
                    else:
                        X, Y = faces.vectors[source][probes], faces.vectors[target][gallery]
                    if method == "none":
                        if X.shape[1] != Y.shape[1]:
                            results[(task, method)] = "—"
                            continue
                        mapped, label = X, ""
                    else:
                        fit = client.fit_alignment(source, target, anchor_set=anchor_set, method=method)
                        mapped = client.transform(X, source=source, fit_id=fit.id)
                        label = f" ({fit.params.get('candidate', fit.method)})" if method == "auto" else ""
                    best = np.argmax(unit(mapped) @ unit(Y).T, axis=1)
                    hit = best == np.arange(len(Y)) if is_text else labels[gallery][best] == labels[probes]
                    results[(task, method)] = f"{hit.mean():.3f}{label}"
    print("| data set (anchors) | unmapped | " + " | ".join(METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for task, _, _ in tasks:
        count = "400 glosses" if task.startswith("text") else "200 photos, people 0–19"
        cells = " | ".join(results[(task, m)] for m in ("none", *METHODS))
        print(f"| {task} ({count}) | {cells} |")


if __name__ == "__main__":
    main()
