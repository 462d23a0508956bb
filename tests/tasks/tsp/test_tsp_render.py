"""f(A): geometry, exact pixels of a tour, linearity, sparse == dense, memory, training images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from landprior.tasks.tsp.adjacency import (
    adjacency_from_logits,
    init_logits,
    tour_adjacency,
)
from landprior.tasks.tsp.data import read_instances, uniform_instances
from landprior.tasks.tsp.render import (
    RasterSpec,
    build_render_dataset,
    edge_rasters,
    image_from_logits,
    render,
    render_tours,
)
from landprior.tasks.tsp.solvers import SolverConfig

SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def _expected_square_image() -> np.ndarray:
    """Hand-built image of the tour 0-1-2-3 around SQUARE (corners at pixels 2 and 61)."""
    img = np.full((64, 64), -1.0)
    count = np.zeros((64, 64))
    lo, hi = 2, 61
    for fixed in (lo, hi):
        # horizontal edges at row `fixed` and vertical edges at column `fixed`:
        # a 3-pixel band (distance <= 1) along the edge, plus one pixel beyond each end
        for k in range(lo, hi + 1):
            for off in (-1, 0, 1):
                count[fixed + off, k] += 1
                count[k, fixed + off] += 1
        for end in (lo - 1, hi + 1):
            count[fixed, end] += 1
            count[end, fixed] += 1
    img += count
    for r, c in ((lo, lo), (lo, hi), (hi, hi), (hi, lo)):
        for dr in range(-2, 3):
            for dc in range(-2, 3):
                if dr * dr + dc * dc <= 4:
                    img[r + dr, c + dc] = 1.0
    return np.clip(img, -1, 1)


def test_spec_maps_corners_inside_margin() -> None:
    spec = RasterSpec()
    np.testing.assert_allclose(spec.to_pixels(SQUARE), [[2, 2], [2, 61], [61, 61], [61, 2]])
    with pytest.raises(ValueError, match="resolution"):
        RasterSpec(resolution=4)


def test_one_hot_tour_renders_expected_pixels() -> None:
    expected = _expected_square_image()
    tours = np.arange(4)[None]
    got = render_tours(SQUARE[None], tours)
    assert got.shape == (1, 1, 64, 64) and got.dtype == np.float32
    np.testing.assert_array_equal(got[0, 0], expected)
    rasters = edge_rasters(SQUARE[None])
    via_f = render(rasters, tour_adjacency(torch.from_numpy(tours)))
    np.testing.assert_array_equal(via_f[0, 0].numpy(), expected)
    # the diagonals are not tour edges: nothing on the centre pixel
    assert got[0, 0, 32, 32] == -1.0


def test_f_is_affine_in_a_with_fixed_nodes() -> None:
    points = uniform_instances(2, 8, seed=1)
    rasters = edge_rasters(points)
    gen = torch.Generator().manual_seed(0)
    a1 = torch.rand(2, 8, 8, generator=gen, dtype=torch.float64)
    a2 = torch.rand(2, 8, 8, generator=gen, dtype=torch.float64)
    zero = render(rasters, torch.zeros_like(a1))
    combo = render(rasters, 0.3 * a1 - 1.7 * a2)
    linear = 0.3 * (render(rasters, a1) - zero) - 1.7 * (render(rasters, a2) - zero)
    torch.testing.assert_close(combo - zero, linear)
    nodes = rasters.nodes.view(2, 1, 64, 64)
    assert (combo[nodes] == 1).all() and (zero[~nodes] == -1).all()
    # only the symmetric part of A matters
    torch.testing.assert_close(render(rasters, a1), render(rasters, a1.transpose(1, 2)))


def test_gradient_is_the_edge_raster() -> None:
    points = uniform_instances(1, 6, seed=2)
    rasters = edge_rasters(points)
    a = torch.zeros(1, 6, 6, dtype=torch.float64, requires_grad=True)
    dense = rasters.dense()[0]  # (E, 64, 64)
    pixel = torch.nonzero(dense[0] & ~rasters.nodes.view(64, 64))[0]
    render(rasters, a)[0, 0, pixel[0], pixel[1]].backward()
    i, j = rasters.pairs_i, rasters.pairs_j
    expected = 0.5 * dense[:, pixel[0], pixel[1]].double()
    torch.testing.assert_close(a.grad[0, i, j], expected)
    torch.testing.assert_close(a.grad[0, j, i], expected)


def _dense_reference(points: np.ndarray, spec: RasterSpec) -> np.ndarray:
    """Brute force: every pixel centre against every segment, (B, E, res, res) bool."""
    res, hw = spec.resolution, spec.line_width / 2
    pix = spec.to_pixels(points)
    n = points.shape[1]
    iu, ju = np.triu_indices(n, 1)
    rr, cc = np.meshgrid(np.arange(res), np.arange(res), indexing="ij")
    out = np.zeros((points.shape[0], iu.size, res, res), dtype=bool)
    for b in range(points.shape[0]):
        for e, (i, j) in enumerate(zip(iu, ju, strict=True)):
            p, q = pix[b, i], pix[b, j]
            d = q - p
            t = np.clip(((rr - p[0]) * d[0] + (cc - p[1]) * d[1]) / (d @ d), 0, 1)
            dist2 = (rr - p[0] - t * d[0]) ** 2 + (cc - p[1] - t * d[1]) ** 2
            out[b, e] = dist2 <= hw * hw
    return out


@pytest.mark.parametrize("spec", [RasterSpec(), RasterSpec(resolution=32, line_width=3.0)])
def test_sparse_rasters_equal_dense(spec: RasterSpec) -> None:
    points = uniform_instances(2, 7, seed=3)
    points[0, 1] = [points[0, 0, 0], 0.9]  # a vertical and a horizontal edge
    points[0, 2] = [0.95, points[0, 0, 1]]
    rasters = edge_rasters(points, spec)
    np.testing.assert_array_equal(rasters.dense().numpy(), _dense_reference(points, spec))


def test_memory_bounded_at_n200() -> None:
    rasters = edge_rasters(uniform_instances(1, 200, seed=0))
    dense_bytes = 200 * 199 // 2 * 64 * 64 * 4  # float32 images per edge: 326 MB
    assert rasters.nbytes < 20e6 and rasters.nbytes < dense_bytes / 20
    assert rasters.pixel.dtype == torch.int32 and rasters.edge.dtype == torch.int32


def test_render_tours_equals_clipped_f_of_tour() -> None:
    points = uniform_instances(3, 20, seed=5)
    rng = np.random.default_rng(1)
    tours = np.stack([rng.permutation(20) for _ in range(3)])
    images = render_tours(points, tours)
    via_f = render(edge_rasters(points), tour_adjacency(torch.from_numpy(tours)))
    np.testing.assert_array_equal(images, via_f.clamp(-1, 1).numpy())
    assert images.min() == -1 and images.max() == 1


def test_image_from_logits_batched_and_differentiable() -> None:
    points = uniform_instances(3, 10, seed=6)
    rasters = edge_rasters(points)
    logits = init_logits(3, 10, generator=torch.Generator().manual_seed(0)).requires_grad_()
    image = image_from_logits(rasters, logits)
    assert image.shape == (3, 1, 64, 64)
    image.square().sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # instance k only depends on its own logits
    single = edge_rasters(points[1:2])
    torch.testing.assert_close(
        image[1:2], render(single, adjacency_from_logits(logits[1:2].detach()))
    )
    with pytest.raises(ValueError, match="adjacency must be"):
        render(rasters, torch.zeros(3, 9, 9))


def test_build_render_dataset(tmp_path: Path) -> None:
    out = build_render_dataset(
        tmp_path / "tours.npy",
        count=5,
        n=10,
        seed=2,
        config=SolverConfig(time_budget=0.002),
        cache_dir=tmp_path / "cache",
        chunk=2,
    )
    images = np.load(out)
    assert images.shape == (5, 1, 64, 64) and images.dtype == np.float32
    assert set(np.unique(images)) <= {-1.0, 0.0, 1.0}
    solved = read_instances(out.with_suffix(".instances.txt"))
    assert len(solved) == 5 and all(s.tour is not None for s in solved)
    points = np.stack([s.points for s in solved])
    tours = np.stack([s.tour for s in solved])
    np.testing.assert_array_equal(images, render_tours(points, tours))
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["count"] == 5 and meta["n"] == 10 and meta["seed"] == 2
    with pytest.raises(ValueError, match=r"\.npy"):
        build_render_dataset(tmp_path / "x.png", count=1, n=5)
