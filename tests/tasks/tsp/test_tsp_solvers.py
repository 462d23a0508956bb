"""Reference solvers: optimal on tiny instances, parallel, cached atomically, clear errors."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from landprior.tasks.tsp.data import is_permutation, tour_lengths, uniform_instances
from landprior.tasks.tsp.solvers import (
    SolverConfig,
    SolverUnavailableError,
    TourCache,
    canonical_tour,
    integer_distances,
    reference_tours,
    solve_instance,
)


def _brute_force_length(points: np.ndarray) -> float:
    n = len(points)
    best = np.inf
    for rest in itertools.permutations(range(1, n)):
        best = min(best, float(tour_lengths(points, np.array((0, *rest)))))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_tsp_optimal_on_seven_cities(seed: int) -> None:
    points = uniform_instances(1, 7, seed=seed)[0]
    tour = solve_instance(points)
    assert is_permutation(tour, 7) and tour[0] == 0 and tour[1] < tour[-1]
    assert float(tour_lengths(points, tour)) == pytest.approx(_brute_force_length(points), 1e-4)


def test_integer_distances_fit_uint16() -> None:
    points = uniform_instances(1, 30, seed=3)[0]
    dist, scale = integer_distances(points)
    assert dist.dtype == np.int64 and dist.max() <= 65_535 and dist.max() >= 65_000
    np.testing.assert_array_equal(dist, dist.T)
    with pytest.raises(ValueError, match="exceed the solver limit"):
        integer_distances(points, scale=1e6)
    assert scale > 0


def test_canonical_tour() -> None:
    # the same cycle 0-1-3-2, given in two rotations and both orientations
    for given in ([3, 1, 0, 2], [2, 0, 1, 3], [1, 3, 2, 0]):
        np.testing.assert_array_equal(canonical_tour(given), [0, 1, 3, 2])


def test_config_validation_and_tags() -> None:
    with pytest.raises(ValueError, match="solver must be one of"):
        SolverConfig(solver="concorde")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time_budget"):
        SolverConfig(time_budget=0)
    assert SolverConfig().budget(50) == pytest.approx(0.01)
    assert SolverConfig(time_budget=0.5).budget(50) == 0.5
    assert SolverConfig().tag() != SolverConfig(time_budget=0.01).tag()
    assert SolverConfig(solver="elkai").tag().startswith("elkai")


def test_elkai_missing_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "elkai", None)  # import elkai -> ImportError
    config = SolverConfig(solver="elkai")
    with pytest.raises(SolverUnavailableError, match=r"landprior\[lkh\]"):
        solve_instance(uniform_instances(1, 6)[0], config)
    with pytest.raises(SolverUnavailableError, match="not installed"):
        reference_tours([uniform_instances(1, 6)[0]], config)


def test_reference_tours_cache(tmp_path: Path) -> None:
    points = list(uniform_instances(5, 8, seed=4))
    config = SolverConfig(time_budget=0.002)
    first = reference_tours(points, config, cache_dir=tmp_path, chunk_size=2)
    assert (first.n_solved, first.n_cached) == (5, 0)
    assert len(list(tmp_path.rglob("*.npy"))) == 5
    assert not list(tmp_path.rglob(".tmp-*"))
    again = reference_tours(
        [*points[:3], uniform_instances(1, 8, seed=9)[0]], config, cache_dir=tmp_path
    )
    assert (again.n_solved, again.n_cached) == (1, 3)
    for a, b in zip(first.tours[:3], again.tours[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    # another solver setting is another key
    assert TourCache.key(points[0], config) != TourCache.key(points[0], SolverConfig())
    # a corrupt entry is ignored and recomputed
    cache = TourCache(tmp_path)
    path = cache._path(cache.key(points[0], config))
    path.write_bytes(b"not a numpy file")
    assert cache.get(points[0], config) is None
    assert reference_tours(points[:1], config, cache_dir=tmp_path).n_solved == 1


def test_reference_tours_parallel_processes() -> None:
    points = list(uniform_instances(8, 12, seed=6))
    config = SolverConfig(time_budget=0.15)  # 8 x 0.15 s > 1 s, so the pool is used
    result = reference_tours(points, config, workers=2, chunk_size=2)
    assert result.n_solved == 8
    serial = [solve_instance(p, SolverConfig(time_budget=0.005)) for p in points]
    np.testing.assert_allclose(
        [float(tour_lengths(p, t)) for p, t in zip(points, result.tours, strict=True)],
        [float(tour_lengths(p, t)) for p, t in zip(points, serial, strict=True)],
        rtol=1e-9,
    )
