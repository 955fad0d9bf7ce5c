"""Plots and tables of the demo report (matplotlib with the Agg backend; numpy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import numpy as np


def _pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cmc(ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """Cumulative match characteristic: fraction of probes whose true identity is within rank r,
    for r = 1..max_rank (higher is better). ``ranks`` (n,): 1-based, 0 or > max_rank = not found."""
    ranks = np.asarray(ranks)
    found = (ranks >= 1) & (ranks <= max_rank)
    return np.array([np.mean(found & (ranks <= r)) for r in range(1, max_rank + 1)])


def plot_cmc(curves: Mapping[str, np.ndarray], path: Path, title: str, highlight: str | None = None,
             legend_title: str = "method") -> Path:
    """CMC curves; legend entries "label: rank-1 r". ``highlight``: the one curve drawn on top,
    thick and in black (e.g. what ``auto`` chose, which may coincide with another method)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curve in curves.items():
        style = "--" if label.startswith("unmapped") else "-"
        chosen = label == highlight
        ax.plot(np.arange(1, len(curve) + 1), curve, style, marker="o", markersize=5 if chosen else 3,
                lw=3.5 if chosen else 1.2, color="black" if chosen else None, zorder=3 if chosen else 2, alpha=0.8 if chosen else 1,
                label=f"{label}: rank-1 {curve[0]:.2f}")
    ax.set(xlabel="rank", ylabel="identification rate (CMC)", title=title, ylim=(0, 1.02))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", title=legend_title, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def det_curve(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, FRR) at every distinct score as threshold (accept iff score >= threshold)."""
    gen, imp = np.sort(genuine), np.sort(impostor)
    t = np.unique(np.concatenate([gen, imp]))
    far = 1.0 - np.searchsorted(imp, t, side="left") / imp.size
    frr = np.searchsorted(gen, t, side="left") / gen.size
    return far, frr


def plot_det(curve: tuple[np.ndarray, np.ndarray], points: Mapping[str, tuple[float, float]], path: Path, title: str) -> Path:
    """DET plot: false-reject rate against false-accept rate (log axis), lower-left is better;
    ``points``: label -> (measured FAR, measured FRR) of an operating point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    far, frr = curve
    keep = far > 0
    ax.plot(far[keep], frr[keep], "-", color="0.3", label="all thresholds")
    for (label, (x, y)), marker in zip(points.items(), "os^D"):
        ax.plot(max(x, 1e-5), y, marker, markersize=8, label=f"{label}: FAR {x:.4f}, TAR {1 - y:.3f}")
    ax.set(xscale="log", xlabel="false-accept rate (impostor pairs accepted)", ylabel="false-reject rate (1 - TAR)",
           title=title, ylim=(0, 1.02), xlim=(1e-5, 1))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper right", title="operating points at requested FAR 1e-2", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_anchor_curve(counts: Sequence[int], series: Mapping[str, Sequence[float]], dim: int, path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axvspan(0.5 * dim, 2 * dim, color="orange", alpha=0.15, label=f"n close to d = {dim} (warned)")
    ax.axvline(dim, color="orange", lw=1)
    for label, values in series.items():
        ax.plot(counts, values, marker="o", label=label)
    ax.set(xlabel="anchors (pairs both models embedded)", ylabel="top-1 retrieval on unseen items",
           title=title, ylim=(0, 1.02), xlim=(0, max(counts) * 1.05))
    ax.set_xticks(list(counts))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_histogram(values: Mapping[str, np.ndarray], path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bins = np.linspace(min(0.0, *(np.nanmin(v) for v in values.values())), 1.0, 26)
    for label, v in values.items():
        v = np.asarray(v)[np.isfinite(v)]
        ax.hist(v, bins=bins, histtype="step", lw=2, label=f"{label} (mean {v.mean():.3f})")
    ax.set(xlabel="correlation of a unit with its matched unit", ylabel="units", title=title)
    ax.legend(fontsize=8, title="outlines, one per matching", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    table = [list(map(str, header))] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_atlas(models: Sequence[str], top1: Mapping[tuple[str, str], float], path: Path | IO[bytes], title: str,
               marks: Mapping[tuple[str, str], str] | None = None, fmt: str | None = None) -> Path | IO[bytes]:
    """Heatmap of held-out top-1 (row: source, column: target; NaN: no current fit, grey) with the
    value in each cell and an optional mark (e.g. "stale"); PNG or SVG by ``path``'s suffix (or ``fmt``)."""
    plt = _pyplot()
    m = len(models)
    grid = np.full((m, m), np.nan)
    for i, s in enumerate(models):
        for j, t in enumerate(models):
            if s != t:
                grid[i, j] = top1.get((s, t), np.nan)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * m, 0.9 + 0.8 * m))
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#dddddd")
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0.0, vmax=1.0, cmap=cmap)
    for i, s in enumerate(models):
        for j, t in enumerate(models):
            if s == t:
                continue
            value = grid[i, j]
            label = "—" if not np.isfinite(value) else f"{value:.2f}"
            mark = (marks or {}).get((s, t))
            ax.text(j, i, label + (f"\n{mark}" if mark else ""), ha="center", va="center", fontsize=8,
                    color="white" if np.isfinite(value) and value < 0.6 else "black")
    ax.set_xticks(range(m), models, rotation=45, ha="right")
    ax.set_yticks(range(m), models)
    ax.set_xlabel("target (gallery model)")
    ax.set_ylabel("source (probe model)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="held-out top-1 (higher is better)")
    fig.tight_layout()
    fig.savefig(path, format=fmt)
    plt.close(fig)
    return path


def plot_operating_points(points: Sequence[tuple[float, float]], eer: float, out: IO[bytes], title: str,
                          fmt: str = "svg") -> IO[bytes]:
    """DET view of a verification calibration's operating points: false-reject rate (1 - TAR)
    against the achieved false-accept rate (log axis; lower-left is better), with the EER point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    far = [max(p[0], 1e-6) for p in points]
    frr = [1.0 - p[1] for p in points]
    ax.plot(far, frr, "o-", color="#2b6cb0", label="operating points (achieved FAR, 1 - TAR)")
    if np.isfinite(eer):
        ax.plot([eer], [eer], "s", color="#c05621", label=f"EER {eer:.3f}")
    ax.set(xscale="log", xlabel="false-accept rate", ylabel="false-reject rate (1 - TAR)", title=title,
           ylim=(0, 1.02), xlim=(1e-5, 1))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(out, format=fmt)
    plt.close(fig)
    return out
