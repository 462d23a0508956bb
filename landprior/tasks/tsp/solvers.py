"""Reference tours from installable near-exact solvers, in parallel processes, cached on disk.

The paper (section 5) trains its prior on Concorde-solved tours; Concorde is not installable
offline, so the default here is fast-tsp (MIT; C++ local search on an integer distance
matrix with a wall-clock budget per instance; reaches the optimum on TSP-50 in ~10 ms).
elkai (LKH-3; non-commercial licence) is the optional extra ``landprior[lkh]``. Both hold
the GIL, so many instances are solved in worker processes.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from landprior.fileio import save_npy_atomic
from landprior.tasks.tsp.data import distance_matrices, is_permutation

logger = logging.getLogger(__name__)

SolverName = Literal["fast-tsp", "elkai"]
SOLVER_NAMES: tuple[str, ...] = get_args(SolverName)

_UINT16_MAX = 65_535
SECONDS_PER_CITY = 2e-4  # 10 ms at N = 50, 20 ms at N = 100 (PAPER_NOTES, TSP)
_CACHE_VERSION = "tsp-tour-v1"


class SolverUnavailableError(RuntimeError):
    """The requested solver is an optional extra that is not installed."""


@dataclass(frozen=True)
class SolverConfig:
    """Which reference solver and how hard it works.

    Attributes:
        solver: ``"fast-tsp"`` (default) or ``"elkai"`` (optional extra ``landprior[lkh]``).
        time_budget: fast-tsp seconds per instance; ``None`` gives ``2e-4 * n`` (10 ms at
            N = 50, enough for the optimum on TSP-50 per PAPER_NOTES).
        scale: distances are multiplied by this and rounded to integers; ``None`` picks the
            largest factor whose maximum distance fits fast-tsp's uint16 limit (65535).
        runs: elkai (LKH) runs per instance.
    """

    solver: SolverName = "fast-tsp"
    time_budget: float | None = None
    scale: float | None = None
    runs: int = 10

    def __post_init__(self) -> None:
        if self.solver not in SOLVER_NAMES:
            raise ValueError(f"solver must be one of {SOLVER_NAMES}, got {self.solver!r}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be > 0 seconds, got {self.time_budget}")
        if self.scale is not None and not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")

    def budget(self, n: int) -> float:
        """fast-tsp wall-clock seconds for an instance of ``n`` cities."""
        return self.time_budget if self.time_budget is not None else SECONDS_PER_CITY * n

    def tag(self) -> str:
        """A string that identifies the solver setting in cache keys."""
        if self.solver == "fast-tsp":
            budget = "auto" if self.time_budget is None else repr(float(self.time_budget))
            return f"fast-tsp:budget={budget}:scale={self.scale!r}"
        return f"elkai:runs={self.runs}:scale={self.scale!r}"


@dataclass(frozen=True, eq=False)
class ReferenceTours:
    """Result of :func:`reference_tours`: tours (each (n,) int64, starting at city 0)."""

    tours: list[np.ndarray]
    n_solved: int
    n_cached: int
    seconds: float = field(default=0.0)

    @property
    def seconds_per_solved(self) -> float:
        """Wall seconds per instance actually solved (cache hits excluded)."""
        return self.seconds / self.n_solved if self.n_solved else 0.0


# --------------------------------------------------------------------------- one instance
def integer_distances(points: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Rounded integer distance matrix (n, n) int64 and the scale used (fits uint16)."""
    dist = distance_matrices(points)
    largest = float(dist.max())
    limit = (_UINT16_MAX - 1) / largest if largest > 0 else 1.0
    used = limit if scale is None else float(scale)
    if round(largest * used) > _UINT16_MAX:
        raise ValueError(
            f"scale {used:g} makes the largest distance {largest * used:.0f} exceed the solver "
            f"limit {_UINT16_MAX}; use scale <= {limit:g} or None"
        )
    return np.rint(dist * used).astype(np.int64), used


def canonical_tour(tour: Sequence[int] | np.ndarray) -> np.ndarray:
    """Rotate a tour to start at city 0 and orient it so that ``tour[1] < tour[-1]``."""
    t = np.asarray(tour, dtype=np.int64)
    t = np.roll(t, -int(np.argmin(t)))
    if len(t) > 2 and t[1] > t[-1]:
        t = np.append(t[:1], t[1:][::-1])
    return t


def solve_instance(points: np.ndarray, config: SolverConfig | None = None) -> np.ndarray:
    """Reference tour of one instance (n, 2) -> (n,) int64 permutation starting at 0."""
    config = config or SolverConfig()
    pts = np.asarray(points, dtype=np.float64)
    n = pts.shape[0]
    dist, _ = integer_distances(pts, config.scale)
    if config.solver == "fast-tsp":
        import fast_tsp

        tour = fast_tsp.find_tour(dist, duration_seconds=config.budget(n), max_threads=1)
    else:
        tour = _solve_elkai(dist, config.runs)
    out = np.asarray(tour, dtype=np.int64)
    if len(out) == n + 1 and out[0] == out[-1]:
        out = out[:-1]
    if not is_permutation(out, n):
        raise RuntimeError(f"{config.solver} returned an invalid tour of length {len(out)}")
    return canonical_tour(out)


def _solve_elkai(dist: np.ndarray, runs: int) -> list[int]:
    try:
        import elkai
    except ImportError as exc:
        raise SolverUnavailableError(
            "solver 'elkai' (LKH-3) is not installed; install the optional extra with "
            "`pip install 'landprior[lkh]'` (elkai's LKH code is for non-commercial use only) "
            "or use solver='fast-tsp'"
        ) from exc
    matrix = dist.tolist()
    if hasattr(elkai, "DistanceMatrix"):
        return list(elkai.DistanceMatrix(matrix).solve_tsp(runs=runs))
    return list(elkai.solve_int_matrix(matrix, runs=runs))  # elkai < 1.0


def check_solver_available(solver: SolverName) -> None:
    """Raise :class:`SolverUnavailableError` early when ``solver`` cannot be imported."""
    if solver not in SOLVER_NAMES:
        raise ValueError(f"solver must be one of {SOLVER_NAMES}, got {solver!r}")
    module = "fast_tsp" if solver == "fast-tsp" else "elkai"
    try:
        __import__(module)
    except ImportError as exc:
        extra = "" if solver == "fast-tsp" else " with `pip install 'landprior[lkh]'`"
        raise SolverUnavailableError(
            f"solver {solver!r} is not installed; install it{extra}"
        ) from exc


# --------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    """``$LANDPRIOR_CACHE_DIR/tsp-tours``, else ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    root = os.environ.get("LANDPRIOR_CACHE_DIR")
    if root:
        return Path(root) / "tsp-tours"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "landprior" / "tsp-tours"


class TourCache:
    """Reference tours on disk, keyed by a SHA-256 of the coordinates and the solver setting.

    One ``.npy`` per instance under ``root/<2 hex>/<key>.npy``; writes go to a temporary
    file in the same folder and are renamed into place (atomic on POSIX), so concurrent
    writers and interrupted runs never leave a half-written entry.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key(points: np.ndarray, config: SolverConfig) -> str:
        """Hex digest of the float64 coordinates, their shape and ``config.tag()``."""
        pts = np.ascontiguousarray(points, dtype="<f8")
        digest = hashlib.sha256()
        digest.update(f"{_CACHE_VERSION}|{config.tag()}|{pts.shape}|".encode())
        digest.update(pts.tobytes())
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, points: np.ndarray, config: SolverConfig) -> np.ndarray | None:
        """The cached tour, or None (a corrupt entry is logged and ignored)."""
        path = self._path(self.key(points, config))
        if not path.exists():
            return None
        try:
            tour = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cache entry %s: %s", path, exc)
            return None
        if not is_permutation(tour, len(points)):
            logger.warning("ignoring cache entry %s: not a tour of %d cities", path, len(points))
            return None
        return tour.astype(np.int64)

    def put(self, points: np.ndarray, config: SolverConfig, tour: np.ndarray) -> Path:
        """Store ``tour`` atomically; returns its path."""
        path = self._path(self.key(points, config))
        return save_npy_atomic(np.asarray(tour, dtype=np.int64), path)


# --------------------------------------------------------------------------- many instances
def _solve_chunk(chunk: list[np.ndarray], config: SolverConfig) -> list[np.ndarray]:
    return [solve_instance(p, config) for p in chunk]


def reference_tours(
    instances: Sequence[np.ndarray] | np.ndarray,
    config: SolverConfig | None = None,
    *,
    workers: int = 2,
    chunk_size: int = 16,
    cache_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReferenceTours:
    """Reference tours for many instances (each (n, 2); sizes may differ).

    Cached tours are read first; the rest are solved in up to ``workers`` processes in
    chunks of ``chunk_size`` (one process does it in-line when that is quicker), and stored
    in the cache as each chunk finishes. ``progress(done, total)`` is called per chunk.
    """
    config = config or SolverConfig()
    check_solver_available(config.solver)
    if workers < 1 or chunk_size < 1:
        raise ValueError(f"workers and chunk_size must be >= 1, got {workers}, {chunk_size}")
    points = [np.asarray(p, dtype=np.float64) for p in instances]
    cache = TourCache(cache_dir) if cache_dir is not None else None
    tours: list[np.ndarray | None] = [None] * len(points)
    if cache is not None:
        for k, p in enumerate(points):
            tours[k] = cache.get(p, config)
    todo = [k for k, t in enumerate(tours) if t is None]
    n_cached = len(points) - len(todo)
    chunks = [todo[i : i + chunk_size] for i in range(0, len(todo), chunk_size)]
    start = time.perf_counter()
    done = 0

    def _store(indices: list[int], solved: list[np.ndarray]) -> None:
        nonlocal done
        for k, tour in zip(indices, solved, strict=True):
            tours[k] = tour
            if cache is not None:
                cache.put(points[k], config, tour)
        done += len(indices)
        if progress is not None:
            progress(done, len(todo))

    estimate = sum(config.budget(points[k].shape[0]) for k in todo)
    if workers == 1 or len(chunks) < 2 or estimate < 1.0:
        for idx in chunks:
            _store(idx, _solve_chunk([points[k] for k in idx], config))
    else:
        context = multiprocessing.get_context("forkserver")
        n_proc = min(workers, len(chunks))
        with ProcessPoolExecutor(max_workers=n_proc, mp_context=context) as pool:
            futures = [
                (idx, pool.submit(_solve_chunk, [points[k] for k in idx], config)) for idx in chunks
            ]
            for idx, future in futures:
                _store(idx, future.result())
    seconds = time.perf_counter() - start
    if todo:
        logger.info(
            "%s: solved %d instances in %.2f s (%.1f ms each, %d workers), %d from cache",
            config.solver,
            len(todo),
            seconds,
            1e3 * seconds / len(todo),
            min(workers, max(len(chunks), 1)),
            n_cached,
        )
    final = [t for t in tours if t is not None]
    assert len(final) == len(points)
    return ReferenceTours(final, n_solved=len(todo), n_cached=n_cached, seconds=seconds)


def auto_workers(requested: int | None = None) -> int:
    """``requested`` or min(2, CPU count) - the house default on shared 2-core machines."""
    if requested is not None:
        return max(1, requested)
    return max(1, min(2, os.cpu_count() or 1))
