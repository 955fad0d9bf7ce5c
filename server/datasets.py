"""Data sets for the demo, tests and benchmarks (numpy only).

* Real: ``shared/realdata`` beside the repository (see its README for terms). Faces: AT&T
  photos embedded by dlib (128), FaceNet (128) and MobileFace (256); text: WordNet glosses
  embedded by MiniLM-L6 (384) and mpnet (768). Never copy these into the repository.
* Synthetic: shared latent identities seen through different random nonlinear encoders,
  so the ground truth (which rows belong together) is known.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REALDATA_ENV = "CONVERGENT_REALDATA"


def find_realdata(explicit: Path | str | None = None) -> Path | None:
    """The real-data folder: ``explicit``, else $CONVERGENT_REALDATA, else ``shared/realdata``
    beside the repository checkout or beside the working directory; None if none exists."""
    candidates: list[Path] = []
    if explicit is not None:
        return Path(explicit) if (Path(explicit) / "face_embeddings.npz").exists() else None
    if os.environ.get(REALDATA_ENV):
        candidates.append(Path(os.environ[REALDATA_ENV]))
    repo_root = Path(__file__).resolve().parents[1]  # server/datasets.py -> repo root
    candidates += [repo_root.parent / "shared" / "realdata", Path.cwd().parent / "shared" / "realdata"]
    for candidate in candidates:
        if (candidate / "face_embeddings.npz").exists():
            return candidate
    return None


@dataclass
class EmbeddingSet:
    """Several models' embeddings of the same items: ``vectors[model]`` is (n, d_model), row i
    of every model is item ``ids[i]``; ``labels`` (n,) groups items (e.g. person), if known."""

    name: str
    ids: list[str]
    vectors: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)


def load_faces(folder: Path) -> EmbeddingSet:
    """AT&T faces (400 photos of 40 people) embedded by dlib, FaceNet and MobileFace."""
    with np.load(folder / "face_embeddings.npz") as data:
        vectors = {m: data[m].astype(np.float32) for m in ("dlib", "facenet", "mobileface")}
        labels = data["labels"].astype(np.int64)
    ids = [f"att-{i:03d}" for i in range(len(labels))]
    return EmbeddingSet("att-faces", ids, vectors, labels, source=str(folder / "face_embeddings.npz"))


LFW_FILE = "lfw_embeddings.npz"


def load_lfw(folder: Path) -> EmbeddingSet | None:
    """LFW (13,233 photos of 5,749 people) embedded by dlib and FaceNet, ``labels`` the person
    index; None when this real-data folder has no LFW file. ``notes`` stays empty."""
    if not (folder / LFW_FILE).exists():
        return None
    with np.load(folder / LFW_FILE) as data:
        vectors = {m: data[m].astype(np.float32) for m in ("dlib", "facenet")}
        _, labels = np.unique(data["person"], return_inverse=True)
    ids = [f"lfw-{i:05d}" for i in range(len(labels))]
    return EmbeddingSet("lfw", ids, vectors, labels.astype(np.int64), source=str(folder / LFW_FILE))


def people_split(labels: np.ndarray, seed: int, max_gallery: int | None = None) -> dict[str, np.ndarray]:
    """Rows of a seeded split of people in halves: ``anchors`` every photo of half A, ``gallery``
    one random photo of each person of half B (the first ``max_gallery`` of them), ``probes``
    their other photos, ``half_b`` the people of the gallery in gallery order."""
    rng = np.random.default_rng(seed)
    people = np.unique(labels)
    order = rng.permutation(len(people))
    half_a, half_b = people[order[: len(people) // 2]], people[order[len(people) // 2:]]
    if max_gallery is not None:
        half_b = half_b[:max_gallery]
    by_label = np.argsort(labels, kind="stable")  # each person's rows in row order, one sort for all
    starts = np.searchsorted(labels[by_label], half_b)
    ends = np.searchsorted(labels[by_label], half_b, side="right")
    gallery, probes = [], []
    for start, end in zip(starts, ends):
        photos = rng.permutation(by_label[start:end])
        gallery.append(photos[0])
        probes.extend(photos[1:].tolist())
    return {"anchors": np.flatnonzero(np.isin(labels, half_a)), "gallery": np.array(gallery),
            "probes": np.array(probes, dtype=np.int64), "half_b": half_b}


def load_text(folder: Path, n: int | None = None) -> EmbeddingSet:
    """WordNet noun glosses embedded by MiniLM-L6 (384) and mpnet (768); first ``n`` rows."""
    with np.load(folder / "text" / "text_embeddings_2500.npz") as data:
        rows = slice(0, n)
        vectors = {m: data[m][rows].astype(np.float32) for m in ("minilm_l6", "mpnet")}
        ids = [str(i) for i in data["ids"][rows]]
    return EmbeddingSet("wordnet-glosses", ids, vectors, source=str(folder / "text"))


def synthetic_identities(
    n_people: int = 40,
    photos_per_person: int = 10,
    dims: dict[str, int] | None = None,
    latent_dim: int = 24,
    noise: float = 0.35,
    seed: int = 0,
) -> EmbeddingSet:
    """People as latent vectors; each photo = person + noise; each model embeds a photo with
    its own random two-layer tanh network. Rows of different models are the same photo."""
    dims = dims or {"model-a": 64, "model-b": 96}
    rng = np.random.default_rng(seed)
    people = rng.standard_normal((n_people, latent_dim))
    labels = np.repeat(np.arange(n_people), photos_per_person)
    photos = people[labels] + noise * rng.standard_normal((len(labels), latent_dim))
    vectors = {}
    for name, dim in dims.items():
        hidden = np.tanh(photos @ rng.standard_normal((latent_dim, 2 * dim)) / np.sqrt(latent_dim))
        vectors[name] = (hidden @ rng.standard_normal((2 * dim, dim)) / np.sqrt(2 * dim)).astype(np.float32)
    ids = [f"syn-{i:04d}" for i in range(len(labels))]
    return EmbeddingSet("synthetic-identities", ids, vectors, labels, source=f"generated, seed {seed}")


def graded_weak_parties(faces: EmbeddingSet, pixels: np.ndarray, anchors: np.ndarray, gallery_model: str,
                        seed: int = 0, strong: tuple[str, ...] = ("dlib", "facenet"),
                        snrs: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1)) -> dict[str, np.ndarray]:
    """Weak parties for fusion tests, name -> (n, d) embeddings of every item, built from the
    ``anchors``' statistics only: each ``strong`` model plus Gaussian noise at per-dimension
    SNR (signal variance / noise variance over the anchors) ``snrs``; its top 4 and 8 principal
    components; raw ``pixels`` (n, p) as PCA-48; the gallery model's own top 3 components (maps
    onto the gallery well, tells people apart poorly). Seeded by ``seed``."""
    rng = np.random.default_rng(seed)

    def pca(X: np.ndarray, k: int) -> np.ndarray:
        mean = X[anchors].mean(0)
        components = np.linalg.svd(X[anchors] - mean, full_matrices=False)[2][:k]
        return ((X - mean) @ components.T).astype(np.float32)

    out: dict[str, np.ndarray] = {}
    for model in strong:
        X = faces.vectors[model].astype(np.float64)
        variance = X[anchors].var(0)
        for snr in snrs:
            noise = rng.standard_normal(X.shape) * np.sqrt(variance / snr)
            out[f"{model}-noise-snr{snr:g}"] = (X + noise).astype(np.float32)
        for k in (4, 8):
            out[f"{model}-pca{k}"] = pca(X, k)
    out["pixels"] = pca(pixels, 48)
    out[f"{gallery_model}-pca3"] = pca(faces.vectors[gallery_model].astype(np.float64), 3)
    return out


def write_tour_files(folder: Path, realdata: Path | None = None, synthetic: bool = False) -> str:
    """The README tour's files in ``folder``; returns where the vectors came from, in words.

    anchors.npz: ``dlib`` and ``facenet`` (200, 128) embeddings of the same photos of people
    0-19, ``ids`` (the photos); gallery.npz: ``facenet`` (20, 128), one photo of each of people
    20-39, ``ids`` = "person20".."person39"; probes.npz: ``dlib`` (180, 128), their other
    photos, ``ids`` and ``person`` (the true gallery id of each probe, to check answers).
    Real AT&T faces when ``shared/realdata`` is found (and not ``synthetic``), else synthetic
    identities seen through two random encoders of the same dimensions.

    The same arrays also go out without zip or .npy, for clients in any language
    (``examples/node``): ``tour.json`` holds every string array (ids, person) as a JSON list
    and names, for every vector array, a raw little-endian row-major float32 file beside it
    (``anchors.dlib.f32``, ...) with its shape; the float32 values are those the SDK sends.
    """
    import json

    source = None if synthetic else find_realdata(realdata)
    if source is not None:
        faces = load_faces(source)
        provenance = f"real AT&T face embeddings from {source}"
    else:
        faces = synthetic_identities(dims={"dlib": 128, "facenet": 128}, noise=0.6, seed=0)
        provenance = "SYNTHETIC identities (no shared/realdata found): random encoders named dlib and facenet"
    labels, ids = faces.labels, np.array(faces.ids)
    anchors = np.flatnonzero(labels < 20)
    unseen = np.flatnonzero(labels >= 20)
    gallery = np.array([unseen[labels[unseen] == p][0] for p in range(20, 40)])
    probes = np.setdiff1d(unseen, gallery)
    files = {
        "anchors": {"dlib": faces.vectors["dlib"][anchors], "facenet": faces.vectors["facenet"][anchors], "ids": ids[anchors]},
        "gallery": {"facenet": faces.vectors["facenet"][gallery], "ids": np.array([f"person{labels[i]}" for i in gallery])},
        "probes": {"dlib": faces.vectors["dlib"][probes], "ids": ids[probes],
                   "person": np.array([f"person{labels[i]}" for i in probes])},
    }
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, object] = {"provenance": provenance, "float_files": "raw float32, little-endian, row-major"}
    for name, arrays in files.items():
        np.savez(folder / f"{name}.npz", **arrays)
        plain: dict[str, object] = {}
        for key, array in arrays.items():
            if array.dtype.kind in "US":
                plain[key] = [str(value) for value in array]
            else:
                values = np.ascontiguousarray(array, dtype="<f4")
                values.tofile(folder / f"{name}.{key}.f32")
                plain[key] = {"file": f"{name}.{key}.f32", "shape": list(values.shape), "dtype": "float32"}
        manifest[name] = plain
    (folder / "tour.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return provenance
