"""Batched DDPM ancestral and DDIM samplers with pluggable guidance (k-diffusion style).

Both samplers are plain functions over a :class:`~landprior.diffusion.denoiser.Denoiser`
``eps_theta(x_t, t)`` and a :class:`~landprior.diffusion.schedule.NoiseSchedule`; they
share one step loop. Each step predicts ``eps``, the Tweedie estimate
``x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (Ho et al. eq. 15) and then

* DDPM (Ho et al. eq. 6-7): ``x_{t-1} = mu~_t(x0_hat, x_t) + sigma_t z`` with the
  posterior variance of q(x_{t-1} | x_t, x0) (no noise at t = 1);
* DDIM (Song et al. 2021 eq. 12): ``x_prev = sqrt(abar_prev) x0_hat
  + sqrt(1 - abar_prev - s^2) eps + s z`` with ``s = eta sqrt((1 - abar_prev) / (1 - abar_t))
  sqrt(1 - abar_t / abar_prev)`` on a sub-sequence of ``steps`` times.

Guidance (DPS, LGD-MC, ...) is a callable the samplers invoke once per step with
``(x_t, t, x0_hat, ctx)``; ``x0_hat`` is a differentiable function of ``x_t`` (the graph
through the denoiser is built only when a guidance term is present, otherwise every step
runs under ``torch.no_grad``). It returns an additive correction to ``x_{t-1}``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from landprior.diffusion.denoiser import Denoiser, as_batch_t
from landprior.diffusion.schedule import NoiseSchedule

__all__ = [
    "Guidance",
    "GuidanceContext",
    "RowGenerators",
    "SamplerStep",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_sample",
    "fork_generator",
    "randn",
    "shared_generator",
]


@dataclass(frozen=True)
class SamplerStep:
    """What one sampler step saw and produced (diffusers ``pred_original_sample`` style).

    Tensors are detached, shape (B, ...). ``t_prev = 0`` on the final step (clean data).
    """

    index: int
    t: int
    t_prev: int
    x_t: Tensor
    x0_hat: Tensor
    eps: Tensor
    x_next: Tensor


@dataclass(frozen=True)
class GuidanceContext:
    """Per-step facts a guidance term may need.

    Attributes:
        schedule: the noise schedule (for ``sigma_t``, ``abar_t`` ...).
        t, t_prev: the current time and the one the step moves to (0 = clean data).
        score_coef: ``d x_{t-1} / d score`` of this step's unguided update, so a guidance
            estimate ``g ~ grad_{x_t} log p(y | x_t)`` added to the score moves
            ``x_{t-1}`` by ``score_coef * g`` (DDPM: ``beta_t / sqrt(alpha_t)``).
        progress: fraction of the sampling done, in [0, 1).
        generator: a generator forked from the sampler's (so guidance randomness never
            shifts the sampler's own noise stream), or None.
    """

    schedule: NoiseSchedule
    t: int
    t_prev: int
    score_coef: float
    progress: float
    generator: torch.Generator | None


class Guidance(Protocol):
    """A guidance term: returns an additive correction to ``x_{t-1}``, shape of ``x_t``.

    Called with ``x_t`` (B, ...) requiring grad, ``t`` (B,) long, ``x0_hat`` (B, ...) a
    differentiable function of ``x_t``, and the step's :class:`GuidanceContext`.
    """

    def __call__(self, x_t: Tensor, t: Tensor, x0_hat: Tensor, ctx: GuidanceContext) -> Tensor: ...


Callback = Callable[[SamplerStep], None]


# ---------------------------------------------------------------------------- randomness
class RowGenerators:
    """One generator per batch row, so a problem's noise does not depend on its batch.

    :func:`randn` of shape (B, ...) draws row k from ``generators[k]`` alone: solving
    problems one at a time or in batches of any size then sees the same noise per problem.
    ``shared`` serves the draws that are common to the whole batch (e.g. a jittered t
    schedule); seed it from something that does not depend on the batching either.
    """

    def __init__(self, seeds: Sequence[int], shared_seed: int, device: str = "cpu") -> None:
        if len(seeds) < 1:
            raise ValueError("RowGenerators needs at least one seed")
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.shared = torch.Generator(device=device).manual_seed(int(shared_seed))

    def __len__(self) -> int:
        return len(self.generators)

    @property
    def device(self) -> torch.device:
        """Device of the generators' draws."""
        return self.shared.device

    def randn(self, shape: Sequence[int], dtype: torch.dtype | None = None) -> Tensor:
        """Standard normal draws, row ``i`` (first axis) from generator ``i``."""
        shape = tuple(int(s) for s in shape)
        if not shape or shape[0] != len(self.generators):
            raise ValueError(
                f"noise of shape {shape} for {len(self.generators)} row generators: the first "
                "dimension must be the number of rows"
            )
        rows = [
            torch.randn(shape[1:], generator=g, device=self.device, dtype=dtype)
            for g in self.generators
        ]
        return torch.stack(rows)


def shared_generator(
    generator: torch.Generator | RowGenerators | None,
) -> torch.Generator | None:
    """The generator for batch-wide draws: ``generator`` itself, or a RowGenerators' shared one."""
    return generator.shared if isinstance(generator, RowGenerators) else generator


def randn(
    shape: Sequence[int],
    generator: torch.Generator | RowGenerators | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Standard normal noise drawn with ``generator`` (on its device), then moved to ``device``.

    A :class:`RowGenerators` draws each batch row from its own generator.
    """
    if isinstance(generator, RowGenerators):
        out = generator.randn(shape, dtype)
        return out if device is None else out.to(device)
    gen_device = generator.device if generator is not None else device
    out = torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype)
    return out if device is None else out.to(device)


def fork_generator(
    generator: torch.Generator | RowGenerators | None, salt: str
) -> torch.Generator | None:
    """A new generator seeded from a hash of ``generator``'s state and ``salt``.

    Deterministic and does not advance ``generator``: guidance that draws random numbers
    from the fork leaves the sampler's own noise stream untouched. A :class:`RowGenerators`
    forks its ``shared`` generator (guidance draws are batch-wide).
    """
    generator = shared_generator(generator)
    if generator is None:
        return None
    state = generator.get_state().numpy().tobytes()
    digest = hashlib.blake2b(state + salt.encode(), digest_size=8).digest()
    fork = torch.Generator(device=generator.device)
    fork.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return fork


# ---------------------------------------------------------------------------- shared loop
def _initial_x(
    shape_or_x_T: Tensor | Sequence[int],
    generator: torch.Generator | RowGenerators | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> Tensor:
    if isinstance(shape_or_x_T, Tensor):
        if shape_or_x_T.dim() < 1 or shape_or_x_T.shape[0] < 1:
            raise ValueError(f"x_T must be (B, ...) with B >= 1, got {tuple(shape_or_x_T.shape)}")
        return shape_or_x_T.detach().clone()
    shape = tuple(int(s) for s in shape_or_x_T)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (B, ...) with positive sizes, got {shape}")
    return randn(shape, generator, device=device, dtype=dtype or torch.get_default_dtype())


def _abar(schedule: NoiseSchedule, t: int) -> float:
    return 1.0 if t == 0 else float(schedule.alphas_cumprod[t - 1])


# An update maps (x_t, x0_hat, eps, noise-or-None) -> x_{t-1}; built per step from floats.
_Update = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def _run(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x: Tensor,
    times: list[int],
    make_update: Callable[[int, int], tuple[_Update, float, bool]],
    *,
    generator: torch.Generator | RowGenerators | None,
    guidance: Guidance | None,
    callback: Callback | None,
    clip_x0: float | None,
    progress: bool,
    desc: str,
) -> Tensor:
    """The loop both samplers share: times[i] -> times[i + 1] (0 after the last)."""
    batch = x.shape[0]
    guide_gen = fork_generator(generator, "guidance") if guidance is not None else None
    n = len(times)
    for i in tqdm(range(n), disable=not progress, desc=desc, leave=False):
        t, t_prev = times[i], times[i + 1] if i + 1 < n else 0
        update, score_coef, noisy = make_update(t, t_prev)
        tb = as_batch_t(t, batch, device=x.device)
        a = _abar(schedule, t)
        correction: Tensor | None = None
        if guidance is None:
            with torch.no_grad():
                eps = denoiser(x, tb)
                x0_hat = (x - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
        else:
            x_in = x.detach().requires_grad_(True)
            with torch.enable_grad():
                eps = denoiser(x_in, tb)
                x0_hat = (x_in - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
                ctx = GuidanceContext(schedule, t, t_prev, score_coef, i / n, guide_gen)
                correction = guidance(x_in, tb, x0_hat, ctx)
            if not isinstance(correction, Tensor) or correction.shape != x.shape:
                got = tuple(correction.shape) if isinstance(correction, Tensor) else correction
                raise ValueError(
                    f"guidance returned {got}; expected a tensor of shape {tuple(x.shape)}"
                )
            eps, x0_hat, correction = eps.detach(), x0_hat.detach(), correction.detach()
        if eps.shape != x.shape:
            raise ValueError(f"denoiser returned shape {tuple(eps.shape)} for x_t {tuple(x.shape)}")
        with torch.no_grad():
            if clip_x0 is not None:
                x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
                eps = (x - math.sqrt(a) * x0_hat) / math.sqrt(1.0 - a)
            noise = randn(x.shape, generator, device=x.device, dtype=x.dtype) if noisy else None
            x_next = update(x, x0_hat, eps, noise)
            if correction is not None:
                x_next = x_next + correction
        if callback is not None:
            callback(SamplerStep(i, t, t_prev, x, x0_hat, eps, x_next))
        x = x_next
    return x


def _check_t_start(schedule: NoiseSchedule, t_start: int | None) -> int:
    T = schedule.num_timesteps
    if t_start is None:
        return T
    if isinstance(t_start, bool) or not isinstance(t_start, int) or not 1 <= t_start <= T:
        raise ValueError(f"t_start must be an integer in [1, {T}] (T = {T}), got {t_start!r}")
    return t_start


# ---------------------------------------------------------------------------- DDPM
def ddpm_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    shape_or_x_T: Tensor | Sequence[int],
    *,
    t_start: int | None = None,
    generator: torch.Generator | RowGenerators | None = None,
    guidance: Guidance | None = None,
    callback: Callback | None = None,
    clip_x0: float | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) from ``t_start`` down to 0.

    Args:
        shape_or_x_T: (B, ...) shape for pure-noise start, or ``x_{t_start}`` itself
            (e.g. a noised image to clean from t = 200, Graikos et al. section 3.2).
        t_start: the time of the starting x, in [1, T]; default T.
        guidance: optional :class:`Guidance`; None runs every step under no_grad.
        clip_x0: clamp x0_hat to [-clip_x0, clip_x0] before the update (images in [-1, 1]).

    Returns:
        x_0, shape (B, ...).
    """
    t_start = _check_t_start(schedule, t_start)
    x = _initial_x(shape_or_x_T, generator, device, dtype)
    c1s, c2s = schedule.posterior_mean_coef1, schedule.posterior_mean_coef2
    log_vars = schedule.posterior_log_variance_clipped

    def make_update(t: int, t_prev: int) -> tuple[_Update, float, bool]:
        c1, c2 = float(c1s[t - 1]), float(c2s[t - 1])
        std = math.exp(0.5 * float(log_vars[t - 1]))
        a = _abar(schedule, t)

        def update(x_t: Tensor, x0: Tensor, eps: Tensor, z: Tensor | None) -> Tensor:
            mean = c1 * x0 + c2 * x_t
            return mean if z is None else mean + std * z

        # mu~ = c1 x0_hat + c2 x_t with x0_hat = (x_t + (1 - abar) score) / sqrt(abar)
        return update, c1 * (1.0 - a) / math.sqrt(a), t > 1

    times = list(range(t_start, 0, -1))
    return _run(
        denoiser, schedule, x, times, make_update, generator=generator, guidance=guidance,
        callback=callback, clip_x0=clip_x0, progress=progress, desc="ddpm",
    )


# ---------------------------------------------------------------------------- DDIM
def ddim_timesteps(steps: int, t_start: int) -> list[int]:
    """``steps`` distinct integer times from ``t_start`` down to 1, evenly spaced."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if steps > t_start:
        raise ValueError(f"steps = {steps} exceeds the {t_start} available times (t_start)")
    if steps == 1:
        return [t_start]
    return torch.linspace(t_start, 1, steps, dtype=torch.float64).round().long().tolist()


def ddim_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    shape_or_x_T: Tensor | Sequence[int],
    *,
    steps: int,
    eta: float = 0.0,
    t_start: int | None = None,
    generator: torch.Generator | RowGenerators | None = None,
    guidance: Guidance | None = None,
    callback: Callback | None = None,
    clip_x0: float | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """DDIM sampling (Song, Meng & Ermon 2021, eq. 12) on ``steps`` times ``t_start -> 1 -> 0``.

    ``eta = 0`` is deterministic given x_T; ``eta = 1`` matches DDPM's variance. Other
    arguments as :func:`ddpm_sample`. Returns x_0, shape (B, ...).
    """
    if not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0, got {eta}")
    t_start = _check_t_start(schedule, t_start)
    times = ddim_timesteps(steps, t_start)
    x = _initial_x(shape_or_x_T, generator, device, dtype)

    def make_update(t: int, t_prev: int) -> tuple[_Update, float, bool]:
        a, a_prev = _abar(schedule, t), _abar(schedule, t_prev)
        s = eta * math.sqrt((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))
        c_x0, c_eps = math.sqrt(a_prev), math.sqrt(max(1.0 - a_prev - s * s, 0.0))

        def update(x_t: Tensor, x0: Tensor, eps: Tensor, z: Tensor | None) -> Tensor:
            out = c_x0 * x0 + c_eps * eps
            return out if z is None else out + s * z

        # eps = -sqrt(1 - abar) score, x0_hat = (x_t + (1 - abar) score) / sqrt(abar)
        score_coef = c_x0 * (1.0 - a) / math.sqrt(a) - c_eps * math.sqrt(1.0 - a)
        return update, score_coef, s > 0

    return _run(
        denoiser, schedule, x, times, make_update, generator=generator, guidance=guidance,
        callback=callback, clip_x0=clip_x0, progress=progress, desc="ddim",
    )
