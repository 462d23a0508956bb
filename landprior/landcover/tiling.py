"""Tiling: chips over tiles with their own geotransforms, and x1/4 resolution changes.

Paper section 4 / PAPER_NOTES: the prior is trained on random 256 x 256 patches at 1 m,
downsampled x1/4 to 64 x 64 label maps; colour clustering and inference run on NAIP
average-pooled to that label resolution. Here:

* :func:`chip_windows` / :func:`random_chips` lay out chips as rasterio ``Window`` s, each
  carrying its own ``rasterio.windows.transform``; the last chip of a row or column is
  snapped to the tile border so every pixel is covered and no chip is partial.
* :func:`extract_chips` (in-memory, vectorised) and :func:`read_chips` (window reads from an
  open dataset, bounded memory) give (N, C, h, w) batches.
* :func:`mode_downsample` is the label reduction (majority per f x f block, the ignore
  index excluded; ties go to the lowest class); the authors used nearest neighbour,
  offered as ``method="nearest"``. :func:`average_pool` is the imagery reduction.
  :func:`downsample_transform` gives the matching coarser geotransform.
* :func:`open_probability_output` writes uint8 probability bands window by window,
  atomically (the project's COG writer when present).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from affine import Affine
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from landprior.landcover.classes import IGNORE_INDEX, NUM_CLASSES

log = logging.getLogger(__name__)

DownsampleMethod = Literal["mode", "nearest"]
DOWNSAMPLE_METHODS: tuple[str, ...] = ("mode", "nearest")


@dataclass(frozen=True)
class Chip:
    """One chip of a tile: pixel window and its own geotransform (None without georef)."""

    row: int
    col: int
    height: int
    width: int
    transform: Affine | None = None

    @property
    def window(self) -> Window:
        """The rasterio window (col_off, row_off, width, height)."""
        return Window(self.col, self.row, self.width, self.height)

    @property
    def slices(self) -> tuple[slice, slice]:
        """(row slice, column slice) into the tile array."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


def _pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or any(int(v) < 1 for v in pair):
        raise ValueError(f"{what} must be a positive int or (rows, cols), got {value!r}")
    return int(pair[0]), int(pair[1])


def _offsets(length: int, size: int, stride: int) -> list[int]:
    """Chip starts along one axis; the last one snapped so the chip ends at the border."""
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def _check_fits(height: int, width: int, size: tuple[int, int], name: str) -> None:
    if height < size[0] or width < size[1]:
        raise ValueError(
            f"tile {name!r} is {height} x {width} px, smaller than a {size[0]} x {size[1]} chip; "
            "use a smaller chip size or skip this tile"
        )


def _chip(row: int, col: int, size: tuple[int, int], transform: Affine | None) -> Chip:
    tr = None
    if transform is not None:
        tr = window_transform(Window(col, row, size[1], size[0]), transform)
    return Chip(row, col, size[0], size[1], tr)


def chip_windows(
    height: int,
    width: int,
    size: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] | None = None,
    transform: Affine | None = None,
    name: str = "tile",
) -> list[Chip]:
    """A regular grid of chips over an ``height x width`` tile, row-major.

    ``stride`` defaults to ``size`` (no overlap). The last chip of each row/column is
    snapped to the border (it may overlap its neighbour), so the union covers the tile.
    A tile smaller than a chip raises ``ValueError`` naming ``name`` and both sizes.
    """
    size2 = _pair(size, "chip size")
    stride2 = size2 if stride is None else _pair(stride, "stride")
    _check_fits(height, width, size2, name)
    return [
        _chip(r, c, size2, transform)
        for r in _offsets(height, size2[0], stride2[0])
        for c in _offsets(width, size2[1], stride2[1])
    ]


def chips_for_dataset(
    dataset: Any,
    size: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] | None = None,
) -> list[Chip]:
    """:func:`chip_windows` over an open rasterio dataset, with its transform and name."""
    return chip_windows(
        dataset.height,
        dataset.width,
        size,
        stride=stride,
        transform=dataset.transform,
        name=str(getattr(dataset, "name", "tile")),
    )


def random_chips(
    height: int,
    width: int,
    size: int | tuple[int, int],
    n: int,
    *,
    generator: np.random.Generator,
    transform: Affine | None = None,
    name: str = "tile",
) -> list[Chip]:
    """``n`` chips at uniformly random offsets (paper: random 256 x 256 training patches)."""
    size2 = _pair(size, "chip size")
    _check_fits(height, width, size2, name)
    rows = generator.integers(0, height - size2[0] + 1, size=n)
    cols = generator.integers(0, width - size2[1] + 1, size=n)
    return [_chip(int(r), int(c), size2, transform) for r, c in zip(rows, cols, strict=True)]


def extract_chips(array: np.ndarray, chips: list[Chip]) -> np.ndarray:
    """Cut chips out of an in-memory tile, vectorised.

    Args:
        array: (H, W) or (C, H, W).
        chips: equal-sized chips (from :func:`chip_windows` / :func:`random_chips`).

    Returns:
        (N, h, w) or (N, C, h, w), a copy, same dtype.
    """
    if not chips:
        raise ValueError("no chips given")
    sizes = {(c.height, c.width) for c in chips}
    if len(sizes) != 1:
        raise ValueError(f"chips have different sizes {sorted(sizes)}; expected one size")
    h, w = sizes.pop()
    arr = np.asarray(array)
    if arr.ndim not in (2, 3):
        raise ValueError(f"tile array has shape {arr.shape}; expected (H, W) or (C, H, W)")
    H, W = arr.shape[-2:]
    _check_fits(H, W, (h, w), "array")
    rows = np.array([c.row for c in chips])
    cols = np.array([c.col for c in chips])
    if (rows + h > H).any() or (cols + w > W).any() or (rows < 0).any() or (cols < 0).any():
        raise ValueError(f"a chip lies outside the {H} x {W} tile")
    views = sliding_window_view(arr, (h, w), axis=(-2, -1))  # (..., H-h+1, W-w+1, h, w)
    out = views[..., rows, cols, :, :]  # (..., N, h, w)
    return np.moveaxis(out, -3, 0).copy() if arr.ndim == 3 else out.copy()


def read_chips(
    dataset: Any, chips: list[Chip], *, indexes: int | list[int] | None = None
) -> np.ndarray:
    """Read chips from an open rasterio dataset window by window -> (N, C, h, w).

    Only the chips are read, so memory is bounded by the batch, not the tile.
    """
    if not chips:
        raise ValueError("no chips given")
    _check_fits(
        dataset.height,
        dataset.width,
        (max(c.height for c in chips), max(c.width for c in chips)),
        str(getattr(dataset, "name", "tile")),
    )
    idx = list(range(1, dataset.count + 1)) if indexes is None else indexes
    return np.stack([dataset.read(idx, window=c.window) for c in chips])


def downsample_transform(transform: Affine, factor: int) -> Affine:
    """The geotransform of a raster downsampled by ``factor`` (pixels ``factor`` x larger)."""
    return transform @ Affine.scale(factor)


def _blocks(x: np.ndarray, factor: int, what: str) -> np.ndarray:
    """(..., H, W) -> (..., H/f, W/f, f*f) view of the f x f blocks."""
    if factor < 1:
        raise ValueError(f"downsampling factor must be >= 1, got {factor}")
    if x.ndim < 2:
        raise ValueError(f"{what} has shape {x.shape}; expected (..., H, W)")
    H, W = x.shape[-2:]
    if H % factor or W % factor:
        raise ValueError(
            f"{what} is {H} x {W} px; expected both sides divisible by the factor {factor}"
        )
    lead = x.shape[:-2]
    b = x.reshape(*lead, H // factor, factor, W // factor, factor)
    b = np.moveaxis(b, -3, -2)  # (..., H/f, W/f, f, f)
    return b.reshape(*lead, H // factor, W // factor, factor * factor)


def mode_downsample(
    labels: np.ndarray,
    factor: int = 4,
    *,
    n_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
    method: DownsampleMethod = "mode",
) -> np.ndarray:
    """Labels (..., H, W) -> (..., H/f, W/f) uint8 by majority per f x f block.

    Ignored pixels do not vote; a block with no valid pixel is ``ignore_index``; ties go
    to the lowest class index. ``method="nearest"`` takes the block's centre pixel
    (the authors' nearest-neighbour downsampling, paper section 4).
    """
    if method not in DOWNSAMPLE_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {DOWNSAMPLE_METHODS}")
    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels have dtype {lab.dtype}; expected integer class indices")
    if method == "nearest":
        _blocks(lab, factor, "label raster")  # shape checks
        c = factor // 2
        return lab[..., c::factor, c::factor].astype(np.uint8)
    bad = (lab != ignore_index) & ((lab < 0) | (lab >= n_classes))
    if bad.any():
        raise ValueError(
            f"label value {int(lab[bad].flat[0])} is neither a class 0..{n_classes - 1} nor "
            f"the ignore index {ignore_index}"
        )
    blocks = _blocks(lab, factor, "label raster")
    classes = np.arange(n_classes, dtype=lab.dtype)
    counts = (blocks[..., None] == classes).sum(axis=-2, dtype=np.int32)  # (..., h, w, K)
    out = counts.argmax(axis=-1).astype(np.uint8)
    out[counts.max(axis=-1) == 0] = ignore_index
    return out


def average_pool(image: np.ndarray, factor: int = 4) -> np.ndarray:
    """Imagery (..., H, W) -> (..., H/f, W/f) float32 block means (NaN propagates)."""
    blocks = _blocks(np.asarray(image), factor, "image")
    return blocks.mean(axis=-1, dtype=np.float64).astype(np.float32)


def sample_label_patches(
    labels: np.ndarray,
    n: int,
    *,
    generator: np.random.Generator,
    size: int = 256,
    factor: int = 4,
    flips: bool = True,
    max_ignore_fraction: float = 1.0,
    name: str = "tile",
    method: DownsampleMethod = "mode",
) -> np.ndarray:
    """Random training patches for the prior: (n, size/f, size/f) uint8 class maps.

    Paper section 4: random 256 x 256 patches at 1 m, random flips, downsampled x1/4 to
    64 x 64. Patches whose ignored fraction (after downsampling) exceeds
    ``max_ignore_fraction`` are redrawn (up to 20 n draws).
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"label tile {name!r} has shape {lab.shape}; expected (H, W)")
    out: list[np.ndarray] = []
    draws = 0
    while len(out) < n:
        if draws > 20 * max(n, 1):
            raise ValueError(
                f"tile {name!r}: could not find {n} patches with at most "
                f"{max_ignore_fraction:.0%} ignored pixels"
            )
        need = n - len(out)
        draws += need
        chips = random_chips(*lab.shape, size, need, generator=generator, name=name)
        small = mode_downsample(extract_chips(lab, chips), factor, method=method)
        if flips:
            flip_v = generator.random(need) < 0.5
            flip_h = generator.random(need) < 0.5
            small[flip_v] = small[flip_v, ::-1, :]
            small[flip_h] = small[flip_h, :, ::-1]
        frac = (small == IGNORE_INDEX).mean(axis=(1, 2))
        out.extend(small[frac <= max_ignore_fraction])
    return np.stack(out[:n])


# --------------------------------------------------------------------------- output


def probability_writer_name() -> str:
    """Which GeoTIFF writer :func:`open_probability_output` uses."""
    try:
        from landprior.landcover import geotiff
    except ImportError:
        return "rasterio (fallback)"
    if hasattr(geotiff, "open_probability_writer"):
        return "landprior.landcover.geotiff.open_probability_writer"
    return "rasterio (fallback)"


class _PlainWriter:
    def __init__(self, dst: Any) -> None:
        self._dst = dst

    def write(self, data: np.ndarray, window: Window | None = None) -> None:
        self._dst.write(np.asarray(data, dtype=np.uint8), window=window)


@contextlib.contextmanager
def open_probability_output(
    path: str | os.PathLike[str],
    *,
    crs: Any,
    transform: Affine,
    height: int,
    width: int,
    band_names: Sequence[str],
) -> Iterator[Any]:
    """Atomic window-by-window writer of uint8 probability bands (x255).

    Uses the project's COG writer (``geotiff.open_probability_writer``) when present,
    else a tiled deflate GeoTIFF written to a temporary file and renamed into place.
    The yielded object has ``write(data (bands, h, w), window)``.
    """
    if probability_writer_name().startswith("landprior"):
        from landprior.landcover import geotiff

        with geotiff.open_probability_writer(
            path,
            crs=crs,
            transform=transform,
            height=height,
            width=width,
            class_names=tuple(band_names),
        ) as writer:
            yield writer
        return
    import rasterio

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.tif")
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": len(band_names),
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            yield _PlainWriter(dst)
            for i, name in enumerate(band_names, start=1):
                dst.set_band_description(i, f"p({name})")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
