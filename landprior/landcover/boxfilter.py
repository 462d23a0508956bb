"""Window means over fully overlapping square windows (the one implementation).

``box_mean(x, r)`` is the mean over the (2r+1) x (2r+1) window centred on each pixel,
truncated at the borders (the divisor counts only in-image pixels, like
``avg_pool2d(count_include_pad=False)``, for any radius, also r >= H). Used by the local
colour clustering (EM windows) and by the land-cover constraint (31 x 31 MI and KL
windows, paper section 4). Chip-sized inputs use two banded-matrix products (BLAS-fast),
large ones separable cumulative sums (O(1) per pixel). Differentiable.
"""

from __future__ import annotations

import torch


def _box_sum_1d(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Window sums along ``dim`` (in-image part only) from one cumulative sum, no padding."""
    n = x.shape[dim]
    r = min(radius, n - 1)  # a window wider than the axis covers all of it
    if r <= 0:
        return x.clone() if r == 0 else x
    c = x.cumsum(dim)
    s = torch.empty_like(c)
    # upper end: c[min(i + r, n - 1)]
    s.narrow(dim, 0, n - r).copy_(c.narrow(dim, r, n - r))
    s.narrow(dim, n - r, r).copy_(c.narrow(dim, n - 1, 1).expand_as(s.narrow(dim, n - r, r)))
    # lower end: minus c[i - r - 1] where i - r - 1 >= 0
    if n - r - 1 > 0:
        s.narrow(dim, r + 1, n - r - 1).sub_(c.narrow(dim, 0, n - r - 1))
    return s


def _box_counts(h: int, w: int, radius: int, dtype: torch.dtype, device: torch.device):
    def count(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=dtype, device=device)
        return torch.clamp(i + radius + 1, max=n) - torch.clamp(i - radius, min=0)

    return count(h)[:, None] * count(w)[None, :]


_MATMUL_MAX_SIDE = 256


def _box_matrix(n: int, radius: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, n) band matrix of the 1-D window mean: row i averages pixels |i - j| <= r."""
    i = torch.arange(n, device=device)
    band = ((i[:, None] - i[None, :]).abs() <= radius).to(dtype)
    return band / band.sum(dim=1, keepdim=True)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1) x (2r+1) window of (..., H, W), in-image pixels only.

    Equals ``avg_pool2d(x, 2r+1, stride=1, padding=r, count_include_pad=False)``
    for any radius (also r >= H). Small sides (chips): two matmuls with banded averaging
    matrices, ``M_H @ x @ M_W^T`` (BLAS-fast); large sides: separable cumulative sums
    (O(1) per pixel).
    """
    if radius < 0:
        raise ValueError(f"window radius must be >= 0, got {radius}")
    if radius == 0:
        return x
    h, w = x.shape[-2:]
    if max(h, w) <= _MATMUL_MAX_SIDE:
        mh = _box_matrix(h, radius, x.dtype, x.device)
        mw = _box_matrix(w, radius, x.dtype, x.device)
        return torch.matmul(torch.matmul(mh, x), mw.T)
    s = _box_sum_1d(_box_sum_1d(x, radius, -1), radius, -2)
    return s.mul_(1.0 / _box_counts(h, w, radius, x.dtype, x.device))
