"""Tour extraction: greedy edge insertion, vectorised 2-opt == plain-Python 2-opt, baselines."""

from __future__ import annotations

import numpy as np
import pytest

from landprior.tasks.tsp import two_opt_compiled
from landprior.tasks.tsp.adjacency import tour_adjacency
from landprior.tasks.tsp.data import distance_matrices, is_permutation, tour_lengths
from landprior.tasks.tsp.data import uniform_instances as uniform
from landprior.tasks.tsp.extract import (
    DEFAULT_TOL,
    baseline_tours,
    edge_scores,
    greedy_tours,
    nearest_neighbour_tours,
    random_tours,
    tours_from_adjacency,
    two_opt,
    two_opt_python,
)
from landprior.tasks.tsp.solvers import solve_instance


def _edges(tour: np.ndarray) -> set[frozenset[int]]:
    return {frozenset((int(a), int(b))) for a, b in zip(tour, np.roll(tour, -1), strict=True)}


def _greedy_reference(scores: np.ndarray) -> set[frozenset[int]]:
    """Textbook greedy matching on a (n, n) score: all edges sorted, union-find, close."""
    n = len(scores)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    pairs.sort(key=lambda p: -0.5 * (scores[p] + scores[p[::-1]]))  # stable on ties
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    degree = [0] * n
    chosen: set[frozenset[int]] = set()
    for i, j in pairs:
        if degree[i] < 2 and degree[j] < 2 and find(i) != find(j):
            parent[find(i)] = find(j)
            degree[i] += 1
            degree[j] += 1
            chosen.add(frozenset((i, j)))
    ends = [u for u in range(n) if degree[u] < 2]
    chosen.add(frozenset(ends))
    return chosen


def test_greedy_matches_textbook_and_is_a_cycle() -> None:
    rng = np.random.default_rng(0)
    for n in (4, 9, 40):
        points = uniform(3, n, seed=n)
        scores = edge_scores(rng.random((3, n, n)), points)
        tours = greedy_tours(scores)
        assert tours.shape == (3, n)
        for k in range(3):
            assert is_permutation(tours[k], n) and tours[k, 0] == 0
            assert _edges(tours[k]) == _greedy_reference(scores[k])


def test_greedy_on_distances_and_ties() -> None:
    points = uniform(2, 30, seed=1)
    tours = greedy_tours(-distance_matrices(points))
    for k in range(2):
        assert _edges(tours[k]) == _greedy_reference(-distance_matrices(points[k]))
    flat = greedy_tours(np.ones((1, 6, 6)))  # all ties: still a valid tour, deterministic
    assert is_permutation(flat[0], 6)
    np.testing.assert_array_equal(flat, greedy_tours(np.ones((1, 6, 6))))


def test_adjacency_of_a_tour_is_recovered() -> None:
    points = uniform(2, 20, seed=2)
    optimal = np.stack([solve_instance(p) for p in points])
    import torch

    a = tour_adjacency(torch.from_numpy(optimal))
    result = tours_from_adjacency(a, points)
    for k in range(2):
        assert _edges(result.tours[k]) == _edges(optimal[k])
    assert (result.moves == 0).all()
    np.testing.assert_allclose(result.lengths, tour_lengths(points, optimal))


def test_nearest_neighbour_and_random_tours() -> None:
    points = uniform(3, 15, seed=3)
    tours = nearest_neighbour_tours(points)
    d = distance_matrices(points)
    for k in range(3):
        assert is_permutation(tours[k], 15) and tours[k, 0] == 0
        assert tours[k, 1] == np.argsort(d[k, 0])[1]
    r = random_tours(4, 10, seed=1)
    assert all(is_permutation(t, 10) for t in r)
    np.testing.assert_array_equal(r, random_tours(4, 10, seed=1))


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for n, seed in ((5, 0), (12, 1), (30, 2), (60, 3)):
        points = uniform(4, n, seed=seed)
        out.append((points, random_tours(4, n, seed)))
        out.append((points, nearest_neighbour_tours(points)))
        out.append((points, greedy_tours(-distance_matrices(points))))
    # many equal distances: points on a coarse grid stress the tie-breaking
    grid = np.random.default_rng(4).choice(49, size=(3, 20), replace=True)
    grid = np.stack([np.unique(g)[:12] for g in grid])
    points = np.stack([grid % 7, grid // 7], axis=-1) / 6.0
    out.append((points, random_tours(3, 12, 5)))
    return out


@pytest.mark.parametrize("kernel", ["pruned", "dense", "compiled", "auto"])
def test_vectorised_two_opt_equals_python(kernel: str) -> None:
    for points, start in _cases():
        result = two_opt(points, start, kernel=kernel)  # type: ignore[arg-type]
        assert result.converged.all()
        for k in range(len(points)):
            tour, moves = two_opt_python(points[k], start[k])
            np.testing.assert_array_equal(result.tours[k], tour)
            assert result.moves[k] == moves


@pytest.mark.parametrize("dense_fraction", [0.0, 0.4, 1e9])
def test_compiled_two_opt_both_move_searches_equal_python(dense_fraction: float) -> None:
    # 0: every pass scans all moves; 1e9: every pass uses the candidate lists only
    for points, start in _cases():
        tours, moves, converged = two_opt_compiled.two_opt_compiled(
            start, 10**9, DEFAULT_TOL, points=points, dense_fraction=dense_fraction
        )
        assert converged.all()
        for k in range(len(points)):
            tour, count = two_opt_python(points[k], start[k])
            np.testing.assert_array_equal(tours[k], tour)
            assert moves[k] == count


def test_compiled_two_opt_threads_and_distances_change_nothing() -> None:
    points = uniform(9, 50, seed=11)
    start = random_tours(9, 50, seed=11)
    one = two_opt(points, start, kernel="compiled", threads=1)
    two = two_opt(points, start, kernel="compiled", threads=2)
    given = two_opt(None, start, kernel="compiled", distances=distance_matrices(points))  # type: ignore[arg-type]
    for other in (two, given):
        np.testing.assert_array_equal(one.tours, other.tours)
        np.testing.assert_array_equal(one.moves, other.moves)
    capped = two_opt(points, start, kernel="compiled", max_moves=3)
    assert (capped.moves == 3).all() and not capped.converged.any()
    np.testing.assert_array_equal(
        capped.tours[0], two_opt_python(points[0], start[0], max_moves=3)[0]
    )


def test_two_opt_improves_to_a_local_optimum() -> None:
    points = uniform(6, 40, seed=7)
    start = random_tours(6, 40, seed=7)
    result = two_opt(points, start)
    before, after = tour_lengths(points, start), tour_lengths(points, result.tours)
    assert (after <= before + 1e-12).all() and (result.moves > 0).all()
    # no improving move is left: every gain of the final tours is >= -tol
    d = distance_matrices(points)
    for k in range(6):
        t = result.tours[k]
        nxt = np.roll(t, -1)
        gains = d[k][t[:, None], t[None, :]] + d[k][nxt[:, None], nxt[None, :]]
        gains -= d[k][t, nxt][:, None] + d[k][t, nxt][None, :]
        valid = np.triu(np.ones((40, 40), bool), 2)
        valid[0, -1] = False
        assert gains[valid].min() >= -1e-10


def test_two_opt_max_moves_and_validation() -> None:
    points = uniform(3, 25, seed=8)
    start = random_tours(3, 25, seed=8)
    capped = two_opt(points, start, max_moves=2)
    assert (capped.moves == 2).all() and not capped.converged.any()
    tour, moves = two_opt_python(points[0], start[0], max_moves=2)
    np.testing.assert_array_equal(capped.tours[0], tour)
    assert moves == 2
    with pytest.raises(ValueError, match="permutation"):
        two_opt(points, np.zeros((3, 25), dtype=int))
    with pytest.raises(ValueError, match="kernel must be one of"):
        two_opt(points, start, kernel="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        two_opt(points, start, threads=0)
    bad = points.copy()
    bad[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="points must be finite"):
        two_opt(bad, start)
    dist = distance_matrices(points)
    dist[0, 2, 5] = np.inf
    with pytest.raises(ValueError, match="distances must be finite"):
        two_opt(None, start, distances=dist)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="do not match points"):
        two_opt(points[:, :20], start)


def test_two_opt_with_duplicate_cities() -> None:
    points = uniform(2, 15, seed=9)
    points[:, 5] = points[:, 2]
    points[:, 11] = points[:, 2]
    start = random_tours(2, 15, seed=9)
    result = two_opt(points, start)
    for k in range(2):
        tour, moves = two_opt_python(points[k], start[k])
        np.testing.assert_array_equal(result.tours[k], tour)
        assert result.moves[k] == moves


@pytest.mark.parametrize("method", ["greedy", "greedy-two-opt", "nn-two-opt", "two-opt"])
def test_baselines(method: str) -> None:
    points = uniform(5, 30, seed=10)
    result = baseline_tours(points, method)  # type: ignore[arg-type]
    assert result.tours.shape == (5, 30) and result.seconds >= 0
    assert all(is_permutation(t, 30) for t in result.tours)
    np.testing.assert_allclose(result.lengths, tour_lengths(points, result.tours))
    if method == "greedy":
        assert (result.moves == 0).all()
        assert (baseline_tours(points, "greedy-two-opt").lengths <= result.lengths + 1e-12).all()
    with pytest.raises(ValueError, match="method must be one of"):
        baseline_tours(points, "concorde")  # type: ignore[arg-type]


def test_compiled_two_opt_leaves_torch_threads_alone() -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        two_opt(uniform(4, 20, seed=12), random_tours(4, 20, seed=12), kernel="compiled",
                threads=2)  # fmt: skip
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_compiled_kernel_compiles_without_a_cache_folder() -> None:
    # a function numba cannot cache (no source file, like a read-only install)
    namespace: dict = {}
    exec("def add_one(x):\n    return x + 1\n", namespace)
    compiled = two_opt_compiled._compile(namespace["add_one"])
    assert compiled(41) == 42
