"""The image of a (soft) tour, f(A), paper section 5, and prior-training images of solved tours.

Geometry (one convention everywhere):
  * The image is ``res x res`` (64). City ``(x, y)`` in [0, 1]^2 sits at the continuous pixel
    position ``col = m + x (res - 1 - 2m)``, ``row = m + y (res - 1 - 2m)`` with margin
    ``m = node_radius`` so every dot fits; pixel ``(r, c)`` has its centre at ``(r, c)``.
  * Edge raster ``E_ij`` (binary, no anti-aliasing): pixels whose centre lies within
    ``line_width / 2`` (1 px) of the segment between cities i and j - a 2 px wide stroke
    with round caps (the authors draw 2 px lines).
  * Node dots: pixels whose centre lies within ``node_radius`` (2 px) of a city.

Values (the paper's f, mapped to [-1, 1]): background -1; an edge adds +1 (the authors'
0.5 on a [0, 1] canvas); nodes are overwritten with +1::

    f(A) = -1 + sum_{i<j} a_ij E_ij   with a_ij = (A_ij + A_ji) / 2,   nodes := +1

This is affine in A (``f(A) - f(0)`` is linear) and differentiable in torch. Overlapping
edges *add*; nothing is clamped inside f, so the engine sees the exact linear map (the
constraint may clip to [-1, 1] as the authors do). For a 0/1 tour adjacency only pixels
covered by 2+ edges outside the dots exceed 0 (sharp corners, crossings).
:func:`render_tours` - the prior's training images - is exactly ``clip(f(A_tour), -1, 1)``,
so a solved tour's adjacency maps onto the training distribution.

Memory: the rasters of all n(n-1)/2 edges are kept as a sparse pixel-by-edge incidence
list (COO: one int32 pixel index and one int32 edge index per covered pixel), measured
0.65 / 2.6 / 10.6 MB per instance at N = 50 / 100 / 200, instead of n(n-1)/2 dense 64x64
float32 images (20 / 81 / 326 MB). f(A) is one gather and one ``index_add`` (faster on CPU
than ``torch.sparse.mm`` with a CSR matrix in our measurements); its gradient is a gather.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from landprior.fileio import write_text_atomic
from landprior.tasks.tsp.adjacency import DEFAULT_TAU, adjacency_from_logits
from landprior.tasks.tsp.data import uniform_instances, write_instances
from landprior.tasks.tsp.solvers import SolverConfig, reference_tours

logger = logging.getLogger(__name__)

RESOLUTION = 64
LINE_WIDTH = 2.0
NODE_RADIUS = 2.0
_CANDIDATES_PER_CHUNK = 1_000_000


@dataclass(frozen=True)
class RasterSpec:
    """Image geometry: resolution, stroke width and dot radius in pixels (authors: 64, 2, 2)."""

    resolution: int = RESOLUTION
    line_width: float = LINE_WIDTH
    node_radius: float = NODE_RADIUS

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {self.resolution}")
        if not (self.line_width > 0 and self.node_radius >= 0):
            raise ValueError("line_width must be > 0 and node_radius >= 0")
        if 2 * self.node_radius >= self.resolution - 1:
            raise ValueError(f"node_radius {self.node_radius} too large for {self.resolution} px")

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """Continuous (row, col) pixel positions (..., 2) of points (..., 2) given as (x, y)."""
        m = self.node_radius
        pts = np.asarray(points, dtype=np.float64)
        return m + pts[..., ::-1] * (self.resolution - 1 - 2 * m)


# --------------------------------------------------------------------------- rasterisers
def _segment_pixels(
    p0: np.ndarray, p1: np.ndarray, res: int, half_width: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels within ``half_width`` of segments p0 -> p1 ((S, 2) each, (row, col) pixels).

    Returns (segment index (K,), flat pixel index r * res + c (K,)), both int64, unique per
    segment. Vectorised: each segment is walked along its major axis and a few pixels
    across it are tested exactly against the point-to-segment distance.
    """
    seg_out: list[np.ndarray] = []
    pix_out: list[np.ndarray] = []
    n_seg = p0.shape[0]
    d = p1 - p0
    major = (np.abs(d[:, 1]) > np.abs(d[:, 0])).astype(np.int64)  # 0: rows, 1: cols
    s = np.arange(n_seg)
    a0 = p0[s, major]
    a1 = p1[s, major]
    lo_m = np.maximum(np.ceil(np.minimum(a0, a1) - half_width), 0).astype(np.int64)
    hi_m = np.minimum(np.floor(np.maximum(a0, a1) + half_width), res - 1).astype(np.int64)
    lengths = np.maximum(hi_m - lo_m + 1, 0)
    # |slope| <= 1 along the major axis, so every covered pixel is within sqrt(2) hw of the
    # (end-clamped) centre line across it: floor(2 sqrt(2) hw) + 1 candidates suffice
    reach = math.sqrt(2) * half_width + 1e-9
    across = math.floor(2 * reach) + 1
    offsets = np.arange(across)
    start = 0
    while start < n_seg:
        cum = np.cumsum(lengths[start:]) * across
        stop = start + max(1, int(np.searchsorted(cum, _CANDIDATES_PER_CHUNK, side="right")))
        stop = min(stop, n_seg)
        idx = np.arange(start, stop)
        rep = np.repeat(idx, lengths[idx])
        first = np.repeat(np.cumsum(lengths[idx]) - lengths[idx], lengths[idx])
        m_pos = lo_m[rep] + (np.arange(rep.size) - first)
        # the segment's cross-axis coordinate at this major position (clamped to the ends)
        mj = major[rep]
        q0 = p0[rep]
        dq = d[rep]
        d_major = dq[np.arange(rep.size), mj]
        d_minor = dq[np.arange(rep.size), 1 - mj]
        q0_major = q0[np.arange(rep.size), mj]
        q0_minor = q0[np.arange(rep.size), 1 - mj]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(d_major != 0, (m_pos - q0_major) / d_major, 0.0)
        centre = q0_minor + np.clip(frac, 0.0, 1.0) * d_minor
        first_minor = np.ceil(centre - reach).astype(np.int64)
        minor = first_minor[:, None] + offsets[None, :]  # (K, across)
        seg = np.broadcast_to(rep[:, None], minor.shape)
        m_b = np.broadcast_to(m_pos[:, None], minor.shape)
        mj_b = np.broadcast_to(mj[:, None], minor.shape)
        rows = np.where(mj_b == 0, m_b, minor)
        cols = np.where(mj_b == 0, minor, m_b)
        dist2 = _point_segment_dist2(rows, cols, p0[seg], d[seg])
        keep = (dist2 <= half_width**2) & (minor >= 0) & (minor < res)
        seg_out.append(seg[keep])
        pix_out.append(rows[keep] * res + cols[keep])
        start = stop
    if not seg_out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(seg_out), np.concatenate(pix_out)


def _point_segment_dist2(rows: np.ndarray, cols: np.ndarray, p0: np.ndarray, d: np.ndarray):
    """Squared distance from pixel centres (rows, cols) to segments p0 + t d, t in [0, 1]."""
    wr = rows - p0[..., 0]
    wc = cols - p0[..., 1]
    dd = d[..., 0] ** 2 + d[..., 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(dd > 0, (wr * d[..., 0] + wc * d[..., 1]) / dd, 0.0)
    t = np.clip(t, 0.0, 1.0)
    er = wr - t * d[..., 0]
    ec = wc - t * d[..., 1]
    return er * er + ec * ec


def node_masks(points: np.ndarray, spec: RasterSpec | None = None) -> np.ndarray:
    """Filled dots of all cities: (B, res * res) bool for points (B, n, 2)."""
    spec = spec or RasterSpec()
    res = spec.resolution
    pix = spec.to_pixels(points)  # (B, n, 2)
    b, _n, _ = pix.shape
    reach = math.ceil(spec.node_radius) + 1
    off = np.arange(-reach, reach + 1)
    rr = np.floor(pix[..., 0])[..., None, None] + off[:, None]  # (B, n, K, 1)
    cc = np.floor(pix[..., 1])[..., None, None] + off[None, :]  # (B, n, 1, K)
    d2 = (rr - pix[..., 0, None, None]) ** 2 + (cc - pix[..., 1, None, None]) ** 2
    inside = (d2 <= spec.node_radius**2) & (rr >= 0) & (rr < res) & (cc >= 0) & (cc < res)
    flat = (np.broadcast_to(rr, d2.shape) * res + np.broadcast_to(cc, d2.shape)).astype(np.int64)
    batch = np.broadcast_to(np.arange(b)[:, None, None, None], d2.shape)
    mask = np.zeros((b, res * res), dtype=bool)
    mask[batch[inside], flat[inside]] = True
    return mask


# --------------------------------------------------------------------------- f(A)
@dataclass(frozen=True, eq=False)
class EdgeRasters:
    """Precomputed rasters of every edge i < j of a batch of instances (paper section 5).

    Attributes:
        batch, n: B instances of n cities; ``spec`` the geometry.
        pairs_i, pairs_j: (E,) int64 torch, the upper-triangle pairs (E = n (n - 1) / 2).
        pixel: (nnz,) int32 torch, flat index ``b * res^2 + r * res + c`` of a covered pixel.
        edge: (nnz,) int32 torch, flat index ``b * E + e`` of the edge that covers it.
        nodes: (B, res^2) bool torch, the node dots.
    """

    batch: int
    n: int
    spec: RasterSpec
    pairs_i: Tensor
    pairs_j: Tensor
    pixel: Tensor
    edge: Tensor
    nodes: Tensor

    @property
    def n_edges(self) -> int:
        """Edges per instance, E = n (n - 1) / 2."""
        return self.n * (self.n - 1) // 2

    @property
    def nbytes(self) -> int:
        """Memory held by the incidence list and masks."""
        return sum(t.element_size() * t.numel() for t in (self.pixel, self.edge, self.nodes))

    def to(self, device: torch.device | str) -> EdgeRasters:
        """A copy on ``device``."""
        return EdgeRasters(
            self.batch,
            self.n,
            self.spec,
            self.pairs_i.to(device),
            self.pairs_j.to(device),
            self.pixel.to(device),
            self.edge.to(device),
            self.nodes.to(device),
        )

    def dense(self) -> Tensor:
        """Dense binary rasters (B, E, res, res) bool - for tests and small n only."""
        res = self.spec.resolution
        e = self.n_edges
        out = torch.zeros(self.batch * e, res * res, dtype=torch.bool)
        local_pix = self.pixel.long() % (res * res)
        out[self.edge.long(), local_pix] = True
        return out.view(self.batch, e, res, res)


def edge_rasters(points: np.ndarray, spec: RasterSpec | None = None) -> EdgeRasters:
    """Rasterise every edge of every instance once: points (B, n, 2) -> :class:`EdgeRasters`."""
    spec = spec or RasterSpec()
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[-1] != 2:
        raise ValueError(f"points must be (B, n, 2), got {pts.shape}")
    b, n, _ = pts.shape
    res = spec.resolution
    iu, ju = np.triu_indices(n, k=1)
    e = iu.size
    if b * res * res >= 2**31 or b * e >= 2**31:
        raise ValueError(f"batch of {b} instances of {n} cities is too large for int32 indices")
    pix = spec.to_pixels(pts)
    p0 = pix[:, iu].reshape(-1, 2)
    p1 = pix[:, ju].reshape(-1, 2)
    seg, flat = _segment_pixels(p0, p1, res, spec.line_width / 2)
    pixel = (seg // e) * (res * res) + flat
    order = np.argsort(pixel, kind="stable")  # pixel-major: friendlier scatter
    return EdgeRasters(
        batch=b,
        n=n,
        spec=spec,
        pairs_i=torch.from_numpy(iu.astype(np.int64)),
        pairs_j=torch.from_numpy(ju.astype(np.int64)),
        pixel=torch.from_numpy(pixel[order].astype(np.int32)),
        edge=torch.from_numpy(seg[order].astype(np.int32)),
        nodes=torch.from_numpy(node_masks(pts, spec)),
    )


def render(rasters: EdgeRasters, adjacency: Tensor) -> Tensor:
    """f(A) = -1 + sum_{i<j} (A_ij + A_ji)/2 E_ij, node dots := +1 (paper section 5).

    Args:
        rasters: from :func:`edge_rasters` for the same B instances.
        adjacency: (B, n, n) A (any real values; differentiable).

    Returns:
        (B, 1, res, res) image, same dtype/device as ``adjacency``; no clamping.
    """
    b, n = rasters.batch, rasters.n
    if adjacency.shape != (b, n, n):
        raise ValueError(f"adjacency must be ({b}, {n}, {n}), got {tuple(adjacency.shape)}")
    res = rasters.spec.resolution
    i, j = rasters.pairs_i.to(adjacency.device), rasters.pairs_j.to(adjacency.device)
    weights = 0.5 * (adjacency[:, i, j] + adjacency[:, j, i])  # (B, E)
    values = weights.reshape(-1).index_select(0, rasters.edge.to(adjacency.device))
    canvas = torch.full((b * res * res,), -1.0, dtype=adjacency.dtype, device=adjacency.device)
    canvas = canvas.index_add(0, rasters.pixel.to(adjacency.device), values)
    canvas = canvas.view(b, res * res)
    nodes = rasters.nodes.to(adjacency.device)
    canvas = torch.where(nodes, torch.ones((), dtype=canvas.dtype, device=canvas.device), canvas)
    return canvas.view(b, 1, res, res)


def image_from_logits(rasters: EdgeRasters, logits: Tensor, tau: float = DEFAULT_TAU) -> Tensor:
    """The latent map x = f(A(L)) that inference optimises (seam for the engine's latent mode).

    Args:
        rasters: precomputed for the B instances.
        logits: (B, n, n) L.

    Returns:
        (B, 1, res, res) image f(S + S^T), S = row-softmax(L / tau), diagonal masked.
    """
    return render(rasters, adjacency_from_logits(logits, tau))


# --------------------------------------------------------------------------- training images
def render_tours(
    points: np.ndarray, tours: np.ndarray, spec: RasterSpec | None = None
) -> np.ndarray:
    """Images of closed tours for prior training: (B, n, 2), (B, n) -> (B, 1, res, res) float32.

    Equal to ``clip(f(A_tour), -1, 1)`` with A_tour the tour's 0/1 adjacency, but only the n
    tour edges are rasterised.
    """
    spec = spec or RasterSpec()
    pts = np.asarray(points, dtype=np.float64)
    t = np.asarray(tours, dtype=np.int64)
    if pts.ndim == 2:
        pts, t = pts[None], t[None]
    if pts.ndim != 3 or t.shape != pts.shape[:2]:
        raise ValueError(f"expected points (B, n, 2) and tours (B, n), got {pts.shape}, {t.shape}")
    b, n, _ = pts.shape
    res = spec.resolution
    pix = spec.to_pixels(pts)
    a = np.take_along_axis(pix, t[..., None], axis=1)
    z = np.roll(a, -1, axis=1)
    seg, flat = _segment_pixels(a.reshape(-1, 2), z.reshape(-1, 2), res, spec.line_width / 2)
    counts = np.bincount((seg // n) * (res * res) + flat, minlength=b * res * res)
    canvas = (counts.astype(np.float32) - 1.0).reshape(b, res * res)
    canvas[node_masks(pts, spec)] = 1.0
    np.clip(canvas, -1.0, 1.0, out=canvas)
    return canvas.reshape(b, 1, res, res)


def build_render_dataset(
    out: str | Path,
    *,
    count: int,
    n: int,
    seed: int = 0,
    config: SolverConfig | None = None,
    workers: int = 2,
    cache_dir: str | Path | None = None,
    chunk: int = 1024,
    spec: RasterSpec | None = None,
) -> Path:
    """Prior-training data: ``count`` uniform instances, solved, rendered, saved as .npy.

    Writes ``out`` (count, 1, res, res) float32 in [-1, 1] (through a memory map, so memory
    stays bounded), ``out`` with suffix ``.instances.txt`` (the solved instances in the text
    format) and ``.json`` (how it was made). Returns ``out``.
    """
    out = Path(out)
    if out.suffix != ".npy":
        raise ValueError(f"output must end in .npy, got {out}")
    spec = spec or RasterSpec()
    config = config or SolverConfig()
    out.parent.mkdir(parents=True, exist_ok=True)
    points = uniform_instances(count, n, seed)
    start = time.perf_counter()
    solved = reference_tours(list(points), config, workers=workers, cache_dir=cache_dir)
    tours = np.stack(solved.tours)
    solve_s = time.perf_counter() - start
    tmp = out.with_name(out.name + ".tmp.npy")
    images = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.float32, shape=(count, 1, spec.resolution, spec.resolution)
    )
    for lo in range(0, count, chunk):
        hi = min(lo + chunk, count)
        images[lo:hi] = render_tours(points[lo:hi], tours[lo:hi], spec)
    images.flush()
    del images
    write_instances(out.with_suffix(".instances.txt"), points, tours)
    meta = {
        "count": count,
        "n": n,
        "seed": seed,
        "generator": "numpy.random.default_rng(seed).uniform(size=(count, n, 2))",
        "solver": config.tag(),
        "solver_seconds": round(solve_s, 3),
        "from_cache": solved.n_cached,
        "resolution": spec.resolution,
        "line_width": spec.line_width,
        "node_radius": spec.node_radius,
        "values": "background -1, edges 0 (+1 per covering edge), nodes 1, clipped to [-1, 1]",
    }
    write_text_atomic(json.dumps(meta, indent=2) + "\n", out.with_suffix(".json"))
    tmp.replace(out)  # last: the images appear only once their sidecars are complete
    logger.info("wrote %d tour images of N=%d to %s (solving took %.1f s)", count, n, out, solve_s)
    return out
