"""Whole-tile prediction written as a paletted Cloud-Optimized GeoTIFF.

The segmenter runs window by window (:func:`segmenter.iter_strip_predictions`), and each
finished strip goes straight into the atomic window-by-window COG writer, so memory is
bounded by a strip of windows, never the tile. The checkpoint's metadata says which inputs
the model takes ("image" or "image+weak") and at which pooling ``downsample`` it was
trained.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window
from scipy import ndimage

from landprior.landcover.enviroatlas import EnviroAtlas, Tile
from landprior.landcover.geotiff import (
    CLASS_NODATA,
    open_class_map_writer,
    open_probability_writer,
)
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


PIXEL_SIZE_RANGE_M = (0.25, 4.0)
"""Pixel sizes (metres) that are plausibly the ~1 m NAIP the segmenters are trained on."""


_NO_CRS = ("{path} has no CRS: its map could not be georeferenced; assign the CRS the "
           "image is in first (e.g. gdal_edit.py -a_srs EPSG:26918 {path})")


def check_imagery_grid(profile: dict, path: str | Path) -> None:
    """Raise ValueError naming ``path`` when the imagery has no CRS; warn when it is not on a
    projected, metre-based grid of about 1 m pixels.

    The models learned 1 m NAIP texture; a geographic CRS (degree pixels) or 10 m imagery
    still runs but the maps mean little. A warning, not an error: 0.6 m NAIP is fine.
    """
    crs, transform = profile.get("crs"), profile["transform"]
    if crs is None:
        raise ValueError(_NO_CRS.format(path=path))
    if crs.is_geographic:
        log.warning("%s is in a geographic CRS (%s, pixels of %g degrees); the segmenters "
                    "expect ~1 m pixels on a projected grid: reproject first (gdalwarp)",
                    path, crs.to_string(), abs(transform.a))
        return
    size = abs(transform.a) * (crs.linear_units_factor[1] if crs.linear_units else 1.0)
    low, high = PIXEL_SIZE_RANGE_M
    if not low <= size <= high:
        log.warning("%s has %.3g m pixels; the segmenters were trained on ~1 m imagery",
                    path, size)


def invalid_pixels(src: rasterio.io.DatasetReader, window: Window) -> np.ndarray | None:
    """Boolean (h, w) of the pixels the imagery marks as no data, or None if it marks none.

    A pixel is invalid when every band holds the nodata value, or where an internal
    per-dataset mask says so. Alpha is NOT a mask here: GDAL often tags NAIP's fourth band,
    the near infrared, as alpha, and NIR = 0 is a valid (dark water) reading.
    """
    if src.nodata is not None:
        return (src.read(window=window) == src.nodata).all(axis=0)
    flags = src.mask_flag_enums[0]
    if MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags:
        return src.dataset_mask(window=window) == 0
    return None


def fill_invalid(
    read: Callable[[int, int, int, int], np.ndarray], src: rasterio.io.DatasetReader
) -> Callable[[int, int, int, int], np.ndarray]:
    """``read`` with the pixels ``src`` marks invalid (:func:`invalid_pixels`) replaced by
    their nearest valid pixel in the same read, so that a no-data collar (often 0) is not
    seen by the segmenter as dark ground or water next to the valid pixels it maps."""

    def filled(row: int, col: int, h: int, w: int) -> np.ndarray:
        x = read(row, col, h, w)
        invalid = invalid_pixels(src, Window(col, row, w, h))
        if invalid is None or not invalid.any():
            return x
        if invalid.all():
            return np.zeros_like(x)  # mapped as no data anyway
        _, (iy, ix) = ndimage.distance_transform_edt(invalid, return_indices=True)
        return x[:, iy, ix]

    return filled


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
    """Predict one tile; write the class map (and optionally uint8 probabilities) atomically.

    Pixels the imagery marks invalid (:func:`invalid_pixels`: nodata in every band, or an
    internal mask) are written as the map's nodata (255), not as a class.
    """
    naip_path = Path(tile.paths[dataset.layout.layer("naip").name])
    profile = dataset.profile(tile, "naip")
    check_imagery_grid(profile, naip_path)
    _predict_raster(
        model, naip_path, tile_reader(dataset, tile, inputs, weak_layer), profile, out_path,
        downsample=downsample, window=window, overlap=overlap, batch_size=batch_size,
        probabilities_path=probabilities_path, upsample=upsample, sigma_range=sigma_range,
    )  # fmt: skip
    log.info("predicted %s -> %s", tile.key, out_path)
    return Path(out_path)


def check_mappable_image(image_path: str | Path, *, window: int, downsample: int) -> None:
    """Raise ValueError naming ``image_path`` unless it is 4-band uint8 imagery of at least
    one prediction window (``window * downsample`` pixels a side) on a CRS. Checks only the
    header."""
    with warnings.catch_warnings():  # no georeference: said below, not as rasterio's warning
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        src = rasterio.open(image_path)
    with src:
        if src.crs is None:
            raise ValueError(_NO_CRS.format(path=image_path))
        if src.count != NAIP_BANDS or set(src.dtypes) != {"uint8"}:
            raise ValueError(
                f"{image_path}: expected {NAIP_BANDS} uint8 bands (R, G, B, NIR; NAIP), got "
                f"{src.count} band(s) of {', '.join(sorted(set(src.dtypes)))}"
            )
        side = window * downsample
        if src.height < side or src.width < side:
            raise ValueError(
                f"{image_path} is {src.height} x {src.width} px, smaller than one prediction "
                f"window ({side} x {side} px = {window} model px x downsample {downsample}): "
                "use a smaller --window or a larger image"
            )


def predict_image(
    model: SegmentationUNet,
    image_path: str | Path,
    out_path: str | Path,
    *,
    downsample: int = 4,
    window: int = 32,
    overlap: int = 8,
    batch_size: int = 16,
    probabilities_path: str | Path | None = None,
    upsample: UpsampleMode = "guided",
    sigma_range: float = DEFAULT_SIGMA_RANGE,
) -> Path:
    """Map any 4-band (R, G, B, NIR) uint8 GeoTIFF, e.g. a NAIP quarter quad, on its own grid.

    The same prediction as :func:`predict_tile`, for imagery outside an EnviroAtlas-layout
    dataset; only image-only segmenters apply (there are no weak labels here). Raises
    ValueError naming the file when it is not 4-band uint8 imagery or is smaller than one
    prediction window.
    """
    image_path = Path(image_path)
    if model.config.in_channels != NAIP_BANDS:
        raise ValueError(
            f"the segmenter takes {model.config.in_channels} input bands (imagery + weak "
            f"labels?); mapping {image_path} needs an image-only model ({NAIP_BANDS} bands)"
        )
    check_mappable_image(image_path, window=window, downsample=downsample)
    with rasterio.open(image_path) as src:
        profile = dict(src.profile)
        check_imagery_grid(profile, image_path)

        def read(row: int, col: int, h: int, w: int) -> np.ndarray:
            return src.read(window=Window(col, row, w, h)).astype(np.float32) / 255.0

        try:
            _predict_raster(
                model, image_path, read, profile, out_path, downsample=downsample,
                window=window, overlap=overlap, batch_size=batch_size,
                probabilities_path=probabilities_path, upsample=upsample,
                sigma_range=sigma_range,
            )  # fmt: skip
        except RasterioIOError as err:
            cause = f" ({err.__cause__})" if err.__cause__ else ""
            raise OSError(f"{image_path}: reading the image failed{cause}; is the file cut "
                          "short or damaged? (no map written)") from err
    log.info("mapped %s -> %s", image_path, out_path)
    return Path(out_path)


def _predict_raster(
    model: SegmentationUNet,
    naip_path: Path,
    read: Callable[[int, int, int, int], np.ndarray],
    profile: dict,
    out_path: str | Path,
    *,
    downsample: int,
    window: int,
    overlap: int,
    batch_size: int,
    probabilities_path: str | Path | None,
    upsample: UpsampleMode,
    sigma_range: float,
) -> None:
    """Predict the raster ``read`` gives, on ``profile``'s grid, into the class map (and
    probabilities). Pixels ``naip_path`` marks invalid are filled from their nearest valid
    pixel before the model (:func:`fill_invalid`), then written as the class map's nodata
    and masked in the probabilities."""
    height, width = profile["height"], profile["width"]
    grid = {
        "crs": profile["crs"], "transform": profile["transform"],
        "height": height, "width": width,
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(naip_path) as naip_src, open_class_map_writer(out_path, **grid) as classes:
        strips = iter_strip_predictions(
            model, fill_invalid(read, naip_src), height, width, window=window,
            overlap=overlap, downsample=downsample, batch_size=batch_size, upsample=upsample,
            guide_bands=NAIP_BANDS, sigma_range=sigma_range,
        )  # fmt: skip

        def class_map(probs: np.ndarray, invalid: np.ndarray | None) -> np.ndarray:
            labels = probs.argmax(axis=0).astype(np.uint8)
            if invalid is not None:
                labels[invalid] = CLASS_NODATA
            return labels

        if probabilities_path is None:
            for row0, probs in strips:
                win = Window(0, row0, width, probs.shape[1])
                classes.write(class_map(probs, invalid_pixels(naip_src, win)), win)
        else:
            Path(probabilities_path).parent.mkdir(parents=True, exist_ok=True)
            with open_probability_writer(probabilities_path, **grid) as prob_writer:
                for row0, probs in strips:
                    win = Window(0, row0, width, probs.shape[1])
                    invalid = invalid_pixels(naip_src, win)
                    classes.write(class_map(probs, invalid), win)
                    if invalid is None:
                        prob_writer.write(probs, win)
                    else:  # no value of a probability band is free: an internal mask
                        prob_writer.write(np.where(invalid, 0.0, probs), win)
                        prob_writer.write_mask(~invalid, win)
