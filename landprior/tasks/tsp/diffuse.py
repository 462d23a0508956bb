"""The diffusion TSP solver of Graikos et al. (2022), section 5, on the shared engine.

A trained DDPM over 64x64 images of solved tours is the only model: inference looks for
logits L whose soft adjacency ``A = S + S^T`` (``S = row-softmax(L / tau)``, diagonal masked)
renders to an image ``x = f(A)`` the prior finds likely. That is Algorithm 1 in a latent
(eq. 13, ``x = f(A(L))``, optimise L) with the prior alone - no constraint term - and it is
delegated to :func:`landprior.engine.pnp.infer_latent`; nothing of the loop lives here.

Per batch of equal-size instances (points (B, n, 2)):

1. edge rasters once (:func:`landprior.tasks.tsp.render.edge_rasters`, sparse);
2. ``L ~ N(0, 1)`` (B, n, n), drawn per instance from ``(seed, instance id)``;
3. the engine on ``decode(L) = f(A(L))`` (:func:`~landprior.tasks.tsp.render.image_from_logits`)
   with the paper's "tsp" t schedule (256 steps, or fewer with the same shape), Adam lr 1,
   betas (0, 0.9), lr decaying linearly 1 -> 0.77;
4. A from the final L, greedy edge insertion by ``A_ij / d_ij`` and batched 2-opt
   (:func:`landprior.tasks.tsp.extract.tours_from_adjacency`).

Randomness and batching. The start L of an instance and the diffusion noise of its every
step depend only on ``(seed, instance id)``: the engine draws each row of the noise from
that instance's own generator (:class:`~landprior.diffusion.sample.RowGenerators`).
Problems in a chunk never interact (each one's gradient involves only its own loss, Adam is
element-wise, the U-Net normalises per sample), so the result of an instance does not
depend on ``batch_size`` or on which other instances are solved with it - up to
floating-point differences of batched matrix products, which can in rare near-ties change
a greedy choice.

``torch.set_num_threads`` is left to the caller (PAPER_NOTES: two single-thread processes
beat one two-thread process on a 2-core CPU).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from landprior.diffusion.denoiser import Denoiser
from landprior.diffusion.sample import RowGenerators
from landprior.diffusion.schedule import NoiseSchedule
from landprior.engine.pnp import PnPStep, infer_latent, linear_lr
from landprior.engine.schedules import paper_schedule
from landprior.tasks.tsp.adjacency import DEFAULT_TAU, adjacency_from_logits
from landprior.tasks.tsp.data import MIN_CITIES, tour_lengths
from landprior.tasks.tsp.extract import (
    TWO_OPT_KERNELS,
    TwoOptKernel,
    tours_from_adjacency,
    two_opt,
    warm_up_two_opt,
)
from landprior.tasks.tsp.render import RasterSpec, edge_rasters, image_from_logits

__all__ = [
    "PAPER_STEPS",
    "ChunkStep",
    "DiffusionSolverConfig",
    "DiffusionTours",
    "SolvedInstances",
    "TSPPrior",
    "TSPPriorError",
    "check_prior_config",
    "export_prior",
    "instance_seed",
    "load_prior",
    "sample_seeds",
    "solve",
    "solve_instances",
    "warm_up",
]

logger = logging.getLogger(__name__)

PAPER_STEPS = 256
_SEED_MASK = (1 << 63) - 1
_NOISE_STREAM = 1  # spawn-key tag separating the engine's noise from the start logits
_SAMPLE_STREAM = 2  # spawn-key tag of the seeds of samples 2..K (best-of-K solving)


class TSPPriorError(ValueError):
    """A checkpoint that cannot serve as the TSP prior (missing, wrong image size/channels)."""


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class DiffusionSolverConfig:
    """Settings of the diffusion solver; defaults are the paper's (section 5, 256 steps).

    Attributes:
        steps: Algorithm 1 steps; the "tsp" t schedule keeps its shape at any count
            (``paper_schedule("tsp", steps=steps)``, 1000 -> ~4 at T = 1000).
        batch_size: instances per denoiser call (chunk size).
        lr, betas, lr_end: Adam on L with lr ``lr``, ``betas``, and the lr factor decaying
            linearly from 1 to ``lr_end`` over the run.
        tau: softmax temperature of S = row-softmax(L / tau) (authors: 10).
        two_opt: refine the greedy tour with 2-opt (the paper's full pipeline).
        kernel: 2-opt kernel (:data:`landprior.tasks.tsp.extract.TWO_OPT_KERNELS`).
        samples: independent diffusion runs per instance (different start logits and
            noise); the shortest final tour is kept (1: the paper's single run). Sample 1
            uses the run's seed, so ``samples=1`` and the first of K give the same tour.
    """

    steps: int = PAPER_STEPS
    batch_size: int = 16
    lr: float = 1.0
    betas: tuple[float, float] = (0.0, 0.9)
    lr_end: float = 0.77
    tau: float = DEFAULT_TAU
    two_opt: bool = True
    kernel: TwoOptKernel = "auto"
    samples: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (np.isfinite(self.lr_end) and self.lr_end > 0):
            raise ValueError(f"lr_end must be a finite number > 0, got {self.lr_end!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not (np.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"tau must be a finite number > 0, got {self.tau!r}")
        if self.kernel not in TWO_OPT_KERNELS:
            raise ValueError(f"kernel must be one of {TWO_OPT_KERNELS}, got {self.kernel!r}")

    def t_schedule(self, num_timesteps: int = 1000) -> Tensor:
        """The paper's "tsp" t schedule with ``steps`` steps: long tensor (steps,)."""
        return paper_schedule("tsp", steps=self.steps, num_timesteps=num_timesteps)


# --------------------------------------------------------------------------- the prior
@dataclass(frozen=True, eq=False)
class TSPPrior:
    """A loaded tour-image prior: eps-denoiser, its noise schedule, checkpoint metadata."""

    denoiser: Denoiser
    schedule: NoiseSchedule
    meta: dict[str, Any] = field(default_factory=dict)


def check_prior_config(unet_config: Any, spec: RasterSpec | None = None, where: str = "") -> None:
    """Raise :class:`TSPPriorError` unless the network takes 1-channel ``res x res`` images.

    The renderer draws f(A) as a (B, 1, res, res) image (res = 64 by default), so the prior
    must model exactly that: ``in_channels == 1``, eps for 1 channel, ``image_size == res``
    and unconditional.
    """
    spec = spec or RasterSpec()
    res = spec.resolution
    label = f"{where}: " if where else ""
    problems = []
    if unet_config.in_channels != 1 or unet_config.eps_channels != 1:
        problems.append(
            f"it models {unet_config.in_channels}-channel images (eps for "
            f"{unet_config.eps_channels}), the tour image f(A) has 1 channel"
        )
    if unet_config.image_size != res:
        problems.append(
            f"it was built for {unet_config.image_size}x{unet_config.image_size} images, the "
            f"renderer draws {res}x{res}"
        )
    if unet_config.num_classes is not None:
        problems.append(f"it is class-conditional ({unet_config.num_classes} classes)")
    if problems:
        raise TSPPriorError(
            f"{label}not a TSP tour-image prior: "
            + "; ".join(problems)
            + " (train one with `landprior tsp train-prior`)"
        )


def load_prior(
    checkpoint: str | Path,
    *,
    use_ema: bool = True,
    device: torch.device | str = "cpu",
    spec: RasterSpec | None = None,
) -> TSPPrior:
    """Load a training checkpoint (file or run folder) as the TSP prior, checking its shape.

    Raises:
        TSPPriorError: missing file, not a landprior checkpoint, or an image size / channel
            count that does not fit the renderer (1 channel, 64x64 by default).
    """
    from landprior.diffusion.train import load_denoiser

    try:  # a slim export holds one set of weights; load_denoiser reads which
        denoiser, schedule, meta = load_denoiser(checkpoint, use_ema, device=device)
    except FileNotFoundError as exc:
        raise TSPPriorError(
            f"{exc}; train a prior with `landprior tsp train-prior` (see models/tsp/README.md)"
        ) from exc
    except ValueError as exc:  # wrong format, class-conditional network, ...
        raise TSPPriorError(f"{checkpoint}: {exc}") from exc
    check_prior_config(meta["unet_config"], spec, str(checkpoint))
    return TSPPrior(denoiser, schedule, meta)


def export_prior(
    checkpoint: str | Path, out: str | Path, *, use_ema: bool = True, spec: RasterSpec | None = None
) -> Path:
    """Write a slim copy of a training checkpoint: inference weights only (a few MB).

    The copy keeps the checkpoint format (``load_prior`` / ``load_denoiser`` read it) with
    the EMA weights (or the raw ones) as ``model`` and no EMA, optimizer or random states,
    so it cannot be resumed. The source must be a valid TSP prior. Written atomically.
    """
    from landprior.diffusion.train import export_inference_checkpoint, load_checkpoint
    from landprior.diffusion.unet import UNetConfig

    try:
        ckpt = load_checkpoint(checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        raise TSPPriorError(str(exc)) from exc
    check_prior_config(UNetConfig.from_dict(ckpt["unet_config"]), spec, str(checkpoint))
    return export_inference_checkpoint(checkpoint, out, use_ema=use_ema)


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ChunkStep:
    """Progress report: one engine step of the chunk of ``size`` instances starting at ``first``."""

    n: int
    first: int
    size: int
    step: PnPStep


ChunkCallback = Callable[[ChunkStep], None]


@dataclass(frozen=True, eq=False)
class DiffusionTours:
    """Result of :func:`solve` for B instances of n cities.

    Attributes:
        tours: (B, n) int64 closed tours.
        lengths: (B,) float64 tour lengths (after 2-opt when enabled).
        greedy_lengths: (B,) lengths of the greedy extraction from the same A, before 2-opt.
        moves: (B,) 2-opt moves applied.
        steps: Algorithm 1 steps run.
        seconds: wall seconds, keys "rasters", "inference", "extraction", "total".
        adjacency: (B, n, n) float32 final A when requested (``keep_adjacency``), else None.
    """

    tours: np.ndarray
    lengths: np.ndarray
    greedy_lengths: np.ndarray
    moves: np.ndarray
    steps: int
    seconds: dict[str, float]
    adjacency: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class SolvedInstances:
    """Result of :func:`solve_instances` for K instances of possibly different sizes.

    ``tours[k]`` is (n_k,) int64; ``lengths``, ``greedy_lengths`` and ``moves`` are (K,);
    ``groups`` maps each city count to the input indices solved together; ``seconds`` sums
    the per-group timings.
    """

    tours: list[np.ndarray]
    lengths: np.ndarray
    greedy_lengths: np.ndarray
    moves: np.ndarray
    steps: int
    seconds: dict[str, float]
    groups: dict[int, list[int]]


def warm_up() -> None:
    """Import what torch loads lazily on the first optimizer (torch._dynamo, ~3 s on CPU).

    Call it before timing :func:`solve` so that a process's one-off start-up cost is not
    charged to the instances of its first chunk. Also compiles the 2-opt kernel.
    """
    torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    warm_up_two_opt()


# --------------------------------------------------------------------------- seeding
def instance_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from ``seed`` and integer keys (numpy SeedSequence spawn keys)."""
    if seed < 0 or any(k < 0 for k in keys):
        raise ValueError(f"seed and keys must be >= 0, got {seed}, {keys}")
    state = np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in keys))
    return int(state.generate_state(1, np.uint64)[0]) & _SEED_MASK


def sample_seeds(seed: int, samples: int) -> list[int]:
    """The seeds of best-of-K solving: ``seed`` itself, then K - 1 derived from it."""
    return [seed] + [instance_seed(seed, k, _SAMPLE_STREAM) for k in range(1, samples)]


def _start_logits(ids: Sequence[int], n: int, seeds: Sequence[int]) -> Tensor:
    """L ~ N(0, 1) of shape (len(ids), n, n), row b drawn from ``(seeds[b], ids[b])`` alone."""
    rows = [
        torch.randn(n, n, generator=torch.Generator().manual_seed(instance_seed(s, k)))
        for s, k in zip(seeds, ids, strict=True)
    ]
    return torch.stack(rows)


# --------------------------------------------------------------------------- solver
def _check_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[-1] != 2 or pts.shape[0] < 1:
        raise ValueError(f"points must be (B, n, 2) with B >= 1, got {pts.shape}")
    if pts.shape[1] < MIN_CITIES:
        raise ValueError(f"a TSP instance needs at least {MIN_CITIES} cities, got n={pts.shape[1]}")
    if not np.isfinite(pts).all():
        raise ValueError("points contain NaN or inf")
    if pts.min() < -1e-9 or pts.max() > 1 + 1e-9:
        raise ValueError(
            "points must lie in [0, 1]^2 (read files with landprior.tasks.tsp.data, which "
            "normalises them)"
        )
    return pts


def _check_schedule(t_schedule: Tensor, schedule: NoiseSchedule) -> None:
    if int(t_schedule.max()) > schedule.num_timesteps:
        raise ValueError(
            f"t schedule reaches {int(t_schedule.max())} > T = {schedule.num_timesteps}"
        )


def solve(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    points: np.ndarray,
    *,
    config: DiffusionSolverConfig | None = None,
    seed: int | Sequence[int] = 0,
    ids: Sequence[int] | None = None,
    spec: RasterSpec | None = None,
    device: torch.device | str | None = None,
    callback: ChunkCallback | None = None,
    progress: bool = False,
    keep_adjacency: bool = False,
) -> DiffusionTours:
    """Solve B Euclidean TSP instances of equal size with the diffusion prior (section 5).

    Args:
        denoiser: eps_theta(x_t, t) of a prior over (B, 1, res, res) tour images (t in 1..T).
        schedule: the prior's noise schedule.
        points: (B, n, 2) cities in [0, 1]^2 (or (n, 2) for one instance).
        config: solver settings (default: the paper's 256 steps).
        seed: non-negative seed, or one per instance (B,); with ``ids`` it fixes every
            random draw.
        ids: (B,) non-negative instance ids (default ``0 .. B-1``); instance k starts from
            L and the noise drawn from ``(seed[k], ids[k])`` alone, so the same pair gives
            the same run in any batch (best-of-K batches an instance's K seeds together).
        spec: image geometry (must match what the prior was trained on; default 64 px).
        device: where L, the rasters and the denoiser's inputs live (default: CPU).
        callback: called with a :class:`ChunkStep` after every engine step.
        progress: show a tqdm bar over instances.
        keep_adjacency: also return the final A (B, n, n).

    Returns:
        :class:`DiffusionTours`.
    """
    config = config or DiffusionSolverConfig()
    spec = spec or RasterSpec()
    pts = _check_points(points)
    b, n, _ = pts.shape
    ids = list(range(b)) if ids is None else [int(k) for k in ids]
    if len(ids) != b:
        raise ValueError(f"ids has {len(ids)} entries for {b} instances")
    seeds = [int(seed)] * b if isinstance(seed, int | np.integer) else [int(x) for x in seed]
    if len(seeds) != b:
        raise ValueError(f"seed has {len(seeds)} entries for {b} instances")
    if any(x < 0 for x in seeds) or any(k < 0 for k in ids):
        raise ValueError("seed and ids must be non-negative")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    t_sched = config.t_schedule(schedule.num_timesteps)
    _check_schedule(t_sched, schedule)

    tours = np.empty((b, n), dtype=np.int64)
    lengths = np.empty(b)
    greedy_lengths = np.empty(b)
    moves = np.zeros(b, dtype=np.int64)
    adjacency = np.empty((b, n, n), dtype=np.float32) if keep_adjacency else None
    seconds = {"rasters": 0.0, "inference": 0.0, "extraction": 0.0, "total": 0.0}
    start_all = time.perf_counter()
    bar = tqdm(total=b, disable=not progress, desc=f"tsp N={n} ({config.steps} steps)")
    with bar:
        for lo in range(0, b, config.batch_size):
            hi = min(lo + config.batch_size, b)
            chunk_ids, chunk_seeds = ids[lo:hi], seeds[lo:hi]
            start = time.perf_counter()
            rasters = edge_rasters(pts[lo:hi], spec).to(dev)
            seconds["rasters"] += time.perf_counter() - start

            start = time.perf_counter()
            logits = _start_logits(chunk_ids, n, chunk_seeds).to(dev)
            noise_gen = RowGenerators(
                [
                    instance_seed(s, k, _NOISE_STREAM)
                    for s, k in zip(chunk_seeds, chunk_ids, strict=True)
                ],
                # batch-wide draws (none with the fixed "tsp" t schedule)
                shared_seed=instance_seed(min(chunk_seeds), 0, _NOISE_STREAM),
            )

            def decode(latent: Tensor, r: Any = rasters) -> Tensor:
                return image_from_logits(r, latent, config.tau)

            step_cb = None
            if callback is not None:
                first, size = chunk_ids[0], hi - lo

                def step_cb(step: PnPStep, first: int = first, size: int = size) -> None:
                    callback(ChunkStep(n=n, first=first, size=size, step=step))

            final = infer_latent(
                denoiser,
                None,  # the prior alone on x = f(A(L)), paper section 5
                logits,
                decode,
                schedule,
                t_schedule=t_sched,
                optimizer="adam",
                lr=config.lr,
                optimizer_kwargs={"betas": tuple(config.betas)},
                lr_schedule=linear_lr(config.lr_end),
                generator=noise_gen,
                callback=step_cb,
            )
            adj = adjacency_from_logits(final, config.tau).to("cpu", torch.float32)
            seconds["inference"] += time.perf_counter() - start

            start = time.perf_counter()
            greedy = tours_from_adjacency(adj, pts[lo:hi], refine=False)
            greedy_lengths[lo:hi] = greedy.lengths
            if config.two_opt:
                refined = two_opt(pts[lo:hi], greedy.tours, kernel=config.kernel)
                tours[lo:hi] = refined.tours
                moves[lo:hi] = refined.moves
                lengths[lo:hi] = tour_lengths(pts[lo:hi], refined.tours)
            else:
                tours[lo:hi] = greedy.tours
                lengths[lo:hi] = greedy.lengths
            seconds["extraction"] += time.perf_counter() - start
            if adjacency is not None:
                adjacency[lo:hi] = adj.numpy()
            bar.update(hi - lo)
            logger.debug(
                "N=%d instances %d-%d: mean length %.4f (greedy %.4f), %.1f 2-opt moves",
                n,
                chunk_ids[0],
                chunk_ids[-1],
                lengths[lo:hi].mean(),
                greedy_lengths[lo:hi].mean(),
                moves[lo:hi].mean(),
            )
    seconds["total"] = time.perf_counter() - start_all
    logger.info(
        "solved %d TSP-%d instances with %d steps in %.2f s (%.3f s per instance)",
        b,
        n,
        config.steps,
        seconds["total"],
        seconds["total"] / b,
    )
    return DiffusionTours(tours, lengths, greedy_lengths, moves, config.steps, seconds, adjacency)


def solve_instances(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    instances: Sequence[np.ndarray],
    *,
    config: DiffusionSolverConfig | None = None,
    seed: int = 0,
    spec: RasterSpec | None = None,
    device: torch.device | str | None = None,
    callback: ChunkCallback | None = None,
    progress: bool = False,
) -> SolvedInstances:
    """:func:`solve` for instances of mixed sizes: grouped by n, each group batched.

    ``instances[k]`` is (n_k, 2) in [0, 1]^2; its id (for seeding) is its position k, so an
    instance gets the same start logits whatever else is in the list before it. With
    ``config.samples`` K > 1 every instance is solved K times (seeds ``seed`` and K - 1
    derived from it) and keeps its shortest tour; ``greedy_lengths`` and ``moves`` are
    those of the kept sample, ``seconds`` the sum over all samples. The K samples are
    batched with the instances (``config.batch_size`` rows per denoiser call), so one
    instance with K samples costs one K-row batch, not K one-row runs.
    """
    config = config or DiffusionSolverConfig()
    if not len(instances):
        raise ValueError("no instances to solve")
    groups: dict[int, list[int]] = {}
    for k, pts in enumerate(instances):
        arr = np.asarray(pts)
        if arr.ndim != 2 or arr.shape[-1] != 2:
            raise ValueError(f"instance {k}: points must be (n, 2), got {arr.shape}")
        groups.setdefault(arr.shape[0], []).append(k)
    count = len(instances)
    tours: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * count
    lengths = np.empty(count)
    greedy_lengths = np.empty(count)
    moves = np.zeros(count, dtype=np.int64)
    seconds = {"rasters": 0.0, "inference": 0.0, "extraction": 0.0, "total": 0.0}
    seeds = sample_seeds(seed, config.samples)
    k_samples = len(seeds)
    for n, idx in sorted(groups.items()):
        rows = np.asarray(idx)
        points = np.stack([np.asarray(instances[k], np.float64) for k in idx])
        # all K samples of the group in one call, sample-major: row s * B + b is instance b
        # under seed s, batched like any other rows (each row's draws depend on its pair)
        result = solve(
            denoiser, schedule, np.tile(points, (k_samples, 1, 1)), config=config,
            seed=np.repeat(seeds, len(idx)).tolist(), ids=idx * k_samples, spec=spec,
            device=device, callback=callback, progress=progress,
        )  # fmt: skip
        best = result.lengths.reshape(k_samples, -1).argmin(axis=0)  # ties: earlier sample
        kept = best * len(idx) + np.arange(len(idx))
        lengths[rows] = result.lengths[kept]
        greedy_lengths[rows] = result.greedy_lengths[kept]
        moves[rows] = result.moves[kept]
        for row, r in zip(rows.tolist(), kept.tolist(), strict=True):
            tours[row] = result.tours[r]
        for key, value in result.seconds.items():
            seconds[key] += value
        logger.debug("group N=%d: %d instances x %d samples", n, len(idx), k_samples)
    return SolvedInstances(tours, lengths, greedy_lengths, moves, config.steps, seconds, groups)
