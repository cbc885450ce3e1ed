"""The report's static figures: matplotlib (Agg) drawn to PNG and embedded as base64 ``data:`` URIs.

Why matplotlib and not the dashboard's Plotly: a static Plotly image needs kaleido, which drives
its own Chrome (downloaded on first use, or a system browser process per export); matplotlib's
Agg renderer is plain C++ inside this process, works offline, and is already what
:mod:`fer_core.explain.colour` takes its colour maps from -- so a map in the report has exactly
the colours it has on the pages.

Figures are made with :class:`matplotlib.figure.Figure` directly, never ``pyplot``: no global
figure registry or backend switch, so building a report inside the dashboard's threads is safe.
Maps are coloured by :func:`fer_core.explain.colour.colorize` (the one colour mapping) and each
colour bar is drawn with the same colour map and limits.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Sequence

import numpy as np

__all__ = ["array_uri", "cmap_name", "confusion", "curves", "image_grid", "png_uri"]

DPI = 110
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22")
PNG_META = {"Software": None}  # no tool name/URL in the file's metadata


def cmap_name(signed: bool) -> str:
    """The colour map of a map kind (diverging for signed maps, as on the pages)."""
    return "RdBu_r" if signed else "inferno"


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=DPI, layout="constrained")


def png_uri(fig: Any) -> str:
    """A matplotlib figure as a ``data:image/png;base64,`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=PNG_META)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def array_uri(img: np.ndarray, zoom: int = 1) -> str:
    """A uint8 image (H×W grey or H×W×3 RGB) as a PNG data URI, upscaled by ``zoom`` (nearest)."""
    from PIL import Image

    from fer_core.gallery import upscale

    a = np.asarray(img)
    if a.ndim == 3:
        a = a.repeat(zoom, 0).repeat(zoom, 1) if zoom > 1 else a
    else:
        a = upscale(a, zoom)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def curves(series: Sequence[tuple[str, Any]]) -> str:
    """Loss and accuracy per epoch, one colour per run: validation solid, training dashed.

    ``series``: ``(run name, metrics DataFrame)``. Missing values (imported logs often lack a
    column for some epochs) are skipped point by point, so a curve joins the epochs it has.
    """
    fig = _figure(10.5, 3.6)
    axes = fig.subplots(1, 2)
    for n, (name, df) in enumerate(series):
        color = COLORS[n % len(COLORS)]
        x = np.asarray(df["epoch"], dtype=float)
        for ax, metric in zip(axes, ("loss", "acc")):
            for part, style in (("val", "-"), ("train", "--")):
                y = np.asarray(df[f"{part}_{metric}"], dtype=float)
                ok = np.isfinite(x) & np.isfinite(y)
                if ok.any():
                    ax.plot(x[ok], y[ok], style, color=color, marker="o" if ok.sum() < 30 else None,
                            markersize=3, linewidth=1.6, label=f"{name} ({part})")
    for ax, title in zip(axes, ("loss", "accuracy")):
        ax.set_title(f"{title} — solid: val, dashed: train", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].yaxis.set_major_formatter(_percent())
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8,
                   frameon=False)
    return png_uri(fig)


def _percent() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0, decimals=0)


def confusion(cm: np.ndarray, classes: Sequence[str], row_pct: np.ndarray) -> str:
    """Heatmap of the row-% (rows = true class), each cell annotated with its count and row-%."""
    k = len(classes)
    fig = _figure(1.0 + 0.82 * k, 0.6 + 0.7 * k)
    ax = fig.subplots()
    im = ax.imshow(row_pct, cmap="Blues", vmin=0, vmax=100)
    for i in range(k):
        for j in range(k):
            v = row_pct[i, j]
            ax.text(j, i, f"{int(cm[i, j])}\n{v:.0f}%", ha="center", va="center", fontsize=7.5,
                    color="white" if v > 55 else "#1d2330")
    ax.set_xticks(range(k), classes, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, shrink=0.8, label="% of the true class (row)")
    return png_uri(fig)


def image_grid(images: Sequence[np.ndarray | None], ncols: int, *, titles: Sequence[str] | None = None,
               row_labels: Sequence[str] | None = None, colorbar: tuple[float, float, str] | None = None,
               colorbar_label: str = "", cell: float = 1.05, title_size: float = 7.0) -> str:
    """A grid of small images (grey ``H×W`` uint8 / [0,1] floats, or RGB ``H×W×3`` uint8).

    ``None`` leaves a cell empty. ``colorbar=(vmin, vmax, cmap)`` adds ONE colour bar for the
    whole grid -- the images must then have been coloured with those limits and that map.
    """
    n = len(images)
    nrows = max(1, -(-n // ncols))
    extra = 0.9 if colorbar else 0.0
    label_w = 0.9 if row_labels else 0.0
    fig = _figure(label_w + ncols * cell + extra, nrows * (cell + (0.25 if titles else 0.05)) + 0.1)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).reshape(nrows, ncols)
    for idx in range(nrows * ncols):
        ax = axes.flat[idx]
        ax.set_xticks([])
        ax.set_yticks([])
        if idx >= n or images[idx] is None:
            ax.axis("off")
            continue
        img = np.asarray(images[idx])
        if img.ndim == 2:
            ax.imshow(img, cmap="gray", vmin=0, vmax=255 if img.dtype == np.uint8 else 1, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        if titles is not None and idx < len(titles) and titles[idx]:
            ax.set_title(titles[idx], fontsize=title_size, pad=2)
        for s in ax.spines.values():
            s.set_visible(False)
    if row_labels:
        for r, lab in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(lab, fontsize=8, rotation=0, ha="right", va="center", labelpad=6)
    if colorbar:
        import matplotlib
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        vmin, vmax, cmap = colorbar
        sm = ScalarMappable(norm=Normalize(vmin=vmin, vmax=vmax), cmap=matplotlib.colormaps[cmap])
        cb = fig.colorbar(sm, ax=list(axes.flat), shrink=0.85, fraction=0.06, pad=0.02)
        cb.ax.tick_params(labelsize=7)
        if colorbar_label:
            cb.set_label(colorbar_label, fontsize=8)
    return png_uri(fig)
