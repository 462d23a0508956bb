"""`landprior tsp`: Euclidean TSP through the diffusion prior (paper section 5)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
from click.core import ParameterSource

from landprior.commands import device_option, train_device_option
from landprior.commands.diffusion import build_train_config, data_changed_error, resume_options
from landprior.fileio import ensure_writable

if TYPE_CHECKING:
    import torch

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
            type=click.FloatRange(min=0.0, min_open=True),
            default=None,
            help="fast-tsp seconds per instance [default: 0.2 ms per city].",
        ),
        click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
                     help="Solver processes."),
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
    """The solver settings, after checking the solver is installed (a one-line error)."""
    from landprior.tasks.tsp.solvers import (
        SolverConfig,
        SolverUnavailableError,
        check_solver_available,
    )

    try:
        check_solver_available(solver)
    except SolverUnavailableError as exc:
        raise click.ClickException(str(exc)) from exc
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


def _file_tour_lengths(records: list[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Lengths of the file's own tours (input units, unit square), or None unless every
    instance has one."""
    from landprior.tasks.tsp.data import input_unit_lengths, tour_lengths

    if not all(r.tour is not None for r in records):
        return None
    unit = np.array([float(tour_lengths(r.points, r.tour)) for r in records])
    return input_unit_lengths(unit, records), unit


def _length_fields(
    unit_lengths: np.ndarray, records: list[Any], file_tours: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, Any]:
    """The length keys every TSP report shares: means in the instances' input units and in
    the unit square the solve ran in, and the gap to the file's tours (null without them)."""
    from landprior.tasks.tsp.data import gap_pct, input_unit_lengths

    lengths = input_unit_lengths(unit_lengths, records)
    reference, reference_unit = file_tours if file_tours is not None else (None, None)
    return {
        "mean_length": float(lengths.mean()),
        "mean_length_unit_square": float(np.mean(unit_lengths)),
        "mean_reference_length": None if reference is None else float(reference.mean()),
        "mean_reference_length_unit_square": (
            None if reference_unit is None else float(reference_unit.mean())
        ),
        "gap_pct": None if reference is None else gap_pct(lengths, reference),
    }


_instances_option = click.option(
    "--instances",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Text file, one instance per line: x1 y1 ... xn yn [output t1 ... tn t1].",
)
_limit_option = click.option("--limit", type=click.IntRange(min=1), default=None,
                             help="Use the first K instances.")
_duplicates_option = click.option(
    "--duplicates",
    type=click.Choice(["error", "warn", "skip"]),
    default="error",
    show_default=True,
    help="Instances with repeated cities: reject the file, warn and keep them "
    "(zero-length edges), or skip them with a warning.",
)
_kernel_option = click.option(
    "--two-opt-kernel",
    "kernel",
    type=click.Choice(["auto", "compiled", "pruned", "dense"]),
    default="auto",
    show_default=True,
    help="2-opt implementation; all give identical tours. auto: compiled (numba) when "
    "installed, else pruned (vectorised numpy).",
)


@click.group(name="tsp")
def group() -> None:
    """Euclidean TSP through the diffusion prior."""


@group.command("generate")
@click.option("--n", "n", type=click.IntRange(min=4), required=True,
              help="Cities per instance (at least 4).")
@click.option("--count", type=click.IntRange(min=1), required=True, help="Number of instances.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Generator seed.")
@click.option(
    "--kool",
    is_flag=True,
    help="Regenerate the first COUNT (at most 10,000) instances of the Kool et al. test set "
    "(a fixed set: no --seed).",
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
    from landprior.tasks.tsp.data import (
        KOOL_TEST_SIZE,
        kool_test_set,
        uniform_instances,
        write_instances,
    )
    from landprior.tasks.tsp.solvers import reference_tours

    if kool:
        source = click.get_current_context().get_parameter_source("seed")
        if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            raise click.UsageError(
                f"--seed {seed} does not apply with --kool: the Kool et al. test set is fixed "
                "(drawn with seed 1234); leave out --seed, or drop --kool for a seeded uniform set"
            )
        if count > KOOL_TEST_SIZE:
            raise click.BadParameter(
                f"the Kool et al. test set has {KOOL_TEST_SIZE} instances, asked for {count}",
                param_hint="--count",
            )
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
    help="Also write the instances (in their input units) with the solver's tours.",
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
    """Solve INSTANCES with the reference solver; compare with the file's tours if present.

    Lengths are in the instances' input units (the gap is computed from them); the
    *_unit_square keys are the lengths once each instance is scaled into [0, 1]^2 for the
    solve (the same figures when the input already lies there).
    """
    from landprior.tasks.tsp.data import tour_lengths, write_instances
    from landprior.tasks.tsp.solvers import reference_tours

    records = _read(instances, limit, duplicates)
    config = _config(solver, time_budget)
    if out is not None:
        ensure_writable(out)
    solved = reference_tours(
        [r.points for r in records],
        config,
        workers=workers,
        cache_dir=_cache(cache_dir, no_cache),
    )
    unit = np.array(
        [float(tour_lengths(r.points, t)) for r, t in zip(records, solved.tours, strict=True)]
    )
    file_tours = _file_tour_lengths(records)
    result: dict[str, Any] = {
        "n_instances": len(records),
        "n_cities": sorted({r.n for r in records}),
        "solver": config.tag(),
        **_length_fields(unit, records, file_tours),
        "n_shorter_than_file": (
            None if file_tours is None else int((unit < file_tours[1] - 1e-9).sum())
        ),
        # solver wall time per instance actually solved (None when all came from the cache)
        "seconds_per_instance": solved.seconds_per_solved if solved.n_solved else None,
        "n_solved": solved.n_solved,
        "n_from_cache": solved.n_cached,
    }
    _emit(result, as_json)
    if out is not None:
        write_instances(out, [r.original_points for r in records], solved.tours)


@group.command("baseline")
@_instances_option
@_limit_option
@_duplicates_option
@click.option(
    "--method",
    type=click.Choice(["greedy", "greedy-two-opt", "nn-two-opt", "two-opt"]),
    default="nn-two-opt",
    show_default=True,
    help="greedy: nearest-edge greedy alone; greedy-two-opt: then 2-opt (what matches the "
    "paper's '2-opt alone' row, 2.95 % at N = 50); nn-two-opt: 2-opt from nearest neighbour "
    "(~3.4 % at N = 50); two-opt: from a random tour.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of random tours.")
@click.option(
    "--starts",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="two-opt only: random start tours per instance (seeds SEED, SEED+1, ...); the "
    "shortest 2-opt tour is kept.",
)
@_kernel_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def baseline(
    instances: Path,
    limit: int | None,
    duplicates: str,
    method: str,
    seed: int,
    starts: int,
    kernel: str,
    as_json: bool,
) -> None:
    """Non-diffusion baselines of the paper's Table 2 on INSTANCES.

    Lengths are in the instances' input units (the gap is computed from them); the
    *_unit_square keys are the lengths once each instance is scaled into [0, 1]^2 for the
    solve (the same figures when the input already lies there).
    """
    from landprior.tasks.tsp.data import group_by_size
    from landprior.tasks.tsp.extract import baseline_tours, warm_up_two_opt

    if starts > 1 and method != "two-opt":
        raise click.UsageError(
            f"--starts {starts} needs --method two-opt (the {method} start is deterministic)"
        )
    warm_up_two_opt()  # a first-run kernel compilation stays out of seconds_per_instance
    records = _read(instances, limit, duplicates)
    lengths = np.full(len(records), np.inf)
    moves = np.zeros(len(records))
    start = time.perf_counter()
    for _, idx in sorted(group_by_size(records).items()):
        rows = np.asarray(idx)
        points = np.stack([records[k].points for k in rows])
        for s in range(starts):
            result = baseline_tours(points, method, seed=seed + s, kernel=kernel)  # type: ignore[arg-type]
            better = result.lengths < lengths[rows]  # ties keep the earlier start
            lengths[rows[better]] = result.lengths[better]
            moves[rows[better]] = result.moves[better]
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {
        "method": method,
        "n_instances": len(records),
        "n_cities": sorted({r.n for r in records}),
        **_length_fields(lengths, records, _file_tour_lengths(records)),
        "two_opt_moves_mean": float(moves.mean()),
        "two_opt_kernel": kernel,
        "starts": starts,
        "seconds_per_instance": seconds / len(records),
    }
    _emit(out, as_json)


@group.command("render-dataset")
@click.option("--n", "n", type=click.IntRange(min=4), required=True,
              help="Cities per instance (at least 4).")
@click.option("--count", type=click.IntRange(min=1), required=True, help="Number of images.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Generator seed.")
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


@group.command("solve")
@_instances_option
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=True, path_type=Path),
    required=True,
    help="Trained tour-image prior: checkpoint.pt or its run folder (see models/tsp/README.md).",
)
@_limit_option
@_duplicates_option
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Algorithm 1 steps (the paper: 256; the 'tsp' t schedule keeps its shape).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Instances per denoiser call.",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Diffusion runs per instance (different seeds); the shortest tour is kept. "
    "1 is the paper's setting; the K runs are batched with the instances (--batch-size "
    "rows per denoiser call), so K costs K times the network work.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the diffusion noise (drawn per instance from the seed and instance id).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch CPU threads (default: torch's choice).",
)
@device_option("cpu")
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of the EMA.")
@click.option("--no-two-opt", is_flag=True, help="Greedy extraction only (no 2-opt).")
@_kernel_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the instances (in their input units) with the diffusion tours (text "
    "format).",
)
@click.option("--progress", is_flag=True, help="Progress bar on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def solve(
    instances: Path,
    checkpoint: Path,
    limit: int | None,
    duplicates: str,
    steps: int,
    batch_size: int,
    samples: int,
    seed: int,
    threads: int | None,
    device: torch.device,
    no_ema: bool,
    no_two_opt: bool,
    kernel: str,
    out: Path | None,
    progress: bool,
    as_json: bool,
) -> None:
    """Solve INSTANCES with the diffusion prior (paper section 5) and report Table 2 figures.

    Instances are grouped by city count and batched; the gap is sum(lengths) /
    sum(reference lengths) - 1 against the file's tours (null when the file has none).
    Lengths are in the instances' input units (the gaps are computed from them); the
    *_unit_square keys are the lengths once each instance is scaled into [0, 1]^2 for the
    solve (the same figures when the input already lies there).
    """
    import torch

    from landprior.tasks.tsp.data import write_instances
    from landprior.tasks.tsp.diffuse import (
        DiffusionSolverConfig,
        TSPPriorError,
        load_prior,
        solve_instances,
        warm_up,
    )

    if threads is not None:
        torch.set_num_threads(threads)
    if out is not None:
        ensure_writable(out)  # before the solve, not after it
    warm_up()  # one-off imports stay out of seconds_per_instance
    try:
        prior = load_prior(checkpoint, use_ema=not no_ema, device=device)
    except TSPPriorError as exc:
        raise click.ClickException(str(exc)) from exc
    records = _read(instances, limit, duplicates)
    config = DiffusionSolverConfig(
        steps=steps,
        batch_size=batch_size,
        two_opt=not no_two_opt,
        kernel=kernel,  # type: ignore[arg-type]
        samples=samples,
    )
    start = time.perf_counter()
    result = solve_instances(
        prior.denoiser,
        prior.schedule,
        [r.points for r in records],
        config=config,
        seed=seed,
        device=device,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    file_tours = _file_tour_lengths(records)
    greedy = _length_fields(result.greedy_lengths, records, file_tours)
    sizes = sorted(result.groups)
    unet = prior.meta["unet_config"]
    summary: dict[str, Any] = {
        "n_instances": len(records),
        "n": sizes[0] if len(sizes) == 1 else sizes,
        "n_cities": sizes,
        "steps": steps,
        "samples": samples,
        **_length_fields(result.lengths, records, file_tours),
        "greedy_mean_length": greedy["mean_length"],
        "greedy_mean_length_unit_square": greedy["mean_length_unit_square"],
        "greedy_gap_pct": greedy["gap_pct"],
        "two_opt_moves_mean": float(result.moves.mean()),
        "seconds_per_instance": seconds / len(records),
        "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
        "batch_size": batch_size,
        "seed": seed,
        "two_opt": not no_two_opt,
        "two_opt_kernel": kernel,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "checkpoint": str(checkpoint),
        "checkpoint_step": prior.meta.get("step"),
        "prior": unet.name,
        "weights": prior.meta.get("weights"),
    }
    _emit(summary, as_json)  # first: the figures survive a failing write
    if out is not None:
        write_instances(out, [r.original_points for r in records], result.tours)


@group.command("train-prior")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder: checkpoint.pt, loss.jsonl, and data/ with the rendered tour images.",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=4),
    default=50,
    show_default=True,
    help="Cities per training instance.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=32_000,
    show_default=True,
    help="Solved tour images to render.",
)
@click.option(
    "--data-seed",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Seed of the training instances (keep it apart from the test files' seeds).",
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Use this rendered .npy (from render-dataset) instead of building one.",
)
@click.option(
    "--preset",
    type=click.Choice(["tsp-cpu", "tsp64"]),
    default="tsp-cpu",
    show_default=True,
    help="U-Net: tsp-cpu (CPU, ~1.2M params) or tsp64 (paper, GPU).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="Total optimizer steps of the run.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Tour images per optimizer step.",
)
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate.")
@click.option(
    "--ema-rate",
    type=float,
    default=0.999,
    show_default=True,
    help="EMA rate of the weights (0.999 suits runs of ~10^4 steps); 0 disables the EMA.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the initial weights, batches, timesteps, noise and flips.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Write OUT/checkpoint.pt every this many steps (and at the end).",
)
@click.option(
    "--no-flips",
    is_flag=True,
    help="No random flips (by default images are flipped left-right and up-down: "
    "a reflected tour is the optimal tour of the reflected instance).",
)
@resume_options
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch CPU threads (default: torch's choice).",
)
@train_device_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_solver_options
def train_prior(
    out_dir: Path,
    n: int,
    count: int,
    data_seed: int,
    data_path: Path | None,
    preset: str,
    steps: int,
    batch_size: int,
    lr: float,
    ema_rate: float,
    seed: int,
    checkpoint_every: int,
    no_flips: bool,
    resume: bool,
    allow_data_change: bool,
    init_from: Path | None,
    threads: int | None,
    device: str | None,
    no_progress: bool,
    solver: str,
    time_budget: float | None,
    workers: int,
    cache_dir: Path | None,
    no_cache: bool,
) -> None:
    """Render solved tours and train the tour-image prior (resumable with --resume).

    Builds OUT/data/tours-n{N}-count{COUNT}-seed{DATA_SEED}.npy (reused when it is already
    there), then trains the DDPM on it into OUT (checkpoint.pt, loss.jsonl). Equivalent to
    `landprior tsp render-dataset` followed by `landprior diffusion train --preset tsp-cpu
    --hflip --vflip`.
    """
    import torch

    from landprior.diffusion.train import (
        TrainingDataChanged,
        check_init_from,
        train,
    )
    from landprior.diffusion.unet import UNetConfig
    from landprior.tasks.tsp.render import RasterSpec, build_render_dataset

    if threads is not None:
        torch.set_num_threads(threads)
    if init_from is not None and not resume:  # fail before rendering, not after
        try:
            check_init_from(init_from, preset)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    spec = RasterSpec()
    if data_path is None:
        data_path = out_dir / "data" / f"tours-n{n}-count{count}-seed{data_seed}.npy"
        meta_path = data_path.with_suffix(".json")
        if data_path.exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if (meta.get("count"), meta.get("n"), meta.get("seed")) != (count, n, data_seed):
                raise click.ClickException(f"{data_path} does not match {meta_path}")
            logger.info("reusing %s", data_path)
        else:
            click.echo(f"rendering {count} solved N={n} tours to {data_path}", err=True)
            build_render_dataset(
                data_path,
                count=count,
                n=n,
                seed=data_seed,
                config=_config(solver, time_budget),
                workers=workers,
                cache_dir=_cache(cache_dir, no_cache),
                spec=spec,
            )
    if data_path.suffix != ".npy":
        raise click.BadParameter(f"must be a .npy file, got {data_path}", param_hint="--data")
    images = np.load(data_path, mmap_mode="r")
    res = spec.resolution
    if images.ndim != 4 or images.shape[1:] != (1, res, res):
        raise click.ClickException(
            f"{data_path} holds images of shape {images.shape[1:]}; the TSP prior needs "
            f"(1, {res}, {res}) tour images (landprior tsp render-dataset)"
        )
    unet = UNetConfig.preset(preset)
    config = build_train_config(
        steps=steps, batch_size=batch_size, lr=lr, ema_rate=ema_rate, seed=seed,
        hflip=not no_flips, vflip=not no_flips, checkpoint_every=checkpoint_every,
        device=device,
    )  # fmt: skip
    try:
        result = train(
            images, unet, config, out_dir,
            resume=resume, init_from=init_from, progress=not no_progress,
            allow_data_change=allow_data_change,
        )  # fmt: skip
    except TrainingDataChanged as exc:
        raise data_changed_error(exc, f"the tour images of {data_path}") from exc
    except (ValueError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from exc
    last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
    click.echo(f"step {result.step}: last loss {last}; checkpoint {result.checkpoint}")


@group.command("export-prior")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    required=True,
    help="Training checkpoint.pt (or its run folder) of the TSP prior.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Slim checkpoint to write (inference weights only), e.g. models/tsp/tsp50-cpu.pt.",
)
@click.option("--no-ema", is_flag=True, help="Export the raw weights instead of the EMA.")
def export_prior_cmd(checkpoint: Path, out: Path, no_ema: bool) -> None:
    """Write the inference weights of a trained prior (a few MB) for `tsp solve`."""
    from landprior.tasks.tsp.diffuse import TSPPriorError, export_prior

    try:
        path = export_prior(checkpoint, out, use_ema=not no_ema)
    except TSPPriorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
