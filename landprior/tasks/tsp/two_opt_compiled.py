"""Compiled best-improvement 2-opt (numba), batched over instances in parallel threads.

Same result as :func:`~landprior.tasks.tsp.extract.two_opt_python`, move for move: every
pass applies the move (i, j) with the smallest gain ``((d(t_i, t_j) + d(t_i+1, t_j+1)) -
d(t_i, t_i+1)) - d(t_j, t_j+1)`` (that arithmetic, no fast-math), the lowest (i, j) among
equal gains, while it is below ``-tol``. Two ways to find that move, chosen per pass:

* candidate lists (usual): a move gains only if ``d(a, c) < d(a, b)`` or
  ``d(b, e) < d(c, e)`` (the gain is the sum of those two differences), so every improving
  move pairs a city with a city closer to it than one of its two tour neighbours. Each city
  keeps, for each of its two neighbours, the list of cities closer than that neighbour.
  Reversing a segment only swaps which neighbour is the successor, so after a move only the
  four cities at the two new edges rescan their lists (O(n) each); a pass costs the total
  list length, typically a few per city.
* dense: all O(n^2) gains, when the lists grow past ``dense_fraction * n^2`` entries (e.g.
  from a random tour, where a full scan is cheaper per move). It reads a tour-ordered
  distance matrix (``ordered[i, j] = d(t_i, t_j)``) in contiguous slices; a move permutes
  its rows and columns in place instead of rebuilding it.

Instances run in parallel Python threads (the kernel releases the GIL), a contiguous
block of instances each; they are independent, so the thread count changes no result.
Not ``numba.prange``: numba's OpenMP layer shares libgomp with torch, and setting its
thread count overrides ``torch.set_num_threads`` for the rest of the process. Each
instance's distance matrix is built from its points exactly as ``data.distance_matrices``
does (no (B, n, n) array is materialised). The first call in a fresh install compiles the
kernel (seconds; numba caches it on disk).
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

DENSE_FRACTION = 0.1  # measured: 0.1-0.2 best for random starts, no cost for others


try:  # numba is a dependency; without it the numpy kernels still work
    import numba
except ImportError:  # pragma: no cover - exercised only in installs without numba
    numba = None


def available() -> bool:
    """True when numba is installed (the ``"compiled"`` kernel can run)."""
    return numba is not None


def _no_numba(*_args: Any, **_kwargs: Any) -> Any:  # pragma: no cover
    raise RuntimeError(
        "the 'compiled' 2-opt kernel needs numba (pip install numba); "
        "use kernel='pruned' or 'dense' instead"
    )


def _compile(fn: Any, **options: Any) -> Any:
    """numba.njit with the on-disk cache, or without it where no cache folder is writable.

    Module-level functions, so that the cache finds them in the next process; numba
    refuses ``cache=True`` (RuntimeError) when neither the package folder nor a user cache
    folder can be written, e.g. a read-only install: then the kernel compiles per process.
    """
    if numba is None:  # pragma: no cover
        return _no_numba
    try:
        return numba.njit(cache=True, nogil=True, **options)(fn)
    except RuntimeError:
        return numba.njit(nogil=True, **options)(fn)


def _jit(fn: Any) -> Any:
    return _compile(fn)


@_jit
def _distance_matrix(points: np.ndarray) -> np.ndarray:
    # bit-identical to data.distance_matrices: sqrt(dx * dx + dy * dy), no contraction
    n = points.shape[0]
    x = points[:, 0].copy()
    y = points[:, 1].copy()
    dist = np.empty((n, n), dtype=np.float64)
    for i in range(n):
        xi = x[i]
        yi = y[i]
        for j in range(n):
            dx = xi - x[j]
            dy = yi - y[j]
            dist[i, j] = np.sqrt(dx * dx + dy * dy)
    return dist


@_jit
def _closer_than(dist: np.ndarray, u: int, w: int, out: np.ndarray) -> int:
    # the cities v with d(u, v) < d(u, w), into out; returns how many
    row = dist[u]
    limit = row[w]
    count = 0
    for v in range(row.shape[0]):  # branch-free compaction: the test is ~unpredictable
        out[count] = v
        count += row[v] < limit
    return count


@_jit
def _consider(dist: np.ndarray, tour: np.ndarray, cost: np.ndarray, p: int, q: int,
              best: float, bi: int, bj: int) -> tuple:  # fmt: skip
    # the move on the edges at tour positions p and q, against the best so far;
    # cost[k] = d(t_k, t_k+1), so the gain is the reference's expression term for term
    n = tour.shape[0]
    i = min(p, q)
    j = max(p, q)
    if j - i < 2 or (i == 0 and j == n - 1):
        return best, bi, bj
    e = tour[j + 1] if j + 1 < n else tour[0]
    gain = dist[tour[i], tour[j]] + dist[tour[i + 1], e] - cost[i] - cost[j]
    if gain < best or (gain == best and (i < bi or (i == bi and j < bj))):
        return gain, i, j
    return best, bi, bj


@_jit
def _order_matrix(dist: np.ndarray, tour: np.ndarray, ordered: np.ndarray) -> None:
    # ordered[i, j] = d(t_i, t_j), and column n repeats column 0 (the closing edge)
    n = tour.shape[0]
    for i in range(n):
        row = dist[tour[i]]
        for j in range(n):
            ordered[i, j] = row[tour[j]]
        ordered[i, n] = ordered[i, 0]


@_jit
def _reverse_in_order_matrix(ordered: np.ndarray, lo: int, hi: int) -> None:
    # the tour reversed positions lo..hi (1 <= lo < hi <= n - 1): permute rows and columns
    width = ordered.shape[1]
    a = lo
    b = hi
    while a < b:  # swap rows a and b in place (no allocation)
        row_a = ordered[a]
        row_b = ordered[b]
        for k in range(width):
            value = row_a[k]
            row_a[k] = row_b[k]
            row_b[k] = value
        a += 1
        b -= 1
    for i in range(ordered.shape[0]):  # contiguous in every row; column 0 (= n) stays
        row = ordered[i]
        a = lo
        b = hi
        while a < b:
            value = row[a]
            row[a] = row[b]
            row[b] = value
            a += 1
            b -= 1


def _jit_min(fn: Any) -> Any:
    return _compile(fn, fastmath={"nnan", "ninf", "nsz"})


@_jit_min
def _smallest(values: np.ndarray) -> float:
    # min of values; order-free, so it vectorises (gains are finite)
    low = np.inf
    for k in range(values.shape[0]):
        low = min(low, values[k])
    return low


@_jit
def _dense_pass(ordered: np.ndarray, cost: np.ndarray, gains: np.ndarray) -> tuple:
    # all moves, row-major, first strictly smallest (the reference's scan), from the
    # tour-ordered distances: contiguous slices (no gathers, no index wrap-around checks)
    n = cost.shape[0]
    best = np.inf
    bi = n
    bj = n
    for i in range(n - 2):
        lo = i + 2
        hi = n - 1 if i == 0 else n
        d_ac = ordered[i, lo:hi]
        d_be = ordered[i + 1, lo + 1 : hi + 1]
        d_ce = cost[lo:hi]
        out = gains[lo:hi]
        ab = cost[i]
        for k in range(hi - lo):
            out[k] = d_ac[k] + d_be[k] - ab - d_ce[k]
        low = _smallest(out)
        if low < best:
            for k in range(hi - lo):
                if out[k] == low:
                    best = low
                    bi = i
                    bj = lo + k
                    break
    return best, bi, bj


@_jit
def _one_instance(dist: np.ndarray, tour: np.ndarray, limit: int, tol: float,
                 dense_fraction: float) -> tuple:  # fmt: skip
    n = tour.shape[0]
    pos = np.empty(n, dtype=np.int64)
    for p in range(n):
        pos[tour[p]] = p
    # neighbour[u, s]: one of u's two tour neighbours; lists[u, s, :count[u, s]]: the
    # cities closer to u than it (which of the two is the successor changes with moves)
    neighbour = np.empty((n, 2), dtype=np.int64)
    lists = np.empty((n, 2, n), dtype=np.int32)
    count = np.empty((n, 2), dtype=np.int64)
    total = 0
    for p in range(n):
        u = tour[p]
        neighbour[u, 0] = tour[p + 1] if p + 1 < n else tour[0]
        neighbour[u, 1] = tour[p - 1] if p > 0 else tour[n - 1]
        for s in range(2):
            count[u, s] = _closer_than(dist, u, neighbour[u, s], lists[u, s])
            total += count[u, s]
    ordered = np.empty((0, 0), dtype=np.float64)  # built on the first dense pass
    ordered_valid = False
    cost = np.empty(n, dtype=np.float64)  # cost[k] = d(t_k, t_k+1), kept up to date
    for k in range(n):
        cost[k] = dist[tour[k], tour[k + 1] if k + 1 < n else tour[0]]
    gains = np.empty(n, dtype=np.float64)
    moves = 0
    converged = False
    while moves < limit:
        if total > dense_fraction * n * n:
            if not ordered_valid:
                if ordered.shape[0] == 0:
                    ordered = np.empty((n, n + 1), dtype=np.float64)
                _order_matrix(dist, tour, ordered)
                ordered_valid = True
            best, bi, bj = _dense_pass(ordered, cost, gains)
        else:
            ordered_valid = False  # not kept up to date while the lists serve
            best = np.inf
            bi = n
            bj = n
            for p in range(n):
                u = tour[p]
                succ = tour[p + 1] if p + 1 < n else tour[0]
                s = 0 if neighbour[u, 0] == succ else 1
                # (u, succ u) with (v, succ v): v closer to u than succ u
                for r in range(count[u, s]):
                    q = pos[lists[u, s, r]]
                    best, bi, bj = _consider(dist, tour, cost, p, q, best, bi, bj)
                # (pred u, u) with (pred v, v): v closer to u than pred u
                pp = p - 1 if p > 0 else n - 1
                for r in range(count[u, 1 - s]):
                    q = pos[lists[u, 1 - s, r]]
                    best, bi, bj = _consider(dist, tour, cost, pp, q - 1 if q > 0 else n - 1,
                                             best, bi, bj)  # fmt: skip
        if not best < -tol:
            converged = True
            break
        a = tour[bi]
        b = tour[bi + 1]
        c = tour[bj]
        e = tour[bj + 1] if bj + 1 < n else tour[0]
        # edges (a, b), (c, e) become (a, c), (b, e): four cities change a neighbour
        for x, old, new in ((a, b, c), (b, a, e), (c, e, a), (e, c, b)):
            s = 0 if neighbour[x, 0] == old else 1
            neighbour[x, s] = new
            total -= count[x, s]
            count[x, s] = _closer_than(dist, x, new, lists[x, s])
            total += count[x, s]
        lo = bi + 1
        hi = bj
        while lo < hi:
            city = tour[lo]
            tour[lo] = tour[hi]
            tour[hi] = city
            pos[tour[lo]] = lo
            pos[tour[hi]] = hi
            lo += 1
            hi -= 1
        for k in range(bi, bj + 1):  # the edges from a to e, segment reversed
            cost[k] = dist[tour[k], tour[k + 1] if k + 1 < n else tour[0]]
        if ordered_valid:
            if total > dense_fraction * n * n:  # the next pass is dense too
                _reverse_in_order_matrix(ordered, bi + 1, bj)
            else:
                ordered_valid = False
        moves += 1
    return moves, converged


@_jit
def _batch(points: np.ndarray, dist: np.ndarray, tours: np.ndarray, limit: int,
          tol: float, dense_fraction: float, moves: np.ndarray,
          converged: np.ndarray) -> None:  # fmt: skip
    from_points = dist.shape[0] == 0
    for k in range(tours.shape[0]):
        d = _distance_matrix(points[k]) if from_points else dist[k]
        m, done = _one_instance(d, tours[k], limit, tol, dense_fraction)
        moves[k] = m
        converged[k] = done


def two_opt_compiled(
    tours: np.ndarray,
    limit: int,
    tol: float,
    *,
    points: np.ndarray | None = None,
    distances: np.ndarray | None = None,
    threads: int | None = None,
    dense_fraction: float = DENSE_FRACTION,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-opt a copy of every tour of ``tours`` (B, n) int64 (valid permutations, n >= 4).

    Distances come from ``distances`` (B, n, n) when given, else from ``points`` (B, n, 2).
    ``threads``: parallel threads (None: all cores). Returns (tours, moves,
    converged) like :class:`~landprior.tasks.tsp.extract.TwoOptResult`; ``limit`` caps the
    moves per instance (``converged`` stays False when it is reached).
    """
    if not available():
        _no_numba()
    if distances is not None:
        dist = np.ascontiguousarray(distances, dtype=np.float64)
        pts = np.zeros((0, 0, 2))
    elif points is not None:
        dist = np.zeros((0, 0, 0))
        pts = np.ascontiguousarray(points, dtype=np.float64)
    else:
        raise ValueError("two_opt_compiled needs points or distances")
    out = np.array(tours, dtype=np.int64, copy=True, order="C")
    moves = np.zeros(out.shape[0], dtype=np.int64)
    converged = np.zeros(out.shape[0], dtype=np.bool_)
    b = out.shape[0]
    workers = max(1, min(int(threads or os.cpu_count() or 1), b))
    if workers == 1:
        _batch(pts, dist, out, int(limit), float(tol), float(dense_fraction), moves, converged)
    else:
        bounds = np.linspace(0, b, workers + 1).astype(int)

        def run(lo: int, hi: int) -> None:
            p = pts[lo:hi] if len(pts) else pts
            d = dist[lo:hi] if len(dist) else dist
            _batch(p, d, out[lo:hi], int(limit), float(tol), float(dense_fraction),
                   moves[lo:hi], converged[lo:hi])  # fmt: skip

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for job in [pool.submit(run, lo, hi) for lo, hi in itertools.pairwise(bounds)]:
                job.result()
    return out, moves, converged
