"""Local colour clustering: the local Gaussian-mixture EM behind the MI term (paper section 4).

PAPER_NOTES, "Local colour clustering z": NAIP/255 (4 bands), average-pooled to the label
resolution, is clustered by a Gaussian mixture whose parameters vary in space. With
responsibilities ``r_k`` (B, K, H, W) and a box average ``A_r`` over a (2r+1)^2 window
(borders: mean over the in-image part, i.e. ``avg_pool2d(count_include_pad=False)``),
one EM iteration is

* local prior        ``pi_k = A_r[r_k]``
* local mean / var   ``mu_k = A_r[r_k x] / A_r[r_k]``,
  ``s2_k = max(A_r[r_k x^2] / A_r[r_k] - mu_k^2, 1e-4)``   (diagonal, per band)
* responsibilities   ``r_k = softmax_k(A_r[log N(x | mu_k, s2_k)] + log pi_k)``, where the
  log-density of pixel i is averaged over the windows j around it (the parameters of every
  window that contains i), expanded so that it costs box filters only:
  ``-1/2 sum_c [log 2pi + A[log s2] + x^2 A[1/s2] - 2 x A[mu/s2] + A[mu^2/s2]]``.

Defaults: K = 5, r = 7 (15 x 15 at 64 x 64), 30 iterations of which the first 5 use
r = 15; random initial responsibilities from a ``torch.Generator``. Box averages use
separable cumulative sums (O(1) per pixel whatever the radius), batched over chips.

:func:`global_colour_clustering` is the baseline: one scikit-learn GaussianMixture or
KMeans over all pixels of all chips, returning the same (B, K, H, W) layout.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rasterio.windows import Window

from landprior.landcover.boxfilter import box_mean

log = logging.getLogger(__name__)

GlobalMethod = Literal["gmm", "kmeans"]
GLOBAL_METHODS: tuple[str, ...] = ("gmm", "kmeans")
_EPS = 1e-8


# --------------------------------------------------------------------------- box filters


# --------------------------------------------------------------------------- input checks


def _check_image(
    x: torch.Tensor | np.ndarray, n_bands: int | None, what: str = "image"
) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4:
        raise ValueError(f"{what} has shape {tuple(t.shape)}; expected (B, C, H, W) or (C, H, W)")
    if n_bands is not None and t.shape[1] != n_bands:
        raise ValueError(
            f"{what} has {t.shape[1]} bands; expected {n_bands} (NAIP RGBN / 255, "
            "average-pooled to the label resolution)"
        )
    if not t.is_floating_point():
        raise ValueError(
            f"{what} has dtype {t.dtype}; expected floats in [0, 1] (use prepare_naip on uint8)"
        )
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or inf; fill or mask nodata first")
    return t.float()


def prepare_naip(naip: np.ndarray | torch.Tensor, factor: int = 4) -> torch.Tensor:
    """uint8 NAIP (B, 4, H, W) or (4, H, W) -> float32 /255, average-pooled x1/factor.

    Returns (B, 4, H/f, W/f); H and W must be divisible by ``factor``.
    """
    t = torch.as_tensor(np.asarray(naip) if not isinstance(naip, torch.Tensor) else naip)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4:
        raise ValueError(f"NAIP array has shape {tuple(t.shape)}; expected (B, C, H, W)")
    H, W = t.shape[-2:]
    if H % factor or W % factor:
        raise ValueError(f"NAIP is {H} x {W} px; expected sides divisible by {factor}")
    t = t.float() / 255.0
    if factor > 1:
        t = torch.nn.functional.avg_pool2d(t, factor)
    return t


# --------------------------------------------------------------------------- local EM


def _e_step(
    x: torch.Tensor,
    x2: torch.Tensor,
    resp: torch.Tensor,
    radius: int,
    var_floor: float,
) -> torch.Tensor:
    """One EM iteration: (B, C, H, W) image, (B, K, H, W) responsibilities -> new ones."""
    C = x.shape[1]
    pi = box_mean(resp, radius)  # (B, K, H, W)
    rk = resp.unsqueeze(2)  # (B, K, 1, H, W)
    moments = box_mean(torch.cat([rk * x.unsqueeze(1), rk * x2.unsqueeze(1)], dim=2), radius)
    denom = pi.unsqueeze(2) + _EPS
    mu = moments[:, :, :C] / denom  # (B, K, C, H, W)
    var = torch.clamp(moments[:, :, C:] / denom - mu * mu, min=var_floor)
    inv = 1.0 / var
    const = (torch.log(var) + mu * mu * inv).sum(dim=2, keepdim=True)  # (B, K, 1, H, W)
    stats = box_mean(torch.cat([const, inv, mu * inv], dim=2), radius)
    a_const, a_inv, a_mu = stats[:, :, :1], stats[:, :, 1 : 1 + C], stats[:, :, 1 + C :]
    xe = x.unsqueeze(1)
    quad = (xe * xe * a_inv - 2.0 * xe * a_mu).sum(dim=2) + a_const.squeeze(2)
    log_dens = -0.5 * (quad + C * math.log(2.0 * math.pi))  # (B, K, H, W)
    logits = log_dens + torch.log(pi + _EPS)
    return torch.softmax(logits, dim=1)


def local_colour_clustering(
    image: torch.Tensor | np.ndarray,
    *,
    n_components: int = 5,
    radius: int = 7,
    iterations: int = 30,
    warmup_iterations: int = 5,
    warmup_radius: int = 15,
    var_floor: float = 1e-4,
    n_bands: int | None = 4,
    generator: torch.Generator | None = None,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Local Gaussian-mixture colour clustering z of PAPER_NOTES (paper section 4).

    Args:
        image: (B, C, H, W) or (C, H, W) float in [0, 1]: NAIP/255 average-pooled to the
            label resolution (see :func:`prepare_naip`); C must equal ``n_bands``
            (None: any).
        n_components: K clusters (5).
        radius, iterations: window radius r (7 -> 15 x 15) and number of EM iterations (30).
        warmup_iterations, warmup_radius: the first iterations use the wider window (5, 15).
        var_floor: lower bound of the local per-band variance (1e-4).
        generator: seeds the random initial responsibilities.
        init: optional (B, K, H, W) initial responsibilities (overrides the random init).

    Returns:
        (B, K, H, W) float32 responsibilities, summing to 1 over K. Chips are independent,
        so a batch gives the same result as its chips one by one (given the same init).
    """
    x = _check_image(image, n_bands)
    B, _, H, W = x.shape
    if n_components < 1 or iterations < 0 or warmup_iterations < 0 or var_floor <= 0:
        raise ValueError(
            f"bad clustering parameters: n_components={n_components}, iterations={iterations},"
            f" warmup_iterations={warmup_iterations}, var_floor={var_floor}"
        )
    if init is None:
        resp = torch.rand((B, n_components, H, W), generator=generator, dtype=torch.float32)
        resp = resp / resp.sum(dim=1, keepdim=True)
    else:
        resp = torch.as_tensor(init, dtype=torch.float32)
        if resp.shape != (B, n_components, H, W):
            raise ValueError(
                f"init has shape {tuple(resp.shape)}; expected {(B, n_components, H, W)}"
            )
    x2 = x * x
    with torch.no_grad():
        for it in range(iterations):
            r = warmup_radius if it < warmup_iterations else radius
            resp = _e_step(x, x2, resp, r, var_floor)
    log.debug("local clustering of %d chips %dx%d done (%d iterations)", B, H, W, iterations)
    return resp


def global_colour_clustering(
    image: torch.Tensor | np.ndarray,
    *,
    method: GlobalMethod = "gmm",
    n_components: int = 5,
    n_bands: int | None = 4,
    random_state: int = 0,
    max_fit_pixels: int | None = 200_000,
    soft: bool = True,
) -> torch.Tensor:
    """Global baseline: one mixture / k-means over all pixels of all chips.

    Args:
        image: (B, C, H, W) float in [0, 1].
        method: ``"gmm"`` (sklearn GaussianMixture, full covariances) or ``"kmeans"``.
        max_fit_pixels: fit on a random subset of this many pixels (None: all);
            every pixel is then assigned.
        soft: GMM posteriors (True) or one-hot of the hard assignment (always for kmeans).

    Returns:
        (B, K, H, W) float32, summing to 1 over K.
    """
    if method not in GLOBAL_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {GLOBAL_METHODS}")
    x = _check_image(image, n_bands)
    B, C, H, W = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(-1, C).numpy().astype(np.float64)
    rng = np.random.default_rng(random_state)
    fit = pixels
    if max_fit_pixels is not None and len(pixels) > max_fit_pixels:
        fit = pixels[rng.choice(len(pixels), size=max_fit_pixels, replace=False)]
    if len(fit) < n_components:
        raise ValueError(f"{len(fit)} pixels cannot be split into {n_components} clusters")
    if method == "gmm":
        from sklearn.mixture import GaussianMixture

        model = GaussianMixture(n_components, random_state=random_state, reg_covar=1e-4)
        model.fit(fit)
        if soft:
            probs = model.predict_proba(pixels)
        else:
            probs = np.eye(n_components)[model.predict(pixels)]
    else:
        from sklearn.cluster import KMeans

        model = KMeans(n_components, random_state=random_state, n_init=3)
        model.fit(fit)
        probs = np.eye(n_components)[model.predict(pixels)]
    out = torch.from_numpy(probs.astype(np.float32)).reshape(B, H, W, n_components)
    return out.permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- files


def cluster_geotiff(
    naip: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    factor: int = 4,
    chip: int = 64,
    batch_size: int = 32,
    seed: int = 0,
    n_components: int = 5,
    **params: Any,
) -> Path:
    """Local colour clustering of a NAIP GeoTIFF -> K-band uint8 responsibilities GeoTIFF.

    The image (4 bands, uint8) is average-pooled by ``factor`` to the label resolution
    (a remainder of fewer than ``factor`` rows/columns is dropped), cut into ``chip`` x
    ``chip`` chips (0: the whole image as one chip), clustered in batches by
    :func:`local_colour_clustering` (``params``: radius, iterations, ...), and written row
    of chips by row of chips, atomically, on the pooled grid (same CRS, transform scaled
    by ``factor``). Cluster ids are local to each chip, as in the paper.
    """
    import rasterio

    from landprior.landcover.tiling import (
        chip_windows,
        downsample_transform,
        extract_chips,
        open_probability_output,
    )

    naip = Path(naip)
    if not naip.is_file():
        raise FileNotFoundError(f"NAIP raster {naip} does not exist")
    with rasterio.open(naip) as src:
        if src.count != 4:
            raise ValueError(f"{naip} has {src.count} bands; expected 4 (NAIP RGBN)")
        height, width = src.height // factor, src.width // factor
        if height < 1 or width < 1:
            raise ValueError(f"{naip} is {src.height} x {src.width} px, smaller than {factor}")
        size = (height, width) if chip == 0 else (min(chip, height), min(chip, width))
        chips = chip_windows(height, width, size, name=str(naip))
        rows = sorted({c.row for c in chips})
        gen = torch.Generator().manual_seed(seed)
        names = [f"cluster_{k + 1}" for k in range(n_components)]
        with open_probability_output(
            out,
            crs=src.crs,
            transform=downsample_transform(src.transform, factor),
            height=height,
            width=width,
            band_names=names,
        ) as writer:
            for row in rows:
                band = Window(0, row * factor, width * factor, size[0] * factor)
                raw = src.read(window=band)
                pooled = prepare_naip(raw, factor)[0].numpy()  # (4, size_h, width)
                in_row = [c for c in chips if c.row == row]
                shifted = [type(c)(0, c.col, c.height, c.width) for c in in_row]
                x = torch.from_numpy(extract_chips(pooled, shifted))
                resp = torch.cat(
                    [
                        local_colour_clustering(
                            x[i : i + batch_size],
                            n_components=n_components,
                            generator=gen,
                            **params,
                        )
                        for i in range(0, len(x), batch_size)
                    ]
                )
                strip = np.zeros((n_components, size[0], width), np.uint8)
                for c, r in zip(shifted, resp.numpy(), strict=True):
                    strip[:, :, c.col : c.col + c.width] = np.rint(r * 255.0)
                writer.write(strip, Window(0, row, width, size[0]))
    log.info("clustered %s -> %s (%d chips)", naip, out, len(chips))
    return Path(out)
