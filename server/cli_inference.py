"""Commands for galleries and cross-model inference: enroll, identify, verify, calibrate, erase, usage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from convergent.server.cli_base import (
    DEFAULT_ADDRESS,
    Address,
    ApiKey,
    _connected,
    _fail,
    app,
    galleries_app,
    _load_npz,
    _read_arrays,
)


@galleries_app.command("list")
def galleries_list(address: Address = DEFAULT_ADDRESS, api_key: ApiKey = None) -> None:
    """List galleries with their model, index and size."""
    with _connected(address, api_key) as client:
        galleries = client.list_galleries()
    typer.echo(f"{'name':<32} {'model':<24} {'version':>7} {'index':<6} {'size':>9}")
    for g in galleries:
        typer.echo(f"{g.name:<32} {g.model:<24} {g.model_version:>7} {g.index:<6} {g.size:>9}")


@galleries_app.command("show")
def galleries_show(name: str, address: Address = DEFAULT_ADDRESS, api_key: ApiKey = None) -> None:
    """Show one gallery."""
    with _connected(address, api_key) as client:
        g = client.get_gallery(name)
    typer.echo(f"gallery {g.name}: model {g.model} v{g.model_version}, index {g.index}, {g.size} items")


@galleries_app.command("delete")
def galleries_delete(name: str, address: Address = DEFAULT_ADDRESS, api_key: ApiKey = None) -> None:
    """Delete a gallery and every item in it (admin)."""
    with _connected(address, api_key) as client:
        client.delete_gallery(name)
    typer.echo(f"deleted gallery {name}")


@galleries_app.command("remove")
def galleries_remove(
    name: str,
    ids: Annotated[list[str], typer.Option("--id", help="id to remove (repeatable)")],
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Remove items from a gallery by id (erasure requests)."""
    with _connected(address, api_key) as client:
        removed = client.remove(name, ids)
    typer.echo(f"removed {removed} of {len(ids)} ids from {name}")


@app.command()
def erase(
    ids: Annotated[list[str], typer.Argument(help="subject ids to erase from every anchor set and gallery")],
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Erase subjects everywhere in the tenant (admin); fits on changed anchor sets become stale."""
    with _connected(address, api_key) as client:
        report = client.erase(ids)
    typer.echo(f"erased {report.anchors_deleted} anchors and {report.gallery_items_deleted} gallery items; "
               f"anchor sets changed {report.anchor_sets_changed or '[]'}, galleries changed {report.galleries_changed or '[]'}, "
               f"stale fits {report.stale_fits or '[]'}")


@app.command()
def usage(address: Address = DEFAULT_ADDRESS, api_key: ApiKey = None) -> None:
    """The caller's tenant, its stored vectors against the quota, and the key's role."""
    with _connected(address, api_key) as client:
        u = client.usage()
    quota = f"of {u.max_vectors}" if u.max_vectors else "(no quota)"
    typer.echo(f"tenant {u.tenant}: {u.stored_vectors} vectors stored {quota}; key {u.key_id or '-'} role {u.role}")



@app.command()
def enroll(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz with the vectors and ids")],
    gallery: Annotated[str, typer.Option(help="gallery to enroll into (created on first enroll)")],
    model: Annotated[str, typer.Option(help="model the vectors come from")],
    index: Annotated[str, typer.Option(help="exact or hnsw (used when the gallery is created)")] = "exact",
    key: Annotated[Optional[str], typer.Option(help="array in the .npz (default: the model name, else the only 2-D array)")] = None,
    ids_key: Annotated[str, typer.Option(help="array of ids")] = "ids",
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Enroll vectors into a gallery, with a progress bar."""
    vectors, ids = _load_npz(file, key, model, ids_key, need_ids=True)
    with _connected(address, api_key) as client:
        size = client.enroll(gallery=gallery, model=model, ids=ids, vectors=vectors, index=index, progress=True)
    typer.echo(f"enrolled {len(ids)} vectors of {model} into {gallery}; gallery size {size}")


@app.command()
def identify(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz with the probe vectors")],
    gallery: Annotated[str, typer.Option(help="gallery to search")],
    model: Annotated[str, typer.Option(help="model the probes come from")],
    k: Annotated[int, typer.Option(help="candidates per probe")] = 5,
    key: Annotated[Optional[str], typer.Option(help="array in the .npz")] = None,
    out: Annotated[Optional[Path], typer.Option(help=".npz to write ids (n, k) and scores (n, k)")] = None,
    scoring: Annotated[str, typer.Option(help="auto (csls through a map, else cosine), cosine, or csls (hubness-corrected)")] = "auto",
    direction: Annotated[str, typer.Option(
        help="auto (both when a fit back from the gallery's model exists, on a local exact gallery, and held-out "
             "anchors retrieve at least as well that way), forward "
             "(scores in the gallery's space) or both (mean of both models' spaces)")] = "auto",
    fpir: Annotated[Optional[float], typer.Option(
        help="open-set: also test each top-1 against a threshold for this false-positive identification rate "
             "(calibrated without labels on the route's anchors)")] = None,
    non_mated: Annotated[Optional[Path], typer.Option(
        exists=True, dir_okay=False,
        help="with --fpir: .npz of probes of people who are NOT enrolled (the model's array, or the only one); "
             "the threshold is set on them instead of the anchors")] = None,
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Identify probes of one model against a gallery (of any model with a route to it)."""
    import numpy as np

    vectors, probe_ids = _load_npz(file, key, model, "ids")
    if non_mated is not None and fpir is None:
        _fail("--non-mated calibrates an open-set threshold: give --fpir too")
    calibration = _load_npz(non_mated, None, model, None)[0] if non_mated is not None else None
    with _connected(address, api_key) as client:
        result = client.identify(gallery=gallery, vectors=vectors, model=model, k=k, scoring=scoring,
                                 direction=direction, fpir=fpir, non_mated=calibration)
    space = "both models' spaces" if result.direction == "both" else "the gallery's space"
    typer.echo(f"route: {result.route}; scores in {space} ({result.direction_reason}); "
               f"top-1 of the first probes ({result.scoring}, higher = more similar):")
    open_set = result.accepted is not None
    if open_set:
        typer.echo(f"open-set: threshold {result.threshold:.3f} for FPIR {result.fpir_requested:g} "
                   f"({result.calibration}; FPIR {result.fpir_calibration:.4f} on {result.n_calibration_searches} "
                   f"non-mated searches: {result.calibration_searches}); "
                   f"{int(np.sum(result.accepted))} of {len(result.accepted)} probes pass")
    for i, (row, scores) in enumerate(zip(result.ids[:10], result.scores[:10])):
        name = probe_ids[i] if probe_ids else str(i)
        verdict = (" pass" if result.accepted[i] else " below threshold") if open_set else ""
        typer.echo(f"  {name}: {row[0] if row else '-'} ({scores[0]:.3f}){verdict}" if row else f"  {name}: -")
    if out is not None:
        extra = {"accepted": result.accepted} if open_set else {}
        np.savez(out, ids=np.array(result.ids, dtype=str), scores=result.scores, **extra)
        typer.echo(f"wrote ids and scores {result.scores.shape} to {out}")


Direction = Annotated[str, typer.Option(
    help="auto (both when a fit b -> a on the same anchor set exists, else a_to_b), a_to_b (cosine in b's space), "
         "or both (mean of the cosines in b's and a's spaces)")]


def _direction_words(direction: str, a_model: str, b_model: str) -> str:
    if direction == "both":
        return f"mean of the cosines in {b_model}'s and in {a_model}'s space"
    return f"cosine in {b_model}'s space"


@app.command()
def verify(
    a_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz with the a vectors")],
    b_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz with the b vectors (row-paired)")],
    a_model: Annotated[str, typer.Option(help="model of the a vectors")],
    b_model: Annotated[str, typer.Option(help="model of the b vectors")],
    far: Annotated[float, typer.Option(help="false-accept rate the threshold is calibrated for")] = 1e-3,
    out: Annotated[Optional[Path], typer.Option(help=".npz to write scores and accept")] = None,
    direction: Direction = "auto",
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Verify row-paired vectors of two models at a calibrated threshold."""
    import numpy as np

    a, _ = _load_npz(a_file, None, a_model, "ids")
    b, _ = _load_npz(b_file, None, b_model, "ids")
    with _connected(address, api_key) as client:
        result = client.verify(a=a, a_model=a_model, b=b, b_model=b_model, far=far, direction=direction)
    typer.echo(f"threshold {result.threshold:.4f} for FAR {far:g}, route {result.route}, calibration {result.calibration}:")
    typer.echo(f"  scores: {_direction_words(result.direction, a_model, b_model)} ({result.direction_reason})")
    typer.echo(f"  measured on {result.calibration_pairs}")
    typer.echo(f"  there: FAR {result.far_calibration:.2g} on {result.n_impostor} impostor pairs, "
               f"TAR {result.tar_calibration:.3f} on {result.n_genuine} genuine pairs")
    typer.echo(f"accepted {int(result.accept.sum())} of {len(result.accept)} pairs")
    if out is not None:
        np.savez(out, scores=result.scores, accept=result.accept)


@app.command()
def calibrate(
    a_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz with the a vectors")],
    b_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz with the b vectors (row-paired)")],
    a_model: Annotated[str, typer.Option(help="model of the a vectors")],
    b_model: Annotated[str, typer.Option(help="model of the b vectors")],
    same_key: Annotated[str, typer.Option(help="bool array (in the a or b file): row i shows one subject in a and b")] = "same",
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Store labelled pairs for a model pair: verify then calibrates on them instead of the anchors."""

    a, _ = _load_npz(a_file, None, a_model, "ids")
    b, _ = _load_npz(b_file, None, b_model, "ids")
    same = None
    for file in (a_file, b_file):
        arrays = _read_arrays(file)
        if same_key in arrays:
            same = arrays[same_key]
            break
    if same is None:
        _fail(ValueError(f"neither {a_file} nor {b_file} has a {same_key!r} array: name it with --same-key"))
    if same.dtype != bool:
        _fail(ValueError(f"{same_key!r} must be a bool array (True = same subject), got dtype {same.dtype}"))
    with _connected(address, api_key) as client:
        used = client.calibrate(a=a, a_model=a_model, b=b, b_model=b_model, same=same)
    typer.echo(f"stored {used['genuine']} genuine and {used['impostor']} impostor labelled pairs for {a_model} -> {b_model}; "
               f"verify now calibrates on them")


@app.command("verification-report")
def verification_report(
    a_model: Annotated[str, typer.Option(help="model of the a (probe) side")],
    b_model: Annotated[str, typer.Option(help="model of the b (reference) side")],
    direction: Direction = "auto",
    address: Address = DEFAULT_ADDRESS,
    api_key: ApiKey = None,
) -> None:
    """Operating points of the calibration verify uses: TAR at FAR 1e-2 / 1e-3 / 1e-4 and the EER."""
    with _connected(address, api_key) as client:
        report = client.verification_report(a_model=a_model, b_model=b_model, direction=direction)
    typer.echo(f"{a_model} vs {b_model}, route {report.route}, calibration {report.calibration}:")
    typer.echo(f"  scores: {_direction_words(report.direction, a_model, b_model)} ({report.direction_reason})")
    typer.echo(f"  measured on {report.calibration_pairs}")
    typer.echo(f"  {report.n_genuine} genuine, {report.n_impostor} impostor pairs ({report.n_excluded} excluded)")
    for p in report.points:
        typer.echo(f"  FAR {p.requested_far:g}: threshold {p.threshold:.4f}, FAR {p.far:.2g}, TAR {p.tar:.3f}")
    if len(report.points) < 3:
        typer.echo(f"  (smaller FARs need at least 10/FAR impostor pairs; there are {report.n_impostor})")
    typer.echo(f"  EER {report.eer:.4f} at threshold {report.eer_threshold:.4f}")
