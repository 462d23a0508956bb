"""Annealed t schedules for Algorithm 1 (Graikos et al. 2022, section 2.2).

Algorithm 1 draws one diffusion time ``t_i`` per optimisation step ``i = 0 .. steps-1``.
The authors anneal it linearly with a cosine wobble; with ``k = steps - i``::

    t_i = offset + scale * (k / slope_div + wobble(k) * cos(i / period)) / steps

where ``wobble(k) = k // wobble_div`` (integer division, MNIST and TSP) or
``k / wobble_div`` (faces, land cover), optionally jittered by a uniform integer in
``[-jitter, jitter]`` (faces), then rounded and clipped to ``[1, T]``. The presets are the
rows of the PAPER_NOTES table. Every schedule is a long tensor of shape (steps,).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

import torch
from torch import Tensor

__all__ = [
    "PRESETS",
    "PRESET_NAMES",
    "LinearCosine",
    "PresetName",
    "TSchedule",
    "check_t_schedule",
    "linear_cosine_schedule",
    "linear_schedule",
    "paper_schedule",
    "resolve_t_schedule",
]

PresetName = Literal["mnist", "tsp", "ffhq", "landcover"]
PRESET_NAMES: tuple[str, ...] = get_args(PresetName)

TSchedule = Tensor | Sequence[int] | str
"""A long tensor / list of t per step, or a preset name (see :data:`PRESET_NAMES`)."""


@dataclass(frozen=True)
class LinearCosine:
    """Parameters of the authors' linear-plus-cosine family (see the module docstring)."""

    steps: int
    scale: float = 1000.0
    offset: float = 0.0
    slope_div: float = 1.0
    wobble_div: float = 4.0
    period: float = 50.0
    integer_wobble: bool = False
    jitter: int = 0


PRESETS: dict[str, LinearCosine] = {
    # (k + (k//4) cos(i/50)) / steps * 1000, 1000 steps, 1000 -> 1
    "mnist": LinearCosine(steps=1000, wobble_div=4, period=50, integer_wobble=True),
    # (k + (k//3) cos(i/50)) / 256 * 1000, 256 steps, 1000 -> 4
    "tsp": LinearCosine(steps=256, wobble_div=3, period=50, integer_wobble=True),
    # (k/1.5 + (k/3) cos(i/10)) / 200 * 800 + 200, +/- 50 jitter, ~1000 -> ~200
    "ffhq": LinearCosine(
        steps=200, scale=800, offset=200, slope_div=1.5, wobble_div=3, period=10, jitter=50
    ),
    # (k/3 + (k/10) cos(i/10)) / 200 * 1000, 200 steps, ~430 -> 1
    "landcover": LinearCosine(steps=200, slope_div=3, wobble_div=10, period=10),
}


def check_t_schedule(ts: Tensor, num_timesteps: int) -> Tensor:
    """Validate a t schedule: 1-D, non-empty, integers in ``[1, T]``; returns a long tensor."""
    ts = torch.as_tensor(ts)
    if ts.dim() != 1 or ts.numel() == 0:
        raise ValueError(
            f"a t schedule must be a non-empty 1-D tensor, got shape {tuple(ts.shape)}"
        )
    if ts.is_floating_point():
        if not bool(torch.all(ts == ts.round())):
            raise ValueError("a t schedule must hold integers")
        ts = ts.long()
    lo, hi = int(ts.min()), int(ts.max())
    if lo < 1 or hi > num_timesteps:
        raise ValueError(
            f"t schedule out of range: values in [{lo}, {hi}], expected integers in "
            f"[1, {num_timesteps}] (T = {num_timesteps})"
        )
    return ts.long()


def linear_cosine_schedule(
    params: LinearCosine,
    *,
    num_timesteps: int = 1000,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The authors' annealed schedule for ``params``: long tensor (steps,), clipped to [1, T].

    ``scale`` and ``offset`` are given for T = 1000 and rescaled by ``T / 1000`` so that a
    prior trained with another T keeps the same relative noise levels.
    """
    if params.steps < 1:
        raise ValueError(f"steps must be >= 1, got {params.steps}")
    if params.slope_div <= 0 or params.wobble_div <= 0 or params.period <= 0:
        raise ValueError("slope_div, wobble_div and period must be > 0")
    if params.jitter < 0:
        raise ValueError(f"jitter must be >= 0, got {params.jitter}")
    steps = params.steps
    i = torch.arange(steps, dtype=torch.float64)
    k = steps - i
    wobble = torch.div(k, params.wobble_div, rounding_mode="floor") if params.integer_wobble else (
        k / params.wobble_div
    )
    t = (k / params.slope_div + wobble * torch.cos(i / params.period)) / steps
    t = params.offset + params.scale * t
    t = t * (num_timesteps / 1000.0)
    t = t.round().long()
    if params.jitter:
        jitter = round(params.jitter * num_timesteps / 1000.0)
        t = t + torch.randint(-jitter, jitter + 1, (steps,), generator=generator)
    return t.clamp(1, num_timesteps)


def paper_schedule(
    name: str,
    *,
    steps: int | None = None,
    num_timesteps: int = 1000,
    jitter: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A preset of the PAPER_NOTES table by name ("mnist", "tsp", "ffhq", "landcover").

    ``steps`` overrides the preset's number of steps; the cosine period is scaled with it so
    the schedule keeps its shape. ``jitter`` overrides the preset's +/- jitter.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown t schedule {name!r}; expected one of {PRESET_NAMES}")
    params = PRESETS[name]
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        params = replace(params, steps=steps, period=params.period * steps / params.steps)
    if jitter is not None:
        params = replace(params, jitter=jitter)
    return linear_cosine_schedule(params, num_timesteps=num_timesteps, generator=generator)


def linear_schedule(steps: int, t_max: int, t_min: int = 1, *, num_timesteps: int = 1000) -> Tensor:
    """``steps`` integer times decreasing linearly from ``t_max`` to ``t_min`` (inclusive)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for label, value in (("t_max", t_max), ("t_min", t_min)):
        if not 1 <= value <= num_timesteps:
            raise ValueError(
                f"{label} = {value} outside [1, {num_timesteps}] (T = {num_timesteps})"
            )
    if t_min > t_max:
        raise ValueError(f"t_min = {t_min} > t_max = {t_max}")
    if steps == 1:
        return torch.tensor([t_max], dtype=torch.long)
    return torch.linspace(t_max, t_min, steps, dtype=torch.float64).round().long()


def resolve_t_schedule(
    t_schedule: TSchedule,
    num_timesteps: int,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A preset name or explicit times -> a validated long tensor (steps,)."""
    if isinstance(t_schedule, str):
        return paper_schedule(t_schedule, num_timesteps=num_timesteps, generator=generator)
    if isinstance(t_schedule, Tensor):
        return check_t_schedule(t_schedule.detach().cpu(), num_timesteps)
    values = list(t_schedule)
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        raise ValueError("a t schedule must hold finite integers")
    return check_t_schedule(torch.tensor(values), num_timesteps)
