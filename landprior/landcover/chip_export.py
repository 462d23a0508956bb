"""Pseudo-labelled chips as georeferenced GeoTIFFs and a footprint index, for GIS review.

A chip set (:mod:`landprior.landcover.chips`) keeps every chip's geotransform and the
city's CRS. :func:`export_chip_set` writes, into one folder:

* ``{i:04d}_{tile}_{layer}.tif`` for each chip ``i`` and each requested layer -
  ``pseudo`` (the pseudo-labels of Algorithm 1), ``weak`` (the weak labels' argmax) and
  ``truth`` (where the city has labels) - as paletted class-map COGs
  (:func:`landprior.landcover.geotiff.write_class_map`) on the chip's own grid, so they
  overlay the city's tiles in QGIS;
* ``chips.gpkg``: one polygon per chip (its footprint, in the city's CRS) with the tile id,
  the 1 m pixel offset in the tile, the file names and, where the truth is present, the
  pseudo-label and weak-label accuracy of the chip - sort by it to find where the method
  fails.

The folder is written under a temporary name and renamed when complete, so an interrupted
export never looks finished.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine

from landprior.landcover.chips import ChipSet
from landprior.landcover.classes import IGNORE_INDEX
from landprior.landcover.geotiff import write_class_map

log = logging.getLogger(__name__)

CHIP_LAYERS: tuple[str, ...] = ("pseudo", "weak", "truth")
INDEX_NAME = "chips.gpkg"


@dataclass(frozen=True)
class ChipExport:
    """What :func:`export_chip_set` wrote."""

    out_dir: Path
    index: Path
    files: int
    layers: tuple[str, ...]


def _layer_maps(chips: ChipSet, layer: str) -> np.ndarray | None:
    if layer == "pseudo":
        return chips.pseudo
    if layer == "truth":
        return chips.truth
    if layer == "weak":
        return chips.weak.argmax(axis=1).astype(np.uint8)
    raise ValueError(f"unknown chip layer {layer!r}; expected one of {CHIP_LAYERS}")


def _chip_accuracy(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-chip accuracy in % over non-ignored pixels (NaN for an all-ignored chip)."""
    valid = truth != IGNORE_INDEX
    hits = ((pred == truth) & valid).sum(axis=(1, 2))
    counts = valid.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, 100.0 * hits / counts, np.nan)


def _footprints(chips: ChipSet) -> np.ndarray:
    """Each chip's bounding box in its CRS, from its geotransform (vectorised over chips)."""
    import shapely

    h, w = chips.image.shape[-2:]
    a, b, c, d, e, f = (chips.transforms[:, k] for k in range(6))
    xs = np.stack([c, c + a * w, c + b * h, c + a * w + b * h])  # the four corners
    ys = np.stack([f, f + d * w, f + e * h, f + d * w + e * h])
    return shapely.box(xs.min(0), ys.min(0), xs.max(0), ys.max(0))


def export_chip_set(
    chips: ChipSet,
    out_dir: str | os.PathLike[str],
    *,
    layers: tuple[str, ...] = CHIP_LAYERS,
    overwrite: bool = False,
) -> ChipExport:
    """Write the chips' class maps as GeoTIFFs plus a GeoPackage index of their footprints.

    ``layers`` absent from the chip set (no pseudo-labels yet, no truth in a target city
    without labels) are skipped with a log line; asking only for absent layers is an error.
    An existing ``out_dir`` is an error unless ``overwrite``.
    """
    import geopandas as gpd

    out_dir = Path(out_dir)
    layers = tuple(dict.fromkeys(layers))  # a layer asked for twice is written once
    unknown = [name for name in layers if name not in CHIP_LAYERS]
    if unknown:
        raise ValueError(f"unknown chip layers {unknown}; expected some of {CHIP_LAYERS}")
    if out_dir.exists() and not overwrite:
        raise FileExistsError(
            f"{out_dir} exists; replace it with --overwrite (Python: overwrite=True)"
        )
    maps = {name: _layer_maps(chips, name) for name in layers}
    missing = [name for name, m in maps.items() if m is None]
    for name in missing:
        log.info("chip set of %s has no %r layer; skipped", chips.city, name)
    present = tuple(name for name in layers if maps[name] is not None)
    if not present:
        raise ValueError(f"chip set of {chips.city} has none of the layers {list(layers)}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        names: dict[str, list[str]] = {name: [] for name in present}
        for i in range(len(chips)):
            transform = Affine(*chips.transforms[i][:6])
            tile = str(chips.tile_ids[i])
            for name in present:
                fname = f"{i:04d}_{tile}_{name}.tif"
                write_class_map(tmp / fname, np.asarray(maps[name][i]), crs=chips.crs,
                                transform=transform,
                                description=f"{name} land cover class, chip {i} of {tile}")
                names[name].append(fname)
        table: dict[str, object] = {
            "chip": np.arange(len(chips)),
            "tile_id": [str(t) for t in chips.tile_ids],
            "row_1m": chips.offsets[:, 0].astype(np.int64),
            "col_1m": chips.offsets[:, 1].astype(np.int64),
            **{f"file_{name}": names[name] for name in present},
        }
        if chips.truth is not None:
            for name in ("pseudo", "weak"):
                pred = _layer_maps(chips, name)
                if pred is not None:
                    table[f"{name}_accuracy_pct"] = np.round(_chip_accuracy(pred, chips.truth), 2)
        frame = gpd.GeoDataFrame(table, geometry=_footprints(chips), crs=chips.crs)
        frame.to_file(tmp / INDEX_NAME, layer="chips", driver="GPKG")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    files = len(chips) * len(present)
    log.info("wrote %d chip GeoTIFFs (%s) and %s to %s", files, ", ".join(present), INDEX_NAME,
             out_dir)
    return ChipExport(out_dir=out_dir, index=out_dir / INDEX_NAME, files=files, layers=present)
