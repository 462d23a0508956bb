"""Image grids for samples (matplotlib only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import image as mpimg

from landprior.diffusion.images import DEFAULT_PALETTE, make_grid, save_grid, to_rgb


def test_grid_layout_and_values() -> None:
    x = -torch.ones(5, 1, 4, 6)
    x[1] = 1.0
    grid = make_grid(x, nrow=3, padding=1, pad_value=0.5)
    assert grid.shape == (2 * (4 + 1) + 1, 3 * (6 + 1) + 1, 3)
    assert grid[0, 0, 0] == 0.5  # padding
    assert np.all(grid[1:5, 1:7] == 0.0)  # image 0: -1 -> black
    assert np.all(grid[1:5, 8:14] == 1.0)  # image 1: +1 -> white
    assert np.all(grid[6:10, 15:21] == 0.5)  # empty sixth cell stays padding
    assert make_grid(torch.zeros(4, 3, 2, 2)).shape == (2 * 4 + 2, 2 * 4 + 2, 3)  # ~sqrt(N)


def test_class_maps_use_the_palette() -> None:
    onehot = torch.zeros(1, 5, 2, 2)
    onehot[0, 3] = 1.0
    rgb = to_rgb(onehot)
    assert rgb.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(rgb[0, 0, 0], DEFAULT_PALETTE[3])
    with pytest.raises(ValueError, match="at least 5 RGB colours"):
        to_rgb(onehot, palette=[(0, 0, 0)])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        make_grid(np.zeros((2, 2)))


def test_save_grid_writes_png(tmp_path) -> None:
    path = save_grid(torch.rand(3, 3, 8, 8) * 2 - 1, tmp_path / "sub" / "g.png", scale=2)
    img = mpimg.imread(path)
    assert img.shape[:2] == (2 * (2 * 8 + 3 * 2), 2 * (2 * 8 + 3 * 2))
