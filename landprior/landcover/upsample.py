"""Upsampling coarse class probabilities to the imagery's resolution.

The segmenters run at the label prior's resolution (x1/4: 4 m for 1 m NAIP) and their
probabilities must come back to the 1 m grid the maps are evaluated and used on. Plain
bilinear interpolation gives 4 m blobs; *joint bilateral upsampling* (Kopf, Cohen,
Lischinski and Uyttendaele, "Joint bilateral upsampling", SIGGRAPH 2007) lets the 1 m
image decide, pixel by pixel, which neighbouring coarse cell's probabilities it takes:

    p(x) = sum_q w(x, q) P(q) / sum_q w(x, q),
    w(x, q) = exp(-|I(x) - I_q|^2 / (2 sigma_r^2)) * exp(-|x - c_q|^2 / (2 sigma_s^2)),

over the 3 x 3 coarse cells q around the pixel x, with I(x) the pixel's bands, I_q the
cell's mean bands (the model's own pooled input) and c_q the cell centre. Class maps then
follow roads, roof edges and field borders that the coarse model only sees as mixtures.
Training-free, so every segmenter row of the results table gets it the same way.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

UpsampleMode = Literal["guided", "bilinear"]
UPSAMPLE_MODES: tuple[str, ...] = get_args(UpsampleMode)
DEFAULT_SIGMA_RANGE = 0.05
"""Range sigma in reflectance units ([0, 1] bands); chosen on the SOURCE city's test tiles
with the source model (0.02-0.12 within 0.2 points of each other there)."""
DEFAULT_SIGMA_SPACE = 1.0
"""Spatial sigma in coarse (model) pixels."""


def _check(probs: Tensor, guide: Tensor, factor: int) -> None:
    if probs.dim() != 4 or guide.dim() != 4 or probs.shape[0] != guide.shape[0]:
        raise ValueError(
            f"probs must be (B, K, h, w) and guide (B, C, H, W) with the same B; got "
            f"{tuple(probs.shape)} and {tuple(guide.shape)}"
        )
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    h, w = probs.shape[-2:]
    if tuple(guide.shape[-2:]) != (h * factor, w * factor):
        raise ValueError(
            f"guide grid {tuple(guide.shape[-2:])} is not the probability grid {(h, w)} "
            f"x factor {factor}"
        )


def guided_upsample(
    probs: Tensor,
    guide: Tensor,
    factor: int,
    *,
    sigma_range: float = DEFAULT_SIGMA_RANGE,
    sigma_space: float = DEFAULT_SIGMA_SPACE,
) -> Tensor:
    """Joint bilateral upsampling of (B, K, h, w) probabilities with a (B, C, H, W) guide.

    ``H = h * factor``; returns (B, K, H, W), each pixel a convex combination of the 3 x 3
    neighbouring cells' probabilities (so distributions stay distributions). Borders
    replicate the edge cells.
    """
    _check(probs, guide, factor)
    if not (sigma_range > 0 and sigma_space > 0):
        raise ValueError(
            f"sigma_range and sigma_space must be > 0, got {sigma_range}, {sigma_space}"
        )
    if factor == 1:
        return probs
    guide = guide.to(probs.dtype)
    b, k, h, w = probs.shape
    f = factor
    # (B, C, h, f, w, f): pixel (i * f + a, j * f + c) of cell (i, j) at [..., i, a, j, c];
    # coarse tensors broadcast over the two sub-cell axes instead of being repeated
    pixels = guide.reshape(b, -1, h, f, w, f)
    cells = F.avg_pool2d(guide, f)  # the model's own pooled input, (B, C, h, w)
    pad_p = F.pad(probs, (1, 1, 1, 1), mode="replicate")
    pad_g = F.pad(cells, (1, 1, 1, 1), mode="replicate")
    # each pixel's offset from its own cell's centre, in cell units: (f,)
    pos = (torch.arange(f, dtype=probs.dtype, device=probs.device) + 0.5) / f - 0.5
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    logits = []
    for dy, dx in offsets:
        cell_g = pad_g[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        d_range = (pixels - cell_g[:, :, :, None, :, None]).square().sum(1)  # (B, h, f, w, f)
        d_space = (pos - dy).square()[:, None, None] + (pos - dx).square()  # (f, 1, f)
        logits.append(-d_range / (2 * sigma_range**2) - d_space / (2 * sigma_space**2))
    weights = torch.softmax(torch.stack(logits, 1), dim=1)  # (B, 9, h, f, w, f)
    out = probs.new_zeros((b, k, h, f, w, f))
    for j, (dy, dx) in enumerate(offsets):
        cell_p = pad_p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        out += weights[:, j : j + 1] * cell_p[:, :, :, None, :, None]
    return out.reshape(b, k, h * f, w * f)


def upsample_probabilities(
    probs: Tensor,
    guide: Tensor,
    factor: int,
    mode: UpsampleMode = "guided",
    *,
    sigma_range: float = DEFAULT_SIGMA_RANGE,
) -> Tensor:
    """(B, K, h, w) -> (B, K, h * factor, w * factor) by ``mode`` ("guided" or "bilinear")."""
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsampling {mode!r}; expected one of {UPSAMPLE_MODES}")
    if mode == "bilinear":
        _check(probs, guide, factor)
        if factor == 1:
            return probs
        return F.interpolate(probs, scale_factor=factor, mode="bilinear", align_corners=False)
    return guided_upsample(probs, guide, factor, sigma_range=sigma_range)
