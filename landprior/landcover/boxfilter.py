"""Window averages over fully overlapping square windows, in O(1) per pixel.

``box_mean(x, r)`` is the mean over the (2r+1) x (2r+1) window centred on each pixel,
truncated at the borders (the divisor counts only in-image pixels, like
``avg_pool2d(count_include_pad=False)``). Built from cumulative sums, so the cost does
not grow with the window: the 31x31 windows of the land-cover constraint cost the same
as 3x3 ones. Differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _box_sum_1d(x: Tensor, r: int, dim: int) -> Tensor:
    n = x.shape[dim]
    c = torch.cumsum(x, dim=dim)
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [1, 0]
    c = F.pad(c, pad)  # c[k] = sum of the first k entries along dim
    idx = torch.arange(n, device=x.device)
    hi = (idx + r + 1).clamp(max=n)
    lo = (idx - r).clamp(min=0)
    return c.index_select(dim, hi) - c.index_select(dim, lo)


def _counts_1d(n: int, r: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    idx = torch.arange(n, device=device)
    return ((idx + r + 1).clamp(max=n) - (idx - r).clamp(min=0)).to(dtype)


def box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean over (2r+1)^2 windows of the last two dims of ``x`` (..., H, W)."""
    if radius < 0:
        raise ValueError(f"window radius must be >= 0, got {radius}")
    if radius == 0:
        return x
    h, w = x.shape[-2], x.shape[-1]
    s = _box_sum_1d(_box_sum_1d(x, radius, x.dim() - 2), radius, x.dim() - 1)
    counts = _counts_1d(h, radius, x.device, x.dtype)[:, None] * _counts_1d(
        w, radius, x.device, x.dtype
    )[None, :]
    return s / counts
