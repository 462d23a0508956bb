"""Where the weak labels of a tile come from: a dataset layer or a folder of GeoTIFFs.

``spec`` is either a layer name of the dataset ("prior", "prior_no_osm_no_buildings":
the layers distributed with EnviroAtlas, or written by the synthetic generator) or a folder
written by ``landprior data weak-labels --root ... --out DIR`` holding
``DIR/<city>/<tile>_weak_labels.tif``. The real EnviroAtlas prior layers were computed
with each target city's own labels (PAPER_NOTES); recomputing them into a folder with the
source city's co-occurrence avoids that leak.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from landprior.landcover.enviroatlas import EnviroAtlas, Tile
from landprior.landcover.weak_labels import prior_from_uint8

WeakReader = Callable[[Tile, Window | None], np.ndarray]


def weak_label_path(folder: str | Path, tile: Tile) -> Path:
    """``folder/<city>/<tile>_weak_labels.tif``."""
    return Path(folder) / tile.city / f"{tile.tile_id}_weak_labels.tif"


def weak_reader(dataset: EnviroAtlas, spec: str | Path) -> WeakReader:
    """``read(tile, window) -> (5, h, w)`` float32 weak-label probabilities."""
    spec_str = str(spec)
    if spec_str in dataset.layout.layer_names:
        checked: set[str] = set()

        def read_layer(tile: Tile, window: Window | None = None) -> np.ndarray:
            if tile.key not in checked:  # the weak layer must lie on the imagery's grid
                dataset.grid(tile, ["naip", spec_str])
                checked.add(tile.key)
            return prior_from_uint8(dataset.read(tile, spec_str, window))

        return read_layer
    folder = Path(spec_str)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"weak labels {spec_str!r} are neither a layer of the dataset "
            f"{dataset.layout.layer_names} nor an existing folder"
        )

    checked_files: set[Path] = set()

    def read_folder(tile: Tile, window: Window | None = None) -> np.ndarray:
        path = weak_label_path(folder, tile)
        if not path.is_file():
            raise FileNotFoundError(f"weak labels for {tile.key} not found: {path}")
        with rasterio.open(path) as src:
            if path not in checked_files:  # once per file, not for every window read
                _check_on_imagery_grid(src, path, dataset.profile(tile, "naip"))
                checked_files.add(path)
            return prior_from_uint8(src.read(window=window))

    return read_folder


def _check_on_imagery_grid(src: rasterio.io.DatasetReader, path: Path, naip: dict) -> None:
    """A weak-label GeoTIFF must hold 5 uint8 bands on exactly the imagery's grid."""
    if src.count != 5 or src.dtypes[0] != "uint8":
        raise ValueError(f"{path}: expected 5 uint8 bands, got {src.count} {src.dtypes[0]}")
    if src.crs != naip["crs"] or (src.height, src.width) != (naip["height"], naip["width"]):
        raise ValueError(
            f"{path}: grid {src.height}x{src.width} {src.crs} differs from the imagery "
            f"grid {naip['height']}x{naip['width']} {naip['crs']}"
        )
    # absolute tolerance (a millionth of a pixel): rtol would scale with coordinates
    atol = 1e-6 * abs(naip["transform"].a)
    if not np.allclose(tuple(src.transform)[:6], tuple(naip["transform"])[:6], rtol=0, atol=atol):
        raise ValueError(f"{path}: transform differs from the imagery's transform")
