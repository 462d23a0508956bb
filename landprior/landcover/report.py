"""The run report: a Table-1-shaped table, per-class IoU, pseudo-label quality and figures.

Figures (matplotlib, Agg backend):

* :func:`chip_figure` - per target city, a few chips: image, weak-label argmax, colour
  clusters, pseudo-label, predictions of the source model and of ours, truth;
* :func:`tile_figure` - a whole test tile: image, truth and the predicted maps.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from landprior.fileio import write_text_atomic
from landprior.landcover.chips import ChipSet
from landprior.landcover.classes import CLASS_COLORS, CLASS_NAMES, IGNORE_INDEX, remap
from landprior.landcover.evaluate import read_metrics_csv, table1_markdown

log = logging.getLogger(__name__)

_PALETTE = np.zeros((256, 3), dtype=np.float32)
_PALETTE[: len(CLASS_COLORS)] = np.asarray(CLASS_COLORS, dtype=np.float32) / 255
_PALETTE[IGNORE_INDEX] = (0.0, 0.0, 0.0)
_CLUSTER_PALETTE = np.array(
    [(0.89, 0.1, 0.11), (0.22, 0.49, 0.72), (0.3, 0.69, 0.29), (0.6, 0.31, 0.64),
     (1.0, 0.5, 0.0), (1.0, 1.0, 0.2), (0.65, 0.34, 0.16), (0.97, 0.51, 0.75)],
    dtype=np.float32,
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def paint(labels: np.ndarray) -> np.ndarray:
    """Class indices (h, w) -> RGB (h, w, 3) in the class colours (ignore = black)."""
    return _PALETTE[np.asarray(labels, dtype=np.uint8)]


def _rgb(image: np.ndarray) -> np.ndarray:
    """(4, h, w) in [0, 1] -> (h, w, 3) RGB with a 2-98 % stretch for display."""
    rgb = np.moveaxis(np.asarray(image[:3], dtype=np.float32), 0, -1)
    lo, hi = np.percentile(rgb, 2), np.percentile(rgb, 98)
    return np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)


def _legend(fig) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=_PALETTE[i], label=n) for i, n in enumerate(CLASS_NAMES)]
    fig.legend(handles=handles, loc="lower center", ncol=len(CLASS_NAMES), frameon=False)


def _save(fig, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=90, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _chip_prediction(path: Path, row: int, col: int, size: int, factor: int) -> np.ndarray:
    with rasterio.open(path) as src:
        full = src.read(1, window=Window(col, row, size, size))
    return full[factor // 2 :: factor, factor // 2 :: factor]


def chip_figure(
    chips_path: str | os.PathLike[str],
    predictions: Mapping[str, str | os.PathLike[str]],
    out_png: str | os.PathLike[str],
    *,
    n: int = 4,
    chip_size: int = 128,
) -> Path:
    """Rows of chips: image, weak labels, clusters, pseudo-label, each prediction, truth.

    ``predictions`` maps a method name to its folder of ``{tile}_landcover.tif``.
    """
    plt = _pyplot()
    cs = ChipSet.load(chips_path)
    if cs.pseudo is None:
        raise ValueError(f"{chips_path} holds no pseudo-labels")
    n = min(n, len(cs))
    cols = ["image", "weak labels", "colour clusters", "pseudo-label", *predictions]
    if cs.truth is not None:
        cols.append("truth")
    fig, axes = plt.subplots(n, len(cols), figsize=(2.1 * len(cols), 2.1 * n + 0.5),
                             squeeze=False)
    for i in range(n):
        row, col = (int(v) for v in cs.offsets[i])
        panels = [_rgb(cs.image[i]), paint(cs.weak[i].argmax(0))]
        clusters = cs.clusters[i].argmax(0) if cs.clusters is not None else np.zeros((1, 1))
        panels.append(_CLUSTER_PALETTE[clusters % len(_CLUSTER_PALETTE)])
        panels.append(paint(cs.pseudo[i]))
        for folder in predictions.values():
            path = Path(folder) / f"{cs.tile_ids[i]}_landcover.tif"
            panels.append(paint(_chip_prediction(path, row, col, chip_size, cs.factor)))
        if cs.truth is not None:
            panels.append(paint(cs.truth[i]))
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
    fig.suptitle(cs.city, fontsize=11)
    _legend(fig)
    try:
        return _save(fig, out_png)
    finally:
        plt.close(fig)


def tile_figure(
    image: np.ndarray,
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    out_png: str | os.PathLike[str],
    *,
    title: str = "",
) -> Path:
    """A whole tile side by side: image, each predicted map, truth."""
    plt = _pyplot()
    panels = [("image", _rgb(image)), *((k, paint(v)) for k, v in predictions.items()),
              ("truth", paint(truth))]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 4.2), squeeze=False)
    for ax, (name, panel) in zip(axes[0], panels, strict=True):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    _legend(fig)
    try:
        return _save(fig, out_png)
    finally:
        plt.close(fig)


def write_report(
    metrics_csv: str | os.PathLike[str],
    out_md: str | os.PathLike[str],
    *,
    methods: Sequence[str],
    cities: Sequence[str],
    pseudo_summaries: Sequence[str | os.PathLike[str]] = (),
    figures: Sequence[str | os.PathLike[str]] = (),
    extra: str = "",
) -> Path:
    """results/report.md: the tables, pseudo-label quality and figure links."""
    out_md = Path(out_md)
    rows = read_metrics_csv(metrics_csv)
    lines = [
        "# landprior run report",
        "",
        "Accuracy / class-mean IoU (%) on each target city's test tiles, pooled over tiles.",
        "",
        table1_markdown(rows, methods, cities),
        "## IoU per class (%)",
        "",
        "| method | city | " + " | ".join(CLASS_NAMES) + " |",
        "|---|---|" + "---|" * len(CLASS_NAMES),
    ]
    for r in rows:
        ious = " | ".join(str(r[f"iou_{c}"]) or "-" for c in CLASS_NAMES)
        lines.append(f"| {r['method']} | {r['city']} | {ious} |")
    if pseudo_summaries:
        lines += [
            "",
            "## Pseudo-labels on the sampled chips (agreement with the truth, %)",
            "",
            "| city | chips | weak-label argmax | pseudo-labels | chips / s |",
            "|---|---|---|---|---|",
        ]
        for path in pseudo_summaries:
            s = json.loads(Path(path).read_text(encoding="utf-8"))
            lines.append(
                f"| {s['city']} | {s['chips']} | {s.get('weak_label_accuracy', '-')} | "
                f"{s.get('pseudo_label_accuracy', '-')} | {s.get('chips_per_second', '-')} |"
            )
    if figures:
        lines += ["", "## Figures", ""]
        for fig in figures:
            rel = os.path.relpath(fig, out_md.parent)
            lines.append(f"![{Path(fig).stem}]({rel})")
            lines.append("")
    if extra:
        lines += ["", extra]
    return write_text_atomic("\n".join(lines) + "\n", out_md)


def tile_figure_for(
    root: str | os.PathLike[str],
    city: str,
    split: str,
    predictions: Mapping[str, str | os.PathLike[str]],
    out_png: str | os.PathLike[str],
    *,
    mapping: str = "prior",
    tile_index: int = 0,
) -> Path:
    """:func:`tile_figure` for one test tile of ``city`` read from the dataset and folders."""
    from landprior.landcover.enviroatlas import EnviroAtlas

    ds = EnviroAtlas(root)
    tiles = ds.tiles(city, split)
    if not tiles:
        raise ValueError(f"city {city!r} has no {split!r} tiles under {root}")
    tile = tiles[min(tile_index, len(tiles) - 1)]
    ds.grid(tile, ["naip", "lc"])  # headers and a shared grid, checked before drawing
    image = _read_for_figure(tile.paths[ds.layout.layer("naip").name]).astype(np.float32) / 255
    raw_labels = _read_for_figure(tile.paths[ds.layout.layer("lc").name])[0]
    truth = remap(raw_labels, mapping)  # type: ignore[arg-type]
    maps = {
        name: _read_for_figure(Path(folder) / f"{tile.tile_id}_landcover.tif")[0]
        for name, folder in predictions.items()
    }
    return tile_figure(image, truth, maps, out_png, title=f"{city} / {tile.tile_id}")


FIGURE_MAX_SIDE = 1024
"""Tiles are read decimated to at most this many pixels a side for figures (a 1 m
quarter-quad is ~7000 px; the panels are a few inches wide)."""


def _read_for_figure(path: str | os.PathLike[str], max_side: int = FIGURE_MAX_SIDE) -> np.ndarray:
    """All bands of ``path`` as (bands, h, w), decimated (nearest) to ``max_side`` at most."""
    with rasterio.open(path) as src:
        step = max(1, -(-max(src.height, src.width) // max_side))
        shape = (src.count, max(1, src.height // step), max(1, src.width // step))
        return src.read(out_shape=shape)
