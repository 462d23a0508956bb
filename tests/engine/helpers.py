"""Tiny seeded denoisers, constraints and a uniform runner for the engine's contract suite."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landprior.diffusion.denoiser import EpsDenoiser
from landprior.diffusion.sample import ddim_sample, ddpm_sample
from landprior.diffusion.schedule import NoiseSchedule
from landprior.engine.constraints import LogC, constraint
from landprior.engine.dps import DPS
from landprior.engine.lgd import LGDMC
from landprior.engine.pnp import infer_gaussian, infer_latent, infer_point
from landprior.engine.schedules import linear_schedule
from landprior.engine.toy import GaussianMixtureDenoiser

T = 100
SHAPE = (4, 1, 6, 6)
TARGET = 0.5


class TinyEpsNet(nn.Module):
    """A random conv net around the exact eps of N(0, I) data, ``sqrt(1 - abar_t) x_t``.

    Two convolutions and a timestep embedding, 0-based timesteps like the U-Net; the
    Gaussian skip and a conv term scaled by sqrt(abar_t) keep x0_hat bounded, so the
    untrained net is still a usable prior.
    """

    def __init__(self, sched: NoiseSchedule, channels: int = 1, hidden: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(sched.num_timesteps, hidden)
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1)
        abar = torch.tensor(sched.alphas_cumprod, dtype=torch.float32)
        self.register_buffer("skip", (1.0 - abar).sqrt())
        self.register_buffer("gain", 0.1 * abar.sqrt())

    def forward(self, x: Tensor, timesteps: Tensor) -> Tensor:
        h = torch.tanh(self.conv1(x) + self.emb(timesteps)[:, :, None, None])
        skip, gain = self.skip[timesteps], self.gain[timesteps]
        return skip[:, None, None, None] * x + gain[:, None, None, None] * self.conv2(h)


def tiny_net_denoiser(sched: NoiseSchedule, seed: int = 0) -> EpsDenoiser:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return EpsDenoiser(TinyEpsNet(sched))


def schedule() -> NoiseSchedule:
    return NoiseSchedule.from_name("linear", T)


def make_denoiser(kind: str, sched: NoiseSchedule) -> nn.Module:
    if kind == "mixture":
        return GaussianMixtureDenoiser(sched)  # pixels at -1 or +1, each with prob 1/2
    if kind == "tinynet":
        return tiny_net_denoiser(sched)
    raise ValueError(kind)


def region_loss(x: Tensor) -> Tensor:
    """Per-problem squared distance to TARGET, (B,)."""
    return (x - TARGET).square().flatten(1).mean(dim=1)


def region_constraint(strength: float = 20.0) -> LogC:
    """log c(x) = -strength * mean (x - 0.5)^2: prefers the region around 0.5."""
    return constraint(lambda x: -strength * region_loss(x), name="region")


@dataclass(frozen=True)
class Method:
    """A sampler or estimator behind one signature.

    ``run(denoiser, schedule, x_init, strength, generator)``: strength None = no guidance /
    no constraint; 0.0 = a guidance term or constraint of zero weight; > 0 = guided.
    """

    name: str
    run: Callable[[nn.Module, NoiseSchedule, Tensor, float | None, torch.Generator], Tensor]


def _ddpm(guide: Callable[[float], object] | None) -> Callable[..., Tensor]:
    def run(den, sched, x, strength, gen):  # type: ignore[no-untyped-def]
        g = None if strength is None or guide is None else guide(strength)
        return ddpm_sample(den, sched, x, generator=gen, guidance=g)

    return run


def _ddim(guide: Callable[[float], object] | None, eta: float) -> Callable[..., Tensor]:
    def run(den, sched, x, strength, gen):  # type: ignore[no-untyped-def]
        g = None if strength is None or guide is None else guide(strength)
        return ddim_sample(den, sched, x, steps=10, eta=eta, generator=gen, guidance=g)

    return run


PNP_T = linear_schedule(30, 60, 1, num_timesteps=T)


def _point(den, sched, x, strength, gen):  # type: ignore[no-untyped-def]
    c = None if strength is None else region_constraint()
    w = 0.0 if strength is None else strength
    return infer_point(den, c, x, sched, t_schedule=PNP_T, lr=0.05, weight=w, generator=gen)


def _latent(den, sched, x, strength, gen):  # type: ignore[no-untyped-def]
    c = None if strength is None else region_constraint()
    w = 0.0 if strength is None else strength
    y = infer_latent(
        den, c, x / 2, lambda y: 2 * y, sched, t_schedule=PNP_T, lr=0.025, weight=w,
        generator=gen,
    )
    return 2 * y


def _gaussian(den, sched, x, strength, gen):  # type: ignore[no-untyped-def]
    c = None if strength is None else region_constraint()
    w = 0.0 if strength is None else strength
    mu, _ = infer_gaussian(
        den, c, x, sched, t_schedule=PNP_T, lr=0.05, weight=w, generator=gen
    )
    return mu


# Guidance strengths are in each method's own units; "on" = 1.0 for every method.
def _dps(strength: float) -> DPS:
    return DPS(region_constraint(), scale=strength, rule="score")


def _lgd(strength: float) -> LGDMC:
    return LGDMC(region_constraint(), n=4, scale=strength, rule="score")


METHODS = [
    Method("ddpm", _ddpm(None)),
    Method("ddim", _ddim(None, 0.0)),
    Method("ddpm+dps", _ddpm(_dps)),
    Method("ddim+lgd-mc", _ddim(_lgd, 0.5)),
    Method("pnp-point", _point),
    Method("pnp-latent", _latent),
    Method("pnp-gaussian", _gaussian),
]
GUIDED = [m for m in METHODS if m.name not in ("ddpm", "ddim")]
