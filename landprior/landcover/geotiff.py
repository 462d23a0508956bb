"""GIS-ready GeoTIFF output: Cloud-Optimized class maps and probabilities, always atomic.

Every writer works the same way: the data go window by window into a hidden temporary
GTiff in the destination folder, which GDAL then copies into a second temporary file in
the final format (the COG driver when the bundled GDAL has it, else a tiled GTiff with
``COPY_SRC_OVERVIEWS``), with overviews; only then ``os.replace`` puts it in place. On any
exception both temporaries are removed and nothing is left at the destination.

* :func:`write_raster` - any array with a rasterio profile.
* :func:`write_class_map` - ``(H, W)`` uint8 class indices, nodata 255, an embedded colour
  table, class names (band description, band metadata, and a ``.aux.xml`` sidecar with
  category names and a raster attribute table, which QGIS and GDAL read), overviews built
  with ``mode`` resampling.
* :func:`write_probabilities` - ``(C, H, W)`` probabilities stored as uint8 (x255), one
  band per class with its name as band description, ``average`` overviews.
* :func:`open_raster_writer` / :func:`open_class_map_writer` /
  :func:`open_probability_writer` - the same, written window by window, so memory stays
  bounded for outputs larger than RAM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

from landprior.landcover.classes import CLASS_COLORS, CLASS_NAMES, IGNORE_INDEX

logger = logging.getLogger(__name__)

ResamplingName = Literal["nearest", "mode", "average", "bilinear", "cubic", "rms"]
RESAMPLING_NAMES: tuple[str, ...] = get_args(ResamplingName)

CLASS_NODATA = IGNORE_INDEX
"""Nodata value of class maps (255, the ignore index)."""

DEFAULT_BLOCKSIZE = 256
DEFAULT_OVERVIEW_MIN_SIZE = 64
"""Overviews halve the size until the longer side would drop below this many pixels."""

PathLike = str | os.PathLike[str]


@cache
def cog_driver_available() -> bool:
    """Whether the bundled GDAL has the COG driver (GDAL >= 3.1)."""
    with rasterio.Env() as env:
        return "COG" in env.drivers()


def overview_factors(
    height: int, width: int, min_size: int = DEFAULT_OVERVIEW_MIN_SIZE
) -> list[int]:
    """Decimation factors 2, 4, ... while the longer side stays >= ``min_size`` pixels."""
    factors = []
    factor = 2
    while max(height, width) / factor >= min_size:
        factors.append(factor)
        factor *= 2
    return factors


def _resampling(name: str) -> Resampling:
    if name not in RESAMPLING_NAMES:
        raise ValueError(
            f"unknown overview resampling {name!r}; expected one of {RESAMPLING_NAMES}"
        )
    return Resampling[name]


def _tmp_name(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.{tag}")


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@dataclass(frozen=True)
class Categories:
    """Class names and RGB colours of a categorical band (value = position)."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise ValueError(f"{len(self.names)} class names but {len(self.colors)} colours")
        if len(self.names) > 255:
            raise ValueError("at most 255 classes fit a uint8 class map with nodata 255")

    def colormap(self, nodata: int | None = CLASS_NODATA) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour table: class colours opaque, nodata transparent, the rest black."""
        cmap = {v: (0, 0, 0, 255) for v in range(256)}
        for value, rgb in enumerate(self.colors):
            cmap[value] = (*(int(c) for c in rgb), 255)
        if nodata is not None:
            cmap[int(nodata)] = (0, 0, 0, 0)
        return cmap


DEFAULT_CATEGORIES = Categories(CLASS_NAMES, CLASS_COLORS)


def _aux_xml(categories: Categories, nodata: int | None) -> bytes:
    """GDAL PAM sidecar: category names and a thematic raster attribute table for band 1."""
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    cats = ET.SubElement(band, "CategoryNames")
    for name in categories.names:
        ET.SubElement(cats, "Category").text = name
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    # GDAL field types: 0 integer, 2 string; usages: 5 min-max (value), 2 name, 6-8 RGB
    fields = [("Value", 0, 5), ("Class", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8)]
    for i, (name, ftype, usage) in enumerate(fields):
        fd = ET.SubElement(rat, "FieldDefn", index=str(i))
        ET.SubElement(fd, "Name").text = name
        ET.SubElement(fd, "Type").text = str(ftype)
        ET.SubElement(fd, "Usage").text = str(usage)
    for value, (name, rgb) in enumerate(zip(categories.names, categories.colors, strict=True)):
        row = ET.SubElement(rat, "Row", index=str(value))
        for item in (value, name, *rgb):
            ET.SubElement(row, "F").text = str(item)
    if nodata is not None:
        md = ET.SubElement(band, "Metadata")
        ET.SubElement(md, "MDI", key="NODATA_MEANING").text = "no data / ignored"
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8")


def read_categories(path: PathLike) -> tuple[str, ...]:
    """Class names of a class map: from the embedded band metadata, else the ``.aux.xml``."""
    path = Path(path)
    with rasterio.open(path) as src:
        tags = src.tags(1)
    if "CLASS_NAMES" in tags:
        return tuple(tags["CLASS_NAMES"].split(","))
    aux = path.with_name(path.name + ".aux.xml")
    if aux.is_file():
        node = ET.parse(aux).getroot().find("./PAMRasterBand/CategoryNames")
        if node is not None:
            return tuple(c.text or "" for c in node.findall("Category"))
    raise ValueError(f"{path}: no class names (no CLASS_NAMES band tag and no category names)")


class RasterWriter:
    """Window-by-window writer into the temporary file of an atomic write."""

    def __init__(self, dataset: rasterio.io.DatasetWriter, encode: Any = None) -> None:
        self._dst = dataset
        self._encode = encode

    @property
    def height(self) -> int:
        """Rows of the output."""
        return self._dst.height

    @property
    def width(self) -> int:
        """Columns of the output."""
        return self._dst.width

    @property
    def count(self) -> int:
        """Bands of the output."""
        return self._dst.count

    def windows(self, size: int = 1024) -> Iterator[Window]:
        """Windows of ``size`` x ``size`` pixels covering the output (row-major)."""
        for row in range(0, self.height, size):
            for col in range(0, self.width, size):
                yield Window(col, row, min(size, self.width - col), min(size, self.height - row))

    def write(self, data: np.ndarray, window: Window | None = None) -> None:
        """Write ``(bands, h, w)`` or ``(h, w)`` data at ``window`` (the whole raster if None)."""
        data = np.asarray(data)
        if self._encode is not None:
            data = self._encode(data)
        if data.ndim == 2:
            data = data[None]
        if window is None:
            window = Window(0, 0, self.width, self.height)
        expected = (self.count, int(window.height), int(window.width))
        if data.shape != expected:
            raise ValueError(f"data of shape {data.shape} for window {window}; expected {expected}")
        self._dst.write(data.astype(self._dst.dtypes[0], copy=False), window=window)

    def write_mask(self, valid: np.ndarray, window: Window | None = None) -> None:
        """Mark the ``(h, w)`` pixels where ``valid`` is False as no data in the file's
        internal per-dataset mask (for bands where no value is free to mean "no data",
        e.g. probabilities; GDAL and QGIS honour the mask)."""
        valid = np.asarray(valid, dtype=bool)
        if window is None:
            window = Window(0, 0, self.width, self.height)
        expected = (int(window.height), int(window.width))
        if valid.shape != expected:
            raise ValueError(f"mask of shape {valid.shape} for window {window}; "
                             f"expected {expected}")
        self._dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=window)


def _normalise_profile(profile: Mapping[str, Any]) -> dict[str, Any]:
    prof = dict(profile)
    for key in ("count", "height", "width", "dtype"):
        if key not in prof:
            raise ValueError(f"raster profile lacks {key!r}")
    if prof.get("crs") is None:
        raise ValueError("raster profile has no CRS; georeferenced output needs one")
    if prof.get("transform") is None:
        raise ValueError("raster profile has no transform")
    prof["crs"] = CRS.from_user_input(prof["crs"])
    prof["transform"] = Affine(*prof["transform"][:6])
    return prof


@contextlib.contextmanager
def open_raster_writer(
    path: PathLike,
    profile: Mapping[str, Any],
    *,
    band_descriptions: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    band_tags: Mapping[int, Mapping[str, str]] | None = None,
    colormap: Mapping[int, Sequence[int]] | None = None,
    categories: Categories | None = None,
    scale: float | None = None,
    overview_resampling: ResamplingName = "nearest",
    overview_min_size: int = DEFAULT_OVERVIEW_MIN_SIZE,
    blocksize: int = DEFAULT_BLOCKSIZE,
    cog: bool = True,
    _encode: Any = None,
) -> Iterator[RasterWriter]:
    """Atomic window-by-window writer; the file appears only when the block exits cleanly.

    ``profile`` needs count, height, width, dtype, crs and transform (nodata and compress
    are honoured; compress defaults to deflate). Overviews (factors from
    :func:`overview_factors`) use ``overview_resampling``. ``categories`` adds the
    ``.aux.xml`` sidecar with category names and a raster attribute table. ``scale`` sets
    every band's scale factor (value = stored x scale), which GIS tools apply on display.
    """
    path = Path(path)
    prof = _normalise_profile(profile)
    resampling = _resampling(overview_resampling)
    if blocksize % 16:
        raise ValueError(f"blocksize must be a multiple of 16, got {blocksize}")
    if band_descriptions is not None and len(band_descriptions) != prof["count"]:
        raise ValueError(
            f"{len(band_descriptions)} band descriptions for {prof['count']} bands ({path})"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist (writing {path})")
    compress = str(prof.pop("compress", "deflate") or "none").lower()
    factors = overview_factors(prof["height"], prof["width"], overview_min_size)
    stage = _tmp_name(path, "stage.tif")
    final = _tmp_name(path, "tmp.tif")
    aux_tmp = _tmp_name(path, "tmp.aux.xml")
    aux = path.with_name(path.name + ".aux.xml")
    use_cog = cog and cog_driver_available()
    stage_profile = {
        **{k: v for k, v in prof.items() if k not in ("blockxsize", "blockysize", "tiled")},
        "driver": "GTiff",
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "compress": "deflate",
        "zlevel": 1,
        "interleave": "band" if prof["count"] == 1 else "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    try:
        # a mask written with RasterWriter.write_mask goes inside the file, not a .msk sidecar
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
                rasterio.open(stage, "w", **stage_profile) as dst:
            yield RasterWriter(dst, _encode)
            if band_descriptions is not None:
                for i, desc in enumerate(band_descriptions, start=1):
                    dst.set_band_description(i, desc)
            if tags:
                dst.update_tags(**tags)
            if scale is not None:
                dst.scales = [scale] * prof["count"]
                dst.offsets = [0.0] * prof["count"]
            for band, btags in (band_tags or {}).items():
                dst.update_tags(band, **btags)
            if colormap is not None:
                dst.write_colormap(1, {int(k): tuple(v) for k, v in colormap.items()})
            if not use_cog and factors:
                dst.build_overviews(factors, resampling)
                dst.update_tags(ns="rio_overview", resampling=resampling.name)
        options: dict[str, Any] = {"COMPRESS": compress.upper(), "BIGTIFF": "IF_SAFER"}
        if use_cog:
            options.update(
                BLOCKSIZE=blocksize,
                OVERVIEW_RESAMPLING=resampling.name.upper(),
                OVERVIEW_COUNT=len(factors),
                OVERVIEWS="AUTO" if factors else "NONE",
            )
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
                rasterio.shutil.copy(stage, final, driver="COG", **options)
        else:
            options.update(
                TILED="YES", BLOCKXSIZE=blocksize, BLOCKYSIZE=blocksize, COPY_SRC_OVERVIEWS="YES"
            )
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
                rasterio.shutil.copy(stage, final, driver="GTiff", **options)
        _unlink(stage)
        if categories is not None:
            aux_tmp.write_bytes(_aux_xml(categories, prof.get("nodata")))
        os.replace(final, path)
        if categories is not None:
            os.replace(aux_tmp, aux)
        else:
            _unlink(aux)  # a stale sidecar would mislabel the new file
        logger.debug(
            "wrote %s (%s, %d overview levels)", path, "COG" if use_cog else "GTiff", len(factors)
        )
    except BaseException:
        for tmp in (stage, final, aux_tmp):
            _unlink(tmp)
        raise


def write_raster(
    path: PathLike,
    array: np.ndarray,
    profile: Mapping[str, Any],
    **options: Any,
) -> Path:
    """Write ``array`` (``(bands, H, W)`` or ``(H, W)``) atomically as a (COG) GeoTIFF.

    ``profile`` is a rasterio profile with crs and transform; count, height, width and
    dtype are taken from the array when absent and must agree when present. ``options``
    are those of :func:`open_raster_writer`. Returns the path.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"array must be (bands, H, W) or (H, W), got shape {array.shape}")
    prof = dict(profile)
    inferred = {"count": array.shape[0], "height": array.shape[1], "width": array.shape[2]}
    for key, value in inferred.items():
        if key in prof and int(prof[key]) != value:
            raise ValueError(f"profile {key}={prof[key]} but the array has {key} {value} ({path})")
        prof[key] = value
    prof.setdefault("dtype", str(array.dtype))
    with open_raster_writer(path, prof, **options) as writer:
        writer.write(array)
    return Path(path)


def _class_map_options(categories: Categories, nodata: int, description: str) -> dict[str, Any]:
    return {
        "band_descriptions": [description],
        "band_tags": {
            1: {
                "CLASS_NAMES": ",".join(categories.names),
                **{f"CLASS_{i}": name for i, name in enumerate(categories.names)},
            }
        },
        "tags": {"LANDPRIOR_PRODUCT": "class_map", "NODATA_MEANING": "no data / ignored"},
        "colormap": categories.colormap(nodata),
        "categories": categories,
        "overview_resampling": "mode",
    }


def _grid_profile(
    crs: Any, transform: Any, height: int, width: int, count: int, nodata: float | None
) -> dict[str, Any]:
    return {
        "crs": crs,
        "transform": transform,
        "height": int(height),
        "width": int(width),
        "count": count,
        "dtype": "uint8",
        "nodata": nodata,
    }


def _check_classes(data: np.ndarray, n_classes: int, nodata: int) -> np.ndarray:
    data = np.asarray(data)
    if not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"class map must hold integers, got dtype {data.dtype}")
    bad = (data != nodata) & ((data < 0) | (data >= n_classes))
    if bad.any():
        values = np.unique(data[bad])[:5].tolist()
        raise ValueError(
            f"class map has values {values} outside 0..{n_classes - 1} and nodata {nodata}"
        )
    return data.astype(np.uint8)


@contextlib.contextmanager
def open_class_map_writer(
    path: PathLike,
    *,
    crs: Any,
    transform: Any,
    height: int,
    width: int,
    categories: Categories = DEFAULT_CATEGORIES,
    nodata: int = CLASS_NODATA,
    description: str = "land cover class",
    **options: Any,
) -> Iterator[RasterWriter]:
    """Window-by-window class-map writer (see :func:`write_class_map`)."""
    n = len(categories.names)
    with open_raster_writer(
        path,
        _grid_profile(crs, transform, height, width, 1, nodata),
        **{**_class_map_options(categories, nodata, description), **options},
        _encode=lambda d: _check_classes(d, n, nodata),
    ) as writer:
        yield writer


def write_class_map(
    path: PathLike,
    classes: np.ndarray,
    *,
    crs: Any,
    transform: Any,
    categories: Categories = DEFAULT_CATEGORIES,
    nodata: int = CLASS_NODATA,
    description: str = "land cover class",
    **options: Any,
) -> Path:
    """Write ``(H, W)`` class indices as a paletted COG with class names; atomic.

    Values must be in ``0..len(categories.names)-1`` or ``nodata`` (255). The colour table
    paints classes with ``categories.colors`` and nodata transparent; overviews use mode
    resampling; names go into the band description, band metadata (CLASS_NAMES, CLASS_i)
    and a ``.aux.xml`` with category names and a raster attribute table.
    """
    classes = np.asarray(classes)
    if classes.ndim != 2:
        raise ValueError(f"class map must be (H, W), got shape {classes.shape} ({path})")
    with open_class_map_writer(
        path,
        crs=crs,
        transform=transform,
        height=classes.shape[0],
        width=classes.shape[1],
        categories=categories,
        nodata=nodata,
        description=description,
        **options,
    ) as writer:
        writer.write(classes)
    return Path(path)


def probabilities_to_uint8(probs: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 ``round(255 p)``; uint8 input passes unchanged."""
    probs = np.asarray(probs)
    if probs.dtype == np.uint8:
        return probs
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"probabilities must be float in [0, 1] or uint8, got {probs.dtype}")
    if np.isnan(probs).any():
        raise ValueError("probabilities contain NaN")
    return np.rint(np.clip(probs, 0.0, 1.0) * 255.0).astype(np.uint8)


@contextlib.contextmanager
def open_probability_writer(
    path: PathLike,
    *,
    crs: Any,
    transform: Any,
    height: int,
    width: int,
    class_names: Sequence[str] = CLASS_NAMES,
    nodata: int | None = None,
    **options: Any,
) -> Iterator[RasterWriter]:
    """Window-by-window probability writer (see :func:`write_probabilities`)."""
    opts: dict[str, Any] = {
        "band_descriptions": [f"p({name})" for name in class_names],
        "tags": {
            "LANDPRIOR_PRODUCT": "probabilities",
            "SCALE": "1/255",
            "CLASS_NAMES": ",".join(class_names),
        },
        "overview_resampling": "average",
        "scale": 1 / 255,  # QGIS and GDAL then show probabilities in [0, 1], not 0..255
        **options,
    }
    with open_raster_writer(
        path,
        _grid_profile(crs, transform, height, width, len(class_names), nodata),
        _encode=probabilities_to_uint8,
        **opts,
    ) as writer:
        yield writer


def write_probabilities(
    path: PathLike,
    probs: np.ndarray,
    *,
    crs: Any,
    transform: Any,
    class_names: Sequence[str] = CLASS_NAMES,
    nodata: int | None = None,
    **options: Any,
) -> Path:
    """Write ``(C, H, W)`` probabilities as uint8 bands (``round(255 p)``); atomic.

    Each band's description is ``p(<class>)``; float input is clipped to [0, 1], uint8
    input is stored as is. Overviews use average resampling.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] != len(class_names):
        raise ValueError(
            f"probabilities must be ({len(class_names)}, H, W), got shape {probs.shape} ({path})"
        )
    with open_probability_writer(
        path,
        crs=crs,
        transform=transform,
        height=probs.shape[1],
        width=probs.shape[2],
        class_names=class_names,
        nodata=nodata,
        **options,
    ) as writer:
        writer.write(probs)
    return Path(path)


def read_raster(path: PathLike, window: Window | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """``(bands, h, w)`` array and profile (transform adjusted to the window)."""
    with rasterio.open(path) as src:
        data = src.read(window=window)
        profile = dict(src.profile)
        if window is not None:
            profile.update(
                transform=src.window_transform(window), height=data.shape[1], width=data.shape[2]
            )
    return data, profile


@dataclass(frozen=True)
class ClassMap:
    """A class map read back: classes ``(H, W)`` and its georeferencing and legend."""

    classes: np.ndarray
    crs: CRS
    transform: Affine
    nodata: float | None
    names: tuple[str, ...]
    colormap: dict[int, tuple[int, int, int, int]]


def read_class_map(path: PathLike) -> ClassMap:
    """Read a class map written by :func:`write_class_map` (or any paletted GeoTIFF)."""
    with rasterio.open(path) as src:
        classes = src.read(1)
        try:
            cmap = src.colormap(1)
        except ValueError:
            cmap = {}
        crs, transform, nodata = src.crs, src.transform, src.nodata
    try:
        names = read_categories(path)
    except ValueError:
        names = ()
    return ClassMap(classes, crs, transform, nodata, names, cmap)
