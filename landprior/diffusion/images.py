"""Image grids of samples, written with matplotlib (no torchvision).

Samples are (N, C, H, W) in [-1, 1]. One channel is shown in grey, three as RGB, four as the
RGB of the first three (e.g. NAIP RGBN); any other channel count is read as class scores
(e.g. one-hot land cover) and shown as the argmax class through a palette.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from landprior.fileio import atomic_output

__all__ = ["DEFAULT_PALETTE", "make_grid", "save_grid", "to_rgb"]

# Distinct colours for class maps (tab10-like), RGB in [0, 1].
DEFAULT_PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.12, 0.47, 0.71),
    (0.50, 0.50, 0.50),
    (0.84, 0.70, 0.45),
    (0.17, 0.50, 0.17),
    (0.60, 0.85, 0.40),
    (0.84, 0.15, 0.16),
    (0.58, 0.40, 0.74),
    (0.55, 0.34, 0.29),
    (0.89, 0.47, 0.76),
    (0.09, 0.75, 0.81),
)


def _as_numpy(images: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(images, Tensor):
        images = images.detach().to("cpu", torch.float32).numpy()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"images must have shape (N, C, H, W) with N >= 1, got {images.shape}")
    return images


def to_rgb(
    images: Tensor | np.ndarray,
    palette: Sequence[Sequence[float]] | None = None,
) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, 3) RGB in [0, 1] (grey repeated for C = 1)."""
    x = _as_numpy(images)
    c = x.shape[1]
    if c in (1, 3, 4):
        rgb = np.repeat(x, 3, axis=1) if c == 1 else x[:, :3]
        rgb = np.clip((rgb + 1.0) / 2.0, 0.0, 1.0)
        return np.ascontiguousarray(rgb.transpose(0, 2, 3, 1))
    colours = np.asarray(palette if palette is not None else DEFAULT_PALETTE, dtype=np.float32)
    if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) < c:
        raise ValueError(
            f"palette must give at least {c} RGB colours for {c}-channel class maps, got shape "
            f"{colours.shape}"
        )
    return colours[x.argmax(axis=1)]


def make_grid(
    images: Tensor | np.ndarray,
    nrow: int | None = None,
    padding: int = 2,
    pad_value: float = 1.0,
    palette: Sequence[Sequence[float]] | None = None,
) -> np.ndarray:
    """Tile N images into one RGB array (rows * (H + p) + p, cols * (W + p) + p, 3) in [0, 1].

    ``nrow`` is the number of images per row (default: about sqrt(N)).
    """
    rgb = to_rgb(images, palette)
    n, h, w, _ = rgb.shape
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    cols = nrow if nrow is not None else math.ceil(math.sqrt(n))
    if cols < 1:
        raise ValueError(f"nrow must be positive, got {nrow}")
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    grid = np.full(
        (rows * (h + padding) + padding, cols * (w + padding) + padding, 3),
        pad_value,
        dtype=np.float32,
    )
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top : top + h, left : left + w] = rgb[i]
    return grid


def save_grid(
    images: Tensor | np.ndarray,
    path: str | Path,
    nrow: int | None = None,
    padding: int = 2,
    palette: Sequence[Sequence[float]] | None = None,
    scale: int = 1,
) -> Path:
    """Write :func:`make_grid` of ``images`` to ``path`` (PNG via matplotlib).

    ``scale`` repeats every pixel (nearest neighbour) so small images stay visible.
    """
    from matplotlib import image as mpimg  # local: keep matplotlib off the import path

    grid = make_grid(images, nrow=nrow, padding=padding, palette=palette)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    with atomic_output(path) as tmp:
        mpimg.imsave(tmp, grid, format=path.suffix.lstrip(".") or "png")
    return path
