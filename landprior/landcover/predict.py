"""Whole-tile prediction written as a paletted Cloud-Optimized GeoTIFF.

The segmenter runs window by window (:func:`segmenter.iter_strip_predictions`), and each
finished strip goes straight into the atomic window-by-window COG writer, so memory is
bounded by a strip of windows, never the tile. The checkpoint's metadata says which inputs
the model takes ("image" or "image+weak") and at which pooling ``downsample`` it was
trained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from landprior.landcover.enviroatlas import EnviroAtlas, Tile
from landprior.landcover.geotiff import open_class_map_writer, open_probability_writer
from landprior.landcover.segmenter import SegmentationUNet, iter_strip_predictions
from landprior.landcover.upsample import DEFAULT_SIGMA_RANGE, UpsampleMode
from landprior.landcover.weak_source import weak_reader

log = logging.getLogger(__name__)
NAIP_BANDS = 4
"""The image bands that lead every model input (R, G, B, NIR); they guide the upsampling."""


def tile_reader(
    dataset: EnviroAtlas, tile: Tile, inputs: str, weak_layer: str = "prior"
) -> Callable[[int, int, int, int], np.ndarray]:
    """``read(row, col, h, w)`` -> (4 or 9, h, w) float32 in [0, 1] for one tile."""
    if inputs not in ("image", "image+weak"):
        raise ValueError(f"unknown segmenter inputs {inputs!r}; expected 'image' or 'image+weak'")
    read_weak = weak_reader(dataset, weak_layer) if inputs == "image+weak" else None

    def read(row: int, col: int, h: int, w: int) -> np.ndarray:
        window = Window(col, row, w, h)
        image = dataset.read(tile, "naip", window).astype(np.float32) / 255.0
        if read_weak is None:
            return image
        return np.concatenate([image, read_weak(tile, window).astype(np.float32)])

    return read


def predict_tile(
    model: SegmentationUNet,
    dataset: EnviroAtlas,
    tile: Tile,
    out_path: str | Path,
    *,
    inputs: str = "image",
    downsample: int = 4,
    window: int = 32,
    overlap: int = 8,
    batch_size: int = 16,
    weak_layer: str = "prior",
    probabilities_path: str | Path | None = None,
    upsample: UpsampleMode = "guided",
    sigma_range: float = DEFAULT_SIGMA_RANGE,
) -> Path:
    """Predict one tile; write the class map (and optionally uint8 probabilities) atomically."""
    profile = dataset.profile(tile, "naip")
    height, width = profile["height"], profile["width"]
    read = tile_reader(dataset, tile, inputs, weak_layer)
    grid = {
        "crs": profile["crs"], "transform": profile["transform"],
        "height": height, "width": width,
    }
    strips = iter_strip_predictions(
        model, read, height, width, window=window, overlap=overlap,
        downsample=downsample, batch_size=batch_size, upsample=upsample,
        guide_bands=NAIP_BANDS, sigma_range=sigma_range,
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open_class_map_writer(out_path, **grid) as classes:
        if probabilities_path is None:
            for row0, probs in strips:
                win = Window(0, row0, width, probs.shape[1])
                classes.write(probs.argmax(axis=0).astype(np.uint8), win)
        else:
            Path(probabilities_path).parent.mkdir(parents=True, exist_ok=True)
            with open_probability_writer(probabilities_path, **grid) as prob_writer:
                for row0, probs in strips:
                    win = Window(0, row0, width, probs.shape[1])
                    classes.write(probs.argmax(axis=0).astype(np.uint8), win)
                    prob_writer.write(probs, win)
    log.info("predicted %s -> %s", tile.key, out_path)
    return out_path
