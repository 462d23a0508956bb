"""TSP benchmark (paper section 5): 2-opt speed, baselines, reference solver, f(A) cost.

Prints one JSON object to stdout (progress goes to the log on stderr)::

    .venv/bin/python benchmarks/tsp.py            # full run, a few minutes on 2 cores
    .venv/bin/python benchmarks/tsp.py --quick    # smaller counts, about a minute (2 cores)

Sections:
  two_opt      batched 2-opt (landprior.tasks.tsp.extract.two_opt: the compiled numba kernel
               on one thread and on all --threads, and the two vectorised numpy kernels;
               all exact) against the plain-Python best-improvement 2-opt
               (``two_opt_python``: O(1) per move gain, O(n^2) per pass) on the same N = 100
               tours - identical tours and move counts are checked - and against a naive
               Python 2-opt that re-measures the whole candidate tour for every move
               (O(n) per move, O(n^3) per pass: the cost model PAPER_NOTES gives for the
               authors' code).
  baselines    greedy / greedy + 2-opt / nearest neighbour + 2-opt / random + 2-opt on the
               Kool et al. test sets (first K instances) and on the real TSPLIB extract:
               mean length, gap to the reference tours, 2-opt moves, instances per second.
  reference    fast-tsp with the default budget: seconds per instance and the gap to a
               10x longer budget; on TSPLIB the gap to the file's optimal tours.
  render       f(A): raster precomputation per instance, memory, forward + backward time.
  diffusion    the whole diffusion solve (landprior.tasks.tsp.diffuse.solve: rasters, Algorithm 1
               on L through the shared engine, greedy + 2-opt) at 256 and 50 steps (--quick:
               20 and 5): instances per second on CPU and the time split. Without
               --checkpoint it runs an UNTRAINED `tsp-cpu` U-Net (random weights): the figures
               are speed only and its tours mean nothing. With --checkpoint (a trained prior)
               it also reports length, gap to the reference tours and the 2-opt-alone baseline
               on the same instances.
  samples      best-of-K on ONE instance (``solve_instances`` with ``samples=K``, the K runs
               batched) against the same K seeds solved one call after another (what
               ``--samples`` did before): seconds and speed-up; the K tours are checked equal.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landprior.diffusion.denoiser import EpsDenoiser, freeze
from landprior.diffusion.schedule import NoiseSchedule
from landprior.diffusion.unet import UNetConfig
from landprior.tasks.tsp.adjacency import adjacency_from_logits, init_logits
from landprior.tasks.tsp.data import (
    distance_matrices,
    gap_pct,
    group_by_size,
    kool_test_set,
    read_instances,
    tour_lengths,
)
from landprior.tasks.tsp.diffuse import (
    DiffusionSolverConfig,
    load_prior,
    sample_seeds,
    solve,
    solve_instances,
    warm_up,
)
from landprior.tasks.tsp.extract import (
    BASELINE_METHODS,
    baseline_tours,
    greedy_tours,
    nearest_neighbour_tours,
    random_tours,
    two_opt,
    two_opt_python,
    warm_up_two_opt,
)
from landprior.tasks.tsp.render import edge_rasters, render
from landprior.tasks.tsp.solvers import SolverConfig, default_cache_dir, reference_tours

logger = logging.getLogger("benchmarks.tsp")
TSPLIB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tsp" / "tsplib50-200.txt"


def two_opt_python_naive(
    points: np.ndarray, tour: np.ndarray, tol: float = 1e-10
) -> tuple[np.ndarray, int]:
    """Best-improvement 2-opt that measures every candidate tour in full: O(n^3) per pass."""
    d = distance_matrices(points).tolist()
    t = [int(x) for x in tour]
    n = len(t)

    def length(order: list[int]) -> float:
        return sum(d[order[k - 1]][order[k]] for k in range(n))

    moves = 0
    current = length(t)
    while True:
        best, best_ij = current, None
        for i in range(n - 2):
            for j in range(i + 2, n - 1 if i == 0 else n):
                cand = length(t[: i + 1] + t[i + 1 : j + 1][::-1] + t[j + 1 :])
                if cand < best:
                    best, best_ij = cand, (i, j)
        if best_ij is None or not best < current - tol:
            return np.asarray(t), moves
        i, j = best_ij
        t[i + 1 : j + 1] = t[i + 1 : j + 1][::-1]
        current = best
        moves += 1


def _timed(fn: Any, repeats: int = 1) -> tuple[float, Any]:
    best, out = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_two_opt(
    n: int, count: int, python_count: int, naive_count: int, threads: int
) -> dict[str, Any]:
    warm_up_two_opt()  # compile (or load) the numba kernel outside the timings
    points = kool_test_set(n, count)
    starts = {
        "nearest_neighbour": nearest_neighbour_tours(points),
        "greedy": greedy_tours(-distance_matrices(points)),
        "random": random_tours(count, n, seed=0),
    }
    out: dict[str, Any] = {
        "n": n,
        "batch": count,
        "python_instances": python_count,
        "compiled_threads": threads,
    }
    for name, tours in starts.items():
        logger.info("2-opt N=%d from %s tours", n, name)
        row: dict[str, Any] = {}
        results = {}
        kernels = {  # name -> (kernel, threads); the compiled one on one and on all threads
            "compiled_1thread": ("compiled", 1),
            "compiled": ("compiled", threads),
            "pruned": ("pruned", None),
            "dense": ("dense", None),
        }
        for label, (kernel, n_threads) in kernels.items():
            seconds, results[label] = _timed(
                lambda k=kernel, t=tours, c=n_threads: two_opt(points, t, kernel=k, threads=c), 3
            )
            row[f"{label}_ms_per_instance"] = 1e3 * seconds / count
        result = results["compiled"]
        row["kernels_identical"] = all(
            np.array_equal(r.tours, result.tours) and np.array_equal(r.moves, result.moves)
            for r in results.values()
        )
        row["moves_mean"] = float(result.moves.mean())
        start = time.perf_counter()
        ref = [two_opt_python(points[k], tours[k]) for k in range(python_count)]
        py_s = (time.perf_counter() - start) / python_count
        row["python_ms_per_instance"] = 1e3 * py_s
        row["identical_to_python"] = all(
            np.array_equal(result.tours[k], ref[k][0]) and result.moves[k] == ref[k][1]
            for k in range(python_count)
        )
        for label in kernels:
            row[f"speedup_vs_python_{label}"] = 1e3 * py_s / row[f"{label}_ms_per_instance"]
        if naive_count and name != "random":
            start = time.perf_counter()
            naive = [two_opt_python_naive(points[k], tours[k]) for k in range(naive_count)]
            naive_s = (time.perf_counter() - start) / naive_count
            row["naive_python_ms_per_instance"] = 1e3 * naive_s
            row["naive_identical"] = all(
                np.array_equal(result.tours[k], naive[k][0]) for k in range(naive_count)
            )
            row["speedup_vs_naive_python"] = 1e3 * naive_s / row["compiled_ms_per_instance"]
        out[name] = row
    return out


def _reference(points: np.ndarray, cache: Path | None) -> np.ndarray:
    solved = reference_tours(list(points), SolverConfig(), workers=2, cache_dir=cache)
    return tour_lengths(points, np.stack(solved.tours))


def bench_baselines(n: int, count: int, cache: Path | None) -> dict[str, Any]:
    points = kool_test_set(n, count)
    logger.info("reference tours for Kool N=%d (first %d)", n, count)
    ref = _reference(points, cache)
    out: dict[str, Any] = {
        "set": f"Kool et al. test set N={n}, first {count}",
        "reference_mean_length": float(ref.mean()),
    }
    for method in BASELINE_METHODS:
        seconds, result = _timed(lambda m=method: baseline_tours(points, m), 1)
        out[method] = {
            "mean_length": float(result.lengths.mean()),
            "gap_pct": gap_pct(result.lengths, ref),
            "two_opt_moves_mean": float(result.moves.mean()),
            "instances_per_second": count / seconds,
        }
    return out


def bench_tsplib(duplicates: str) -> dict[str, Any] | None:
    if not TSPLIB.exists():
        return None
    records = read_instances(TSPLIB, duplicates=duplicates)  # type: ignore[arg-type]
    given = np.array([float(tour_lengths(r.points, r.tour)) for r in records])
    out: dict[str, Any] = {"n_instances": len(records), "duplicates": duplicates}
    start = time.perf_counter()
    solved = reference_tours([r.points for r in records], SolverConfig(), cache_dir=None)
    ours = np.array(
        [float(tour_lengths(r.points, t)) for r, t in zip(records, solved.tours, strict=True)]
    )
    out["fast_tsp"] = {
        "gap_pct": gap_pct(ours, given),
        "seconds_per_instance": (time.perf_counter() - start) / len(records),
    }
    for method in BASELINE_METHODS:
        lengths = np.zeros(len(records))
        moves = np.zeros(len(records))
        start = time.perf_counter()
        for _, idx in group_by_size(records).items():
            res = baseline_tours(np.stack([records[k].points for k in idx]), method)
            lengths[idx], moves[idx] = res.lengths, res.moves
        out[method] = {
            "gap_pct": gap_pct(lengths, given),
            "two_opt_moves_mean": float(moves.mean()),
            "instances_per_second": len(records) / (time.perf_counter() - start),
        }
    return out


def bench_reference(n: int, count: int) -> dict[str, Any]:
    points = kool_test_set(n, count)
    default = SolverConfig()
    logger.info("fast-tsp timing N=%d, %d instances, no cache", n, count)
    fast = reference_tours(list(points), default, workers=1, cache_dir=None)
    longer = reference_tours(
        list(points), SolverConfig(time_budget=10 * default.budget(n)), workers=2, cache_dir=None
    )
    a = tour_lengths(points, np.stack(fast.tours))
    b = tour_lengths(points, np.stack(longer.tours))
    return {
        "n": n,
        "instances": count,
        "budget_seconds": default.budget(n),
        "seconds_per_instance": fast.seconds_per_solved,
        "gap_pct_vs_10x_budget": gap_pct(a, b),
    }


def bench_render(n: int, batch: int) -> dict[str, Any]:
    points = kool_test_set(n, batch)
    build_s, rasters = _timed(lambda: edge_rasters(points), 1)
    logits = init_logits(batch, n, generator=torch.Generator().manual_seed(0)).requires_grad_()

    def step() -> None:
        image = render(rasters, adjacency_from_logits(logits))
        image.square().sum().backward()

    step_s, _ = _timed(step, 3)
    return {
        "n": n,
        "batch": batch,
        "raster_build_ms_per_instance": 1e3 * build_s / batch,
        "raster_mb_per_instance": rasters.nbytes / batch / 1e6,
        "dense_equivalent_mb_per_instance": n * (n - 1) / 2 * 64 * 64 * 4 / 1e6,
        "forward_backward_ms_per_instance": 1e3 * step_s / batch,
    }


def _untrained_prior() -> tuple[Any, NoiseSchedule, str]:
    """The CPU network with random weights (its zero-initialised output conv randomised too)."""
    torch.manual_seed(0)
    net = UNetConfig.preset("tsp-cpu").build()
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    params = sum(p.numel() for p in net.parameters())
    note = (
        f"UNTRAINED tsp-cpu U-Net ({params} parameters, random weights): speed only, "
        "tour quality meaningless"
    )
    return freeze(EpsDenoiser(net)), NoiseSchedule.from_name("linear", 1000), note


def _prior(checkpoint: Path | None) -> tuple[Any, NoiseSchedule, str]:
    """The trained prior at ``checkpoint``, or the untrained net when it is None."""
    if checkpoint is None:
        return _untrained_prior()
    prior = load_prior(checkpoint)
    note = f"trained prior {checkpoint} (step {prior.meta['step']}, {prior.meta['weights']})"
    return prior.denoiser, prior.schedule, note


def bench_diffusion(
    n: int,
    count: int,
    steps_list: list[int],
    batch_size: int,
    checkpoint: Path | None,
    cache: Path | None,
) -> dict[str, Any]:
    """Whole diffusion solves of the first ``count`` Kool et al. instances of size ``n``."""
    denoiser, schedule, note = _prior(checkpoint)
    warm_up()
    points = kool_test_set(n, count)
    out: dict[str, Any] = {
        "n": n,
        "instances": count,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "prior": note,
    }
    ref = None
    if checkpoint is not None:
        ref = _reference(points, cache)
        base = baseline_tours(points, "nn-two-opt")
        out["reference_mean_length"] = float(ref.mean())
        out["two_opt_alone"] = {
            "mean_length": float(base.lengths.mean()),
            "gap_pct": gap_pct(base.lengths, ref),
            "two_opt_moves_mean": float(base.moves.mean()),
        }
    for steps in steps_list:
        logger.info("diffusion solve N=%d, %d instances, %d steps", n, count, steps)
        config = DiffusionSolverConfig(steps=steps, batch_size=batch_size)
        start = time.perf_counter()
        result = solve(denoiser, schedule, points, config=config, seed=0)
        wall = time.perf_counter() - start
        row: dict[str, Any] = {
            "instances_per_second": count / wall,
            "seconds_per_instance": wall / count,
            "ms_per_step_per_instance": 1e3 * result.seconds["inference"] / (steps * count),
            "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
            "two_opt_moves_mean": float(result.moves.mean()),
        }
        if ref is not None:
            row["mean_length"] = float(result.lengths.mean())
            row["gap_pct"] = gap_pct(result.lengths, ref)
            row["greedy_gap_pct"] = gap_pct(result.greedy_lengths, ref)
        out[f"steps_{steps}"] = row
    return out


def bench_samples(n: int, samples: int, steps: int, checkpoint: Path | None) -> dict[str, Any]:
    """Best-of-K on one instance: the K runs batched vs one call per seed."""
    denoiser, schedule, note = _prior(checkpoint)
    warm_up()
    points = kool_test_set(n, 1)
    config = DiffusionSolverConfig(steps=steps, batch_size=samples, samples=samples)
    start = time.perf_counter()
    batched = solve_instances(denoiser, schedule, list(points), config=config, seed=0)
    batched_s = time.perf_counter() - start
    one = DiffusionSolverConfig(steps=steps, batch_size=1)
    start = time.perf_counter()
    lengths = [
        solve(denoiser, schedule, points, config=one, seed=s).lengths[0]
        for s in sample_seeds(0, samples)
    ]
    sequential_s = time.perf_counter() - start
    return {
        "n": n,
        "samples": samples,
        "steps": steps,
        "threads": torch.get_num_threads(),
        "prior": note,
        "batched_seconds": round(batched_s, 3),
        "one_call_per_sample_seconds": round(sequential_s, 3),
        "speedup": round(sequential_s / batched_s, 2),
        "same_best_length": bool(np.isclose(min(lengths), batched.lengths[0])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (CI smoke run)")
    parser.add_argument("--two-opt-batch", type=int, default=128)
    parser.add_argument("--python-instances", type=int, default=16)
    parser.add_argument("--naive-instances", type=int, default=2)
    parser.add_argument("--baseline-count", type=int, default=1000)
    parser.add_argument("--no-cache", action="store_true", help="do not use the tour cache")
    parser.add_argument(
        "--diffusion-count", type=int, default=16, help="instances per diffusion solve timing"
    )
    parser.add_argument(
        "--diffusion-batch", type=int, default=16, help="instances per denoiser call"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="trained TSP prior (default: an untrained tsp-cpu net, speed only)",
    )
    parser.add_argument(
        "--only",
        choices=["two_opt", "baselines", "tsplib", "reference", "render", "diffusion",
                 "samples"],
        action="append",
        help="run only these sections (repeatable)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads [default: min(2, cpu count)]"
    )
    args = parser.parse_args(argv)
    if args.checkpoint is not None and not args.checkpoint.exists():
        parser.error(f"--checkpoint {args.checkpoint} not found (the shipped TSP priors are "
                     "models/tsp/tsp50-cpu.pt and tsp100-cpu.pt)")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if args.quick:
        args.two_opt_batch, args.python_instances = 32, 4
        args.naive_instances, args.baseline_count = 0, 64
        args.diffusion_count = args.diffusion_batch = 2
    cache = None if args.no_cache else default_cache_dir()
    torch.set_num_threads(args.threads or min(2, os.cpu_count() or 1))
    wanted = set(args.only or ["two_opt", "baselines", "tsplib", "reference", "render",
                               "diffusion", "samples"])  # fmt: skip
    sections = {
        "two_opt": lambda: bench_two_opt(100, args.two_opt_batch, args.python_instances,
                                         args.naive_instances, torch.get_num_threads()),
        "baselines": lambda: [bench_baselines(n, args.baseline_count, cache) for n in (50, 100)],
        "tsplib": lambda: {"clean_27": bench_tsplib("skip"), "all_29": bench_tsplib("warn")},
        "reference": lambda: [bench_reference(n, 8 if args.quick else 40) for n in (50, 100)],
        "render": lambda: [bench_render(n, b) for n, b in ((50, 16), (100, 8), (200, 2))],
        "diffusion": lambda: [
            bench_diffusion(n, args.diffusion_count, [20, 5] if args.quick else [256, 50],
                            args.diffusion_batch, args.checkpoint, cache)
            for n in ((50,) if args.quick else (50, 100))
        ],
        "samples": lambda: bench_samples(50, 4 if args.quick else 16, 10 if args.quick else 50,
                                         args.checkpoint),
    }  # fmt: skip
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_1min_at_start": load,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
        },
    }
    for name, run in sections.items():
        if name in wanted:
            result[name] = run()
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
