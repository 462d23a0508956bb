"""Weak labels: the implicit-posterior prior layer built from NLCD, roads, water and buildings.

Paper section 4 / PAPER_NOTES ("prior_from_cooccurrences_101_31"): the coarse NLCD map
(30 m, resampled to the 1 m label grid) is one-hot encoded, blurred with a Gaussian
(kernel 101 px, sigma 31 px), mapped through the co-occurrence matrix
``P(class | NLCD class)``, L1-normalised; window averages of the water (r = 2), road (r = 4)
and building (r = 4) masks are then added to the water and impervious channels and the
result is renormalised to a per-pixel distribution over the five classes.

Two deliberate differences from the authors' code:

* The co-occurrence matrix is estimated from the SOURCE city's labels
  (:func:`estimate_cooccurrence`) and applied to every city; the original estimated it
  from each target city's own labels, which leaks the evaluation labels.
* Because the class mapping is linear per pixel and the blur is linear in space,
  ``blur(onehot(nlcd)) @ C == blur(C[nlcd])``: we map first and blur five channels
  instead of seventeen (same result, 3.4x less work).

Borders use mirror padding (``d c b | a b c d | c b a``, OpenCV's default
``BORDER_REFLECT_101``). Nodata NLCD pixels are left out of the blur by normalised
convolution (their neighbours are not diluted) and come out as NaN.

Raster work follows DESIGN convention 8: :func:`weak_label_raster` is the public face on
(rio)xarray DataArrays, dispatching to ``_run_numpy`` or ``_run_dask`` (``map_overlap``
style, depth = blur radius) so whole tiles can be processed lazily; CRS, transform and
attributes survive.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rasterio.windows import Window
from scipy import ndimage

from landprior.landcover.classes import CLASS_NAMES, IGNORE_INDEX, NLCD_CODES, NUM_CLASSES

log = logging.getLogger(__name__)

N_NLCD = len(NLCD_CODES)
WATER = CLASS_NAMES.index("water")
IMPERVIOUS = CLASS_NAMES.index("impervious")
_BORDER_MODE = "mirror"
COUNT_BLOCK_ROWS = 1024
"""Rows of a tile read at once when counting co-occurrences (memory is one block)."""

Fallback = Literal["nlcd", "uniform", "marginal"]
FALLBACKS: tuple[str, ...] = ("nlcd", "uniform", "marginal")

# P(class | NLCD) read off the NLCD class definitions (our own judgement, not data):
# the documented fallback for NLCD classes the source city never shows, and the target of
# ``smoothing``. Columns: water, impervious, barren, trees, grass.
_NLCD_DEFAULT_ROWS: dict[int, tuple[float, ...]] = {
    0: (0.2, 0.2, 0.2, 0.2, 0.2),  # no data / unclassified
    11: (0.90, 0.02, 0.03, 0.02, 0.03),  # open water
    12: (0.40, 0.05, 0.50, 0.00, 0.05),  # perennial ice / snow
    21: (0.01, 0.12, 0.02, 0.25, 0.60),  # developed, open space (< 20 % impervious)
    22: (0.01, 0.35, 0.03, 0.20, 0.41),  # developed, low intensity (20-49 %)
    23: (0.01, 0.60, 0.04, 0.10, 0.25),  # developed, medium intensity (50-79 %)
    24: (0.01, 0.85, 0.04, 0.04, 0.06),  # developed, high intensity (80-100 %)
    31: (0.03, 0.05, 0.80, 0.04, 0.08),  # barren land
    41: (0.01, 0.02, 0.01, 0.86, 0.10),  # deciduous forest
    42: (0.01, 0.02, 0.01, 0.86, 0.10),  # evergreen forest
    43: (0.01, 0.02, 0.01, 0.86, 0.10),  # mixed forest
    52: (0.01, 0.02, 0.30, 0.30, 0.37),  # shrub / scrub
    71: (0.01, 0.02, 0.07, 0.10, 0.80),  # grassland / herbaceous
    81: (0.01, 0.02, 0.05, 0.10, 0.82),  # pasture / hay
    82: (0.01, 0.02, 0.15, 0.05, 0.77),  # cultivated crops
    90: (0.10, 0.01, 0.01, 0.75, 0.13),  # woody wetlands
    95: (0.25, 0.01, 0.02, 0.12, 0.60),  # emergent herbaceous wetlands
}


def nlcd_default_cooccurrence() -> np.ndarray:
    """(17, 5) float64 ``P(class | NLCD index)`` from the NLCD class definitions.

    A documented, data-free default: the fallback for NLCD rows with no source pixels.
    """
    rows = np.array([_NLCD_DEFAULT_ROWS[code] for code in NLCD_CODES], dtype=np.float64)
    return rows / rows.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- co-occurrence


def _as_list(x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(x, np.ndarray):
        return [x]
    return [np.asarray(a) for a in x]


def estimate_cooccurrence(
    nlcd_index: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | Sequence[np.ndarray],
    *,
    n_nlcd: int = N_NLCD,
    n_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
    smoothing: float = 0.0,
    fallback: Fallback = "nlcd",
) -> np.ndarray:
    """Estimate ``P(class | NLCD index)`` from paired rasters of the SOURCE city.

    Args:
        nlcd_index: (H, W) integer NLCD indices 0..n_nlcd-1, or a list of such arrays.
        labels: (H, W) class indices 0..n_classes-1 (``ignore_index`` skipped), same
            shapes as ``nlcd_index`` (a list of the same length).
        smoothing: pseudo-count mass per row spread like the fallback row
            (``(counts + s * fallback) / (n + s)``); 0 = plain frequencies.
        fallback: the distribution of rows with no data (and the smoothing target):
            ``"nlcd"`` (:func:`nlcd_default_cooccurrence`, from the NLCD class definitions;
            needs the standard 17 x 5 shape), ``"uniform"``, or ``"marginal"`` (the overall
            class frequencies of the given labels).

    Returns:
        (n_nlcd, n_classes) float64; every row sums to 1.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown fallback {fallback!r}; expected one of {FALLBACKS}")
    nl_list, lab_list = _as_list(nlcd_index), _as_list(labels)
    if len(nl_list) != len(lab_list):
        raise ValueError(
            f"got {len(nl_list)} NLCD arrays but {len(lab_list)} label arrays; expected pairs"
        )
    counts = np.zeros((n_nlcd, n_classes), dtype=np.float64)
    for i, (nl, lab) in enumerate(zip(nl_list, lab_list, strict=True)):
        counts += cooccurrence_counts(
            nl, lab, n_nlcd=n_nlcd, n_classes=n_classes, ignore_index=ignore_index, what=f"pair {i}"
        )
    return cooccurrence_from_counts(counts, smoothing=smoothing, fallback=fallback)


def cooccurrence_counts(
    nlcd_index: np.ndarray,
    labels: np.ndarray,
    *,
    n_nlcd: int = N_NLCD,
    n_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
    what: str = "rasters",
) -> np.ndarray:
    """(n_nlcd, n_classes) float64 pixel counts of one (H, W) NLCD / label pair."""
    nl, lab = np.asarray(nlcd_index), np.asarray(labels)
    if nl.shape != lab.shape:
        raise ValueError(
            f"{what}: NLCD shape {nl.shape} != label shape {lab.shape}; "
            "expected rasters on the same grid"
        )
    nl = nl.astype(np.int64, copy=False).ravel()
    lab = lab.astype(np.int64, copy=False).ravel()
    keep = (lab != ignore_index) & (lab >= 0) & (lab < n_classes)
    bad_nlcd = keep & ((nl < 0) | (nl >= n_nlcd))
    if bad_nlcd.any():
        raise ValueError(
            f"{what}: NLCD index {int(nl[bad_nlcd][0])} outside 0..{n_nlcd - 1}; "
            "convert raw NLCD codes with classes.nlcd_codes_to_index first"
        )
    flat = np.bincount(nl[keep] * n_classes + lab[keep], minlength=n_nlcd * n_classes)
    return flat.reshape(n_nlcd, n_classes).astype(np.float64)


def cooccurrence_from_counts(
    counts: np.ndarray, *, smoothing: float = 0.0, fallback: Fallback = "nlcd"
) -> np.ndarray:
    """Row-normalise (n_nlcd, n_classes) counts (see :func:`estimate_cooccurrence`)."""
    counts = np.asarray(counts, dtype=np.float64)
    n_nlcd, n_classes = counts.shape
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown fallback {fallback!r}; expected one of {FALLBACKS}")
    if fallback == "nlcd" and (n_nlcd, n_classes) != (N_NLCD, NUM_CLASSES):
        raise ValueError(
            f"fallback 'nlcd' needs n_nlcd={N_NLCD}, n_classes={NUM_CLASSES}; "
            f"got {n_nlcd}, {n_classes} (use 'uniform' or 'marginal')"
        )
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    total = counts.sum()
    if fallback == "nlcd":
        default = nlcd_default_cooccurrence()
    elif fallback == "marginal" and total > 0:
        default = np.broadcast_to(counts.sum(axis=0) / total, counts.shape)
    else:
        default = np.full(counts.shape, 1.0 / n_classes)
    n = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (counts + smoothing * default) / (n + smoothing)
    empty = n[:, 0] == 0
    out[empty] = default[empty]
    log.debug("co-occurrence from %d pixels; %d NLCD rows without data", total, empty.sum())
    return out


# --------------------------------------------------------------------------- numpy kernel


def gaussian_kernel1d(size: int, sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian with ``size`` taps (odd), float32: OpenCV's getGaussianKernel."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"blur kernel size must be a positive odd number, got {size}")
    if sigma <= 0:
        raise ValueError(f"blur sigma must be > 0, got {sigma}")
    t = np.arange(size, dtype=np.float64) - size // 2
    k = np.exp(-(t**2) / (2.0 * sigma**2))
    return (k / k.sum()).astype(np.float32)


def _blur(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable correlation over the last two axes of (..., H, W) float32."""
    y = ndimage.correlate1d(x, kernel, axis=-2, mode=_BORDER_MODE)
    return ndimage.correlate1d(y, kernel, axis=-1, mode=_BORDER_MODE)


def _window_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1) x (2r+1) window, mirror borders; (H, W) float32."""
    if radius == 0:
        return x
    return ndimage.uniform_filter(x, size=2 * radius + 1, mode=_BORDER_MODE)


def _check_cooccurrence(cooc: np.ndarray) -> np.ndarray:
    cooc = np.asarray(cooc, dtype=np.float64)
    if cooc.ndim != 2 or cooc.shape[1] != NUM_CLASSES:
        raise ValueError(
            f"co-occurrence matrix has shape {cooc.shape}; expected (n_nlcd, {NUM_CLASSES})"
        )
    if not np.isfinite(cooc).all() or (cooc < 0).any():
        raise ValueError("co-occurrence matrix must be finite and non-negative")
    return cooc


def _run_numpy(
    nlcd_index: np.ndarray,
    cooccurrence: np.ndarray,
    roads: np.ndarray | None,
    water: np.ndarray | None,
    buildings: np.ndarray | None,
    valid: np.ndarray | None,
    *,
    blur_kernel: int,
    blur_sigma: float,
    water_radius: int,
    road_radius: int,
    building_radius: int,
) -> np.ndarray:
    """The recipe on one in-memory block: (H, W) inputs -> (5, H, W) float32."""
    n_nlcd = cooccurrence.shape[0]
    idx = np.asarray(nlcd_index)
    if valid is not None:
        idx = np.where(valid, idx, 0)
    idx = idx.astype(np.intp, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= n_nlcd):
        raise ValueError(
            f"NLCD values span {idx.min()}..{idx.max()}; expected indices 0..{n_nlcd - 1} "
            "(raw codes? convert with classes.nlcd_codes_to_index or pass nlcd_is_raw=True)"
        )
    lut = cooccurrence.T.astype(np.float32)  # (5, n_nlcd)
    # map through P(class | NLCD) first, then blur (linear: equal to blurring the one-hot)
    mapped = lut[:, idx]  # (5, H, W)
    kernel = gaussian_kernel1d(blur_kernel, blur_sigma)
    if valid is not None:
        vmask = valid.astype(np.float32)
        mapped *= vmask
        prior = _blur(mapped, kernel)
        weight = _blur(vmask, kernel)
        with np.errstate(invalid="ignore", divide="ignore"):
            prior /= weight
    else:
        prior = _blur(mapped, kernel)
    with np.errstate(invalid="ignore", divide="ignore"):
        prior /= prior.sum(axis=0, keepdims=True)
    for name, layer, radius, channel in (
        ("water", water, water_radius, WATER),
        ("roads", roads, road_radius, IMPERVIOUS),
        ("buildings", buildings, building_radius, IMPERVIOUS),
    ):
        if layer is not None:
            mask = np.asarray(layer, dtype=np.float32)
            if mask.size and (mask.min() < 0 or mask.max() > 1):
                raise ValueError(
                    f"{name} raster spans {mask.min():g}..{mask.max():g}; expected a 0/1 mask"
                )
            prior[channel] += _window_mean(mask, radius)
    with np.errstate(invalid="ignore", divide="ignore"):
        prior /= prior.sum(axis=0, keepdims=True)
    if valid is not None:
        prior[:, ~valid] = np.nan
    return prior


def _check_params(kernel: int, sigma: float, *radii: int) -> None:
    gaussian_kernel1d(kernel, sigma)
    if any(r < 0 for r in radii):
        raise ValueError(f"window radii must be >= 0, got water/road/building radii {radii}")


def _check_layer(name: str, layer: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if layer is None:
        return None
    arr = np.asarray(layer)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != shape:
        raise ValueError(f"{name} raster has shape {arr.shape}; expected {shape} like the NLCD")
    arr = arr.astype(np.float32, copy=False)
    if np.isnan(arr).any():
        raise ValueError(f"{name} raster contains NaN; expected a 0/1 mask (nodata as 0)")
    return arr


def weak_label_prior(
    nlcd_index: np.ndarray,
    cooccurrence: np.ndarray,
    *,
    roads: np.ndarray | None = None,
    water: np.ndarray | None = None,
    buildings: np.ndarray | None = None,
    blur_kernel: int = 101,
    blur_sigma: float = 31.0,
    water_radius: int = 2,
    road_radius: int = 4,
    building_radius: int = 4,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """The weak-label prior of PAPER_NOTES / paper section 4 on in-memory arrays.

    Args:
        nlcd_index: (H, W) NLCD indices 0..16 on the label grid (raw codes: convert with
            ``classes.nlcd_codes_to_index``).
        cooccurrence: (17, 5) ``P(class | NLCD)`` from :func:`estimate_cooccurrence`
            on the source city.
        roads, water, buildings: optional (H, W) 0/1 masks; their window averages
            (radius ``road_radius`` = 4, ``water_radius`` = 2, ``building_radius`` = 4)
            are added to the impervious / water channels before renormalising.
        blur_kernel, blur_sigma: the Gaussian blur (101 taps, sigma 31 px).
        valid: optional (H, W) bool; False pixels (nodata) are left out of the blur and
            come out as NaN.

    Returns:
        (5, H, W) float32; each valid pixel sums to 1.
    """
    nlcd = np.asarray(nlcd_index)
    if nlcd.ndim == 3 and nlcd.shape[0] == 1:
        nlcd = nlcd[0]
    if nlcd.ndim != 2:
        raise ValueError(f"NLCD raster has shape {nlcd.shape}; expected (H, W)")
    if not np.issubdtype(nlcd.dtype, np.integer):
        if np.isnan(nlcd).any() and valid is None:
            raise ValueError("NLCD raster contains NaN; pass valid= (nodata mask) or fill it")
    cooc = _check_cooccurrence(cooccurrence)
    _check_params(blur_kernel, blur_sigma, water_radius, road_radius, building_radius)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != nlcd.shape:
            raise ValueError(f"valid mask has shape {valid.shape}; expected {nlcd.shape}")
    check = nlcd[valid] if valid is not None else nlcd
    if check.size and (np.nanmin(check) < 0 or np.nanmax(check) >= cooc.shape[0]):
        raise ValueError(
            f"NLCD values span {np.nanmin(check)}..{np.nanmax(check)}; expected indices "
            f"0..{cooc.shape[0] - 1} (raw codes? use classes.nlcd_codes_to_index)"
        )
    if np.issubdtype(nlcd.dtype, np.floating):
        nlcd = np.nan_to_num(nlcd).astype(np.int64)
    return _run_numpy(
        nlcd,
        cooc,
        _check_layer("roads", roads, nlcd.shape),
        _check_layer("water", water, nlcd.shape),
        _check_layer("buildings", buildings, nlcd.shape),
        valid,
        blur_kernel=blur_kernel,
        blur_sigma=blur_sigma,
        water_radius=water_radius,
        road_radius=road_radius,
        building_radius=building_radius,
    )


# --------------------------------------------------------------------------- uint8 layer


def prior_to_uint8(p: np.ndarray) -> np.ndarray:
    """(5, H, W) probabilities -> uint8 x255, rounded (the EnviroAtlas prior layer; NaN -> 0)."""
    p = np.asarray(p, dtype=np.float32)
    return np.clip(np.rint(np.nan_to_num(p, nan=0.0) * 255.0), 0, 255).astype(np.uint8)


def prior_from_uint8(u: np.ndarray, *, renormalise: bool = True) -> np.ndarray:
    """(5, H, W) uint8 x255 -> float32 probabilities (renormalised per pixel by default).

    Pixels whose bands are all 0 (nodata) come out as NaN when renormalising.
    """
    p = np.asarray(u).astype(np.float32) / 255.0
    if renormalise:
        with np.errstate(invalid="ignore", divide="ignore"):
            s = p.sum(axis=0, keepdims=True)
            p = np.where(s > 0, p / s, np.nan).astype(np.float32)
    return p


# --------------------------------------------------------------------------- xarray / dask


def _squeeze_band(da_: Any, name: str) -> Any:
    if da_.ndim == 3:
        if da_.shape[0] != 1:
            raise ValueError(
                f"{name} raster has {da_.shape[0]} bands; expected a single-band layer"
            )
        da_ = da_.isel({da_.dims[0]: 0}, drop=True)
    if da_.ndim != 2:
        raise ValueError(f"{name} raster has dims {da_.dims}; expected (y, x)")
    return da_


def _same_grid(ref: Any, other: Any, name: str) -> None:
    if other.shape != ref.shape:
        raise ValueError(f"{name} raster has shape {other.shape}; expected {ref.shape} (NLCD grid)")
    try:
        ref_crs, other_crs = ref.rio.crs, other.rio.crs
    except AttributeError:  # plain arrays (no rioxarray accessor): nothing to compare
        return
    if ref_crs is not None and other_crs is not None and ref_crs != other_crs:
        raise ValueError(f"{name} raster CRS {other_crs} != NLCD CRS {ref_crs}")
    if ref_crs is not None and other_crs is not None:
        a, b = ref.rio.transform(), other.rio.transform()
        if not np.allclose(tuple(a)[:6], tuple(b)[:6], rtol=0, atol=1e-6 * abs(a.a)):
            raise ValueError(
                f"{name} raster origin ({b.c:.3f}, {b.f:.3f}), pixel {b.a:g} differs from the "
                f"NLCD grid's ({a.c:.3f}, {a.f:.3f}), pixel {a.a:g}; resample first"
            )


def _nodata_of(da_: Any) -> Any:
    try:
        nd = da_.rio.nodata
        if nd is None:
            nd = da_.rio.encoded_nodata
    except AttributeError:  # no rioxarray accessor: fall back to the attributes
        nd = da_.attrs.get("_FillValue", da_.attrs.get("nodata"))
    return nd


def _valid_mask(arr: Any, nodata: Any) -> Any:
    """Bool mask (numpy or dask, lazily) of pixels that are not nodata / NaN."""
    valid = arr == arr  # False at NaN, works for numpy and dask
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        valid = valid & (arr != nodata)
    return valid


def _run_dask(
    nlcd: Any,
    cooccurrence: np.ndarray,
    layers: dict[str, Any],
    valid: Any,
    **params: Any,
) -> Any:
    """Lazy version: overlap every block by the largest radius, run the numpy kernel, trim.

    Borders are handled exactly like :func:`_run_numpy` (``boundary="none"`` leaves the
    kernel's own mirror padding at the tile edge), so both paths give the same numbers.
    """
    import dask.array as da
    from dask.array.overlap import ensure_minimum_chunksize, overlap, trim_internal

    depth_px = max(
        params["blur_kernel"] // 2,
        params["water_radius"],
        params["road_radius"],
        params["building_radius"],
    )
    # every chunk must be at least as large as the overlap; all inputs share one chunking
    chunks = tuple(ensure_minimum_chunksize(depth_px, c) for c in da.asarray(nlcd).chunks)
    names = ["roads", "water", "buildings"]
    arrays = [nlcd] + [layers[n] for n in names if layers[n] is not None] + [valid]
    arrays = [da.asarray(a).rechunk(chunks) for a in arrays]
    present = [n for n in names if layers[n] is not None]
    depth = {0: depth_px, 1: depth_px}
    padded = [overlap(a, depth=depth, boundary="none") for a in arrays]

    def block(nl: np.ndarray, *rest: np.ndarray) -> np.ndarray:
        *masks, ok = rest
        given = dict(zip(present, masks, strict=True))
        return _run_numpy(
            nl,
            cooccurrence,
            given.get("roads"),
            given.get("water"),
            given.get("buildings"),
            ok,
            **params,
        )

    out = da.map_blocks(
        block,
        *padded,
        new_axis=0,
        chunks=((NUM_CLASSES,), *padded[0].chunks),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), dtype=np.float32),
    )
    return trim_internal(out, {0: 0, 1: depth_px, 2: depth_px}, boundary="none")


def weak_label_raster(
    nlcd: Any,
    cooccurrence: np.ndarray,
    *,
    roads: Any = None,
    water: Any = None,
    buildings: Any = None,
    blur_kernel: int = 101,
    blur_sigma: float = 31.0,
    water_radius: int = 2,
    road_radius: int = 4,
    building_radius: int = 4,
    nlcd_is_raw: bool = False,
    as_uint8: bool = False,
) -> Any:
    """Weak-label prior of whole rasters as a georeferenced DataArray (paper section 4).

    Args:
        nlcd: xarray DataArray (y, x) or (1, y, x) of NLCD indices 0..16 (raw codes when
            ``nlcd_is_raw``), numpy- or dask-backed (``rioxarray.open_rasterio(chunks=...)``).
            Its nodata (``rio.nodata``/``_FillValue``) and NaN pixels are left out.
        cooccurrence: (17, 5) ``P(class | NLCD)`` of the SOURCE city.
        roads, water, buildings: optional DataArrays on the same grid (0/1; nodata -> 0).
        as_uint8: return the x255 uint8 layer (nodata pixels -> 0 in every band).

    Returns:
        DataArray (band, y, x) with ``band`` = class names; float32 with NaN at nodata, or
        uint8. Dask in -> dask out (lazy). CRS, transform and attributes of ``nlcd`` are kept.
    """
    import xarray as xr

    if not isinstance(nlcd, xr.DataArray):
        raise TypeError(f"nlcd must be an xarray.DataArray, got {type(nlcd).__name__}")
    cooc = _check_cooccurrence(cooccurrence)
    nodata = _nodata_of(nlcd)
    nl2 = _squeeze_band(nlcd, "nlcd")
    data = nl2.data
    valid = _valid_mask(data, nodata)
    if nlcd_is_raw:
        lut = np.zeros(256, dtype=np.uint8)
        for i, code in enumerate(NLCD_CODES):
            lut[code] = i

        def to_index(a: np.ndarray) -> np.ndarray:
            a = np.nan_to_num(np.asarray(a, dtype=np.float64)).astype(np.int64)
            return lut[np.clip(a, 0, 255)]

        data = (
            data.map_blocks(to_index, dtype=np.uint8) if hasattr(data, "dask") else to_index(data)
        )
    layers: dict[str, Any] = {}
    for name, layer in (("roads", roads), ("water", water), ("buildings", buildings)):
        if layer is None:
            layers[name] = None
            continue
        if not isinstance(layer, xr.DataArray):
            raise TypeError(f"{name} must be an xarray.DataArray, got {type(layer).__name__}")
        l2 = _squeeze_band(layer, name)
        _same_grid(nl2, l2, name)
        ok = _valid_mask(l2.data, _nodata_of(layer))
        layers[name] = l2.data.astype(np.float32) * ok  # nodata -> 0
    params = dict(
        blur_kernel=blur_kernel,
        blur_sigma=blur_sigma,
        water_radius=water_radius,
        road_radius=road_radius,
        building_radius=building_radius,
    )
    # validate kernel parameters eagerly (also for the lazy path)
    _check_params(blur_kernel, blur_sigma, water_radius, road_radius, building_radius)
    if hasattr(data, "dask"):
        import dask.array as da

        lay = {
            k: (None if v is None else (v if hasattr(v, "dask") else da.asarray(v)))
            for k, v in layers.items()
        }
        out = _run_dask(data, cooc, lay, valid, **params)
        if as_uint8:
            out = out.map_blocks(prior_to_uint8, dtype=np.uint8)
    else:
        vals = np.asarray(data)
        ok = np.asarray(valid)
        idx = np.where(ok, np.nan_to_num(vals), 0).astype(np.int64)
        if ok.any() and (idx[ok].min() < 0 or idx[ok].max() >= cooc.shape[0]):
            raise ValueError(
                f"NLCD values span {idx[ok].min()}..{idx[ok].max()}; expected indices "
                f"0..{cooc.shape[0] - 1} (raw codes? pass nlcd_is_raw=True)"
            )
        out = _run_numpy(
            idx,
            cooc,
            *(
                None if layers[k] is None else np.asarray(layers[k])
                for k in ("roads", "water", "buildings")
            ),
            None if ok.all() else ok,
            **params,
        )
        if as_uint8:
            out = prior_to_uint8(out)
    coords = {k: v for k, v in nl2.coords.items() if set(v.dims) <= set(nl2.dims) or not v.dims}
    result = xr.DataArray(
        out,
        dims=("band", *nl2.dims),
        coords={**coords, "band": list(CLASS_NAMES)},
        attrs={
            k: v
            for k, v in nlcd.attrs.items()
            if k not in ("_FillValue", "nodata", "scale_factor", "add_offset", "long_name")
        },
        name="weak_label_prior",
    )
    result.attrs["long_name"] = tuple(CLASS_NAMES)
    result.attrs["description"] = (
        "weak-label prior P(class) (prior_from_cooccurrences_101_31 recipe, paper section 4)"
    )
    try:
        if nlcd.rio.crs is not None:
            result = result.rio.write_crs(nlcd.rio.crs)
            result = result.rio.write_transform(nlcd.rio.transform())
        if not as_uint8:
            result = result.rio.write_nodata(np.nan, encoded=False)
    except AttributeError as err:  # pragma: no cover - plain xarray without rioxarray
        log.warning("weak labels carry no georeferencing (rioxarray unavailable): %s", err)
    return result


# --------------------------------------------------------------------------- files


def save_cooccurrence(
    path: str | os.PathLike[str], cooccurrence: np.ndarray, *, source: str = ""
) -> Path:
    """Write a (17, 5) co-occurrence matrix as JSON (rows keyed by NLCD code), atomically."""
    cooc = _check_cooccurrence(cooccurrence)
    if cooc.shape != (N_NLCD, NUM_CLASSES):
        raise ValueError(f"co-occurrence has shape {cooc.shape}; expected {(N_NLCD, NUM_CLASSES)}")
    doc = {
        "what": "P(class | NLCD class), rows = NLCD codes, columns = classes",
        "source": source,
        "classes": list(CLASS_NAMES),
        "nlcd_codes": list(NLCD_CODES),
        "matrix": cooc.tolist(),
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_cooccurrence(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a co-occurrence matrix from :func:`save_cooccurrence` JSON or a ``.npy`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"co-occurrence file {path} does not exist")
    expected = "a .npy array or JSON with 'matrix' (data weak-labels --save-cooccurrence)"
    try:  # only reading and parsing here; the checks on what was read follow
        if path.suffix == ".npy":
            cooc: object = np.load(path, allow_pickle=False)
        else:
            cooc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a co-occurrence file (expected {expected})") from err
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read ({err}); expected {expected}") from err
    if isinstance(cooc, dict):
        codes = cooc.get("nlcd_codes", list(NLCD_CODES))
        if not isinstance(codes, list) or codes != list(NLCD_CODES):
            raise ValueError(f"{path}: field 'nlcd_codes' differs from {list(NLCD_CODES)}")
        try:
            cooc = np.asarray(cooc["matrix"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a co-occurrence file (expected {expected})") from err
    elif not isinstance(cooc, np.ndarray):
        raise ValueError(f"{path}: not a co-occurrence file (expected {expected})")
    try:
        return _check_cooccurrence(cooc)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def source_cooccurrence(
    root: str | os.PathLike[str],
    city: str,
    *,
    split: str = "train",
    mapping: str = "prior",
    smoothing: float = 0.0,
    fallback: Fallback = "nlcd",
) -> np.ndarray:
    """``P(class | NLCD)`` from the SOURCE city's tiles of an EnviroAtlas-layout root.

    Reads the ``nlcd`` and high-res label layers in blocks of rows (counts accumulate, so
    memory is one block). Never pass a target city here: that is the original's label leak.
    """
    from rasterio.windows import Window

    from landprior.landcover.enviroatlas import EnviroAtlas

    dataset = EnviroAtlas(root)
    tiles = dataset.tiles(city, split)
    if not tiles:
        raise ValueError(f"{root}: city {city!r} has no {split!r} tiles")
    counts = np.zeros((N_NLCD, NUM_CLASSES))
    for tile in tiles:
        grid = dataset.grid(tile, ["nlcd", "lc"])  # both layers on one grid, or a named error
        for row in range(0, grid.height, COUNT_BLOCK_ROWS):
            window = Window(0, row, grid.width, min(COUNT_BLOCK_ROWS, grid.height - row))
            nlcd = dataset.read(tile, "nlcd", window)[0]
            labels = dataset.read_labels(tile, mapping, window)  # type: ignore[arg-type]
            counts += cooccurrence_counts(nlcd, labels, what=f"tile {tile.key}")
    log.info("co-occurrence of %s/%s from %d tiles", city, split, len(tiles))
    return cooccurrence_from_counts(counts, smoothing=smoothing, fallback=fallback)


def _open_layer(path: str | os.PathLike[str], what: str, chunk: int) -> Any:
    import rioxarray

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} raster {path} does not exist")
    try:
        return rioxarray.open_rasterio(
            path, chunks={"band": -1, "y": chunk, "x": chunk}, lock=False, cache=False
        )
    except Exception as err:
        raise ValueError(f"cannot read {what} raster {path}: {err}") from err


def write_weak_label_geotiff(
    out: str | os.PathLike[str],
    nlcd: str | os.PathLike[str],
    cooccurrence: np.ndarray,
    *,
    roads: str | os.PathLike[str] | None = None,
    water: str | os.PathLike[str] | None = None,
    buildings: str | os.PathLike[str] | None = None,
    nlcd_is_raw: bool = False,
    chunk: int = 512,
    scheduler: str = "synchronous",
    **params: Any,
) -> Path:
    """Compute the 5-band uint8 prior layer of whole GeoTIFFs lazily and write it atomically.

    The inputs are opened as dask arrays in ``chunk`` x ``chunk`` blocks; the output is
    computed and written one chunk row at a time, so memory is bounded by a few chunk rows
    (plus the 101-px blur halo), not by the tile. ``params`` go to
    :func:`weak_label_raster` (blur_kernel, blur_sigma, radii). Nodata pixels are 0 in
    every band. CRS and transform are those of the NLCD raster.
    """
    from landprior.landcover.tiling import open_probability_output

    if chunk < 16:
        raise ValueError(f"chunk must be >= 16 px, got {chunk}")
    nl = _open_layer(nlcd, "NLCD", chunk)
    layers = {
        name: None if p is None else _open_layer(p, name, chunk)
        for name, p in (("roads", roads), ("water", water), ("buildings", buildings))
    }
    for (name, layer), path in zip(layers.items(), (roads, water, buildings), strict=True):
        if layer is None:
            continue
        try:  # blame the companion file, not the NLCD, for its own band count or grid
            _same_grid(_squeeze_band(nl, "NLCD"), _squeeze_band(layer, name), name)
        except ValueError as err:
            raise ValueError(f"{path}: {err} (NLCD: {nlcd})") from None
    try:
        result = weak_label_raster(
            nl, cooccurrence, nlcd_is_raw=nlcd_is_raw, as_uint8=True, **layers, **params
        )
    except ValueError as err:
        raise ValueError(f"{nlcd}: {err}") from None
    arr = result.data
    height, width = arr.shape[1:]
    with open_probability_output(
        out,
        crs=nl.rio.crs,
        transform=nl.rio.transform(),
        height=height,
        width=width,
        band_names=CLASS_NAMES,
    ) as writer:
        row = 0
        for rows in arr.chunks[1]:
            try:
                block = np.asarray(arr[:, row : row + rows, :].compute(scheduler=scheduler))
            except ValueError as err:
                raise ValueError(f"{nlcd} (rows {row}..{row + rows}): {err}") from None
            writer.write(block, Window(0, row, width, rows))
            row += rows
    log.info("wrote weak labels %s (%d x %d)", out, height, width)
    return Path(out)
