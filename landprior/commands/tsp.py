"""`landprior tsp`: Euclidean TSP through the diffusion prior (paper section 5)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

logger = logging.getLogger(__name__)


def _solver_options(func: Any) -> Any:
    """Options shared by the commands that run the reference solver."""
    options = [
        click.option(
            "--solver",
            type=click.Choice(["fast-tsp", "elkai"]),
            default="fast-tsp",
            show_default=True,
            help="Reference solver (elkai needs the extra landprior[lkh]).",
        ),
        click.option(
            "--time-budget",
            type=float,
            default=None,
            help="fast-tsp seconds per instance [default: 0.2 ms per city].",
        ),
        click.option("--workers", type=int, default=2, show_default=True, help="Solver processes."),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Tour cache [default: $LANDPRIOR_CACHE_DIR or ~/.cache/landprior/tsp-tours].",
        ),
        click.option("--no-cache", is_flag=True, help="Solve everything; read/write no cache."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _config(solver: str, time_budget: float | None) -> Any:
    from landprior.tasks.tsp.solvers import SolverConfig

    return SolverConfig(solver=solver, time_budget=time_budget)  # type: ignore[arg-type]


def _cache(cache_dir: Path | None, no_cache: bool) -> Path | None:
    from landprior.tasks.tsp.solvers import default_cache_dir

    if no_cache:
        return None
    return cache_dir if cache_dir is not None else default_cache_dir()


def _read(path: Path, limit: int | None, duplicates: str) -> list[Any]:
    from landprior.tasks.tsp.data import TSPDataError, read_instances

    try:
        return read_instances(path, limit=limit, duplicates=duplicates)  # type: ignore[arg-type]
    except (TSPDataError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            click.echo(f"{key}: {value}")


_instances_option = click.option(
    "--instances",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Text file, one instance per line: x1 y1 ... xn yn [output t1 ... tn t1].",
)
_limit_option = click.option("--limit", type=int, default=None, help="Use the first K instances.")
_duplicates_option = click.option(
    "--duplicates",
    type=click.Choice(["error", "warn", "skip"]),
    default="error",
    show_default=True,
    help="Instances with repeated cities: reject the file, warn and keep them "
    "(zero-length edges), or skip them with a warning.",
)


@click.group(name="tsp")
def group() -> None:
    """Euclidean TSP through the diffusion prior."""


@group.command("generate")
@click.option("--n", "n", type=int, required=True, help="Cities per instance.")
@click.option("--count", type=int, required=True, help="Number of instances.")
@click.option("--seed", type=int, default=0, show_default=True, help="Generator seed.")
@click.option(
    "--kool",
    is_flag=True,
    help="Regenerate the first COUNT instances of the Kool et al. test set (seed 1234).",
)
@click.option("--solve", is_flag=True, help="Add reference tours (output t1 ... tn t1).")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output file."
)
@_solver_options
def generate(
    n: int,
    count: int,
    seed: int,
    kool: bool,
    solve: bool,
    out: Path,
    solver: str,
    time_budget: float | None,
    workers: int,
    cache_dir: Path | None,
    no_cache: bool,
) -> None:
    """Write COUNT uniform instances of N cities (optionally solved) in the text format."""
    from landprior.tasks.tsp.data import kool_test_set, uniform_instances, write_instances
    from landprior.tasks.tsp.solvers import reference_tours

    points = kool_test_set(n, count) if kool else uniform_instances(count, n, seed)
    tours = None
    if solve:
        solved = reference_tours(
            list(points),
            _config(solver, time_budget),
            workers=workers,
            cache_dir=_cache(cache_dir, no_cache),
        )
        tours = solved.tours
    write_instances(out, points, tours)
    click.echo(f"wrote {count} instances of N={n} to {out}" + (" with tours" if solve else ""))


@group.command("reference")
@_instances_option
@_limit_option
@_duplicates_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the instances with the solver's tours.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_solver_options
def reference(
    instances: Path,
    limit: int | None,
    duplicates: str,
    out: Path | None,
    as_json: bool,
    solver: str,
    time_budget: float | None,
    workers: int,
    cache_dir: Path | None,
    no_cache: bool,
) -> None:
    """Solve INSTANCES with the reference solver; compare with the file's tours if present."""
    from landprior.tasks.tsp.data import gap_pct, tour_lengths, write_instances
    from landprior.tasks.tsp.solvers import reference_tours

    records = _read(instances, limit, duplicates)
    config = _config(solver, time_budget)
    solved = reference_tours(
        [r.points for r in records],
        config,
        workers=workers,
        cache_dir=_cache(cache_dir, no_cache),
    )
    lengths = np.array(
        [float(tour_lengths(r.points, t)) for r, t in zip(records, solved.tours, strict=True)]
    )
    result: dict[str, Any] = {
        "n_instances": len(records),
        "n_cities": sorted({r.n for r in records}),
        "solver": config.tag(),
        "mean_length": float(lengths.mean()),
        "mean_reference_length": None,
        "gap_pct": None,
        "n_shorter_than_file": None,
        # solver wall time per instance actually solved (None when all came from the cache)
        "seconds_per_instance": solved.seconds_per_solved if solved.n_solved else None,
        "n_solved": solved.n_solved,
        "n_from_cache": solved.n_cached,
    }
    if all(r.tour is not None for r in records):
        file_lengths = np.array([float(tour_lengths(r.points, r.tour)) for r in records])
        result["mean_reference_length"] = float(file_lengths.mean())
        result["gap_pct"] = gap_pct(lengths, file_lengths)
        result["n_shorter_than_file"] = int((lengths < file_lengths - 1e-9).sum())
    if out is not None:
        write_instances(out, [r.points for r in records], solved.tours)
    _emit(result, as_json)


@group.command("baseline")
@_instances_option
@_limit_option
@_duplicates_option
@click.option(
    "--method",
    type=click.Choice(["greedy", "greedy-two-opt", "nn-two-opt", "two-opt"]),
    default="nn-two-opt",
    show_default=True,
    help="greedy: nearest-edge greedy alone; greedy-two-opt: then 2-opt; nn-two-opt: "
    "2-opt from nearest neighbour (the paper's '2-opt alone'); two-opt: from a random tour.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random tours.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def baseline(
    instances: Path, limit: int | None, duplicates: str, method: str, seed: int, as_json: bool
) -> None:
    """Non-diffusion baselines of the paper's Table 2 on INSTANCES."""
    from landprior.tasks.tsp.data import gap_pct, group_by_size, tour_lengths
    from landprior.tasks.tsp.extract import baseline_tours

    records = _read(instances, limit, duplicates)
    lengths = np.zeros(len(records))
    moves = np.zeros(len(records))
    start = time.perf_counter()
    for _, idx in sorted(group_by_size(records).items()):
        points = np.stack([records[k].points for k in idx])
        result = baseline_tours(points, method, seed=seed)  # type: ignore[arg-type]
        lengths[idx] = result.lengths
        moves[idx] = result.moves
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {
        "method": method,
        "n_instances": len(records),
        "n_cities": sorted({r.n for r in records}),
        "mean_length": float(lengths.mean()),
        "mean_reference_length": None,
        "gap_pct": None,
        "two_opt_moves_mean": float(moves.mean()),
        "seconds_per_instance": seconds / len(records),
    }
    if all(r.tour is not None for r in records):
        reference_lengths = np.array([float(tour_lengths(r.points, r.tour)) for r in records])
        out["mean_reference_length"] = float(reference_lengths.mean())
        out["gap_pct"] = gap_pct(lengths, reference_lengths)
    _emit(out, as_json)


@group.command("render-dataset")
@click.option("--n", "n", type=int, required=True, help="Cities per instance.")
@click.option("--count", type=int, required=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Generator seed.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Output .npy, (COUNT, 1, 64, 64) float32 in [-1, 1].",
)
@_solver_options
def render_dataset(
    n: int,
    count: int,
    seed: int,
    out: Path,
    solver: str,
    time_budget: float | None,
    workers: int,
    cache_dir: Path | None,
    no_cache: bool,
) -> None:
    """Images of solved tours for training the prior (plus .instances.txt and .json)."""
    from landprior.tasks.tsp.render import build_render_dataset

    if out.suffix != ".npy":
        raise click.BadParameter(f"must end in .npy, got {out}", param_hint="--out")
    build_render_dataset(
        out,
        count=count,
        n=n,
        seed=seed,
        config=_config(solver, time_budget),
        workers=workers,
        cache_dir=_cache(cache_dir, no_cache),
    )
    click.echo(f"wrote {count} images of solved N={n} tours to {out}")


# ---------------------------------------------------------------------------------------
# SEAM (diffusion solver, issue 6): `landprior tsp solve --instances FILE [--limit K]
# [--steps S] --json` belongs here once the trained TSP prior and the engine's latent
# inference exist. It will: read instances (data.read_instances), group them by size,
# precompute rasters (render.edge_rasters), optimise logits L (adjacency.init_logits) with
# the engine on x = render.image_from_logits(rasters, L), then extract tours with
# extract.tours_from_adjacency(A, points) and report the same JSON keys as `baseline`.
# ---------------------------------------------------------------------------------------
