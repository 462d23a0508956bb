"""The engine end to end on a tiny U-Net and the land-cover constraint, in seconds."""

from __future__ import annotations

import pytest
import torch

from landprior.diffusion.denoiser import EpsDenoiser
from landprior.diffusion.sample import SamplerStep, ddim_sample, ddpm_sample
from landprior.diffusion.schedule import NoiseSchedule
from landprior.diffusion.unet import UNetConfig
from landprior.engine.constraints import paper_weight
from landprior.engine.dps import DPS
from landprior.engine.lgd import LGDMC
from landprior.engine.pnp import PnPStep, infer_point, linear_lr
from landprior.engine.schedules import paper_schedule
from landprior.landcover.constraint import LandCoverConstraint


@pytest.fixture(scope="module")
def tiny_unet() -> EpsDenoiser:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = UNetConfig.preset("tiny", in_channels=5).build()
    return EpsDenoiser(net)


@pytest.fixture(scope="module")
def landcover() -> tuple[LandCoverConstraint, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    clusters = torch.softmax(3 * torch.randn(2, 4, 16, 16, generator=g), dim=1)
    weak = torch.softmax(2 * torch.randn(2, 5, 16, 16, generator=g), dim=1)
    return LandCoverConstraint(clusters, weak, mi_radius=3, kl_radius=3), weak


def test_algorithm1_on_a_unet_with_the_landcover_constraint(
    tiny_unet: EpsDenoiser, landcover: tuple[LandCoverConstraint, torch.Tensor]
) -> None:
    c, weak = landcover
    sched = NoiseSchedule.linear(1000)
    steps: list[PnPStep] = []
    x_init = 2 * weak - 1  # initialise from the weak labels, as the paper
    x = infer_point(
        tiny_unet, c, x_init, sched, t_schedule=paper_schedule("landcover", steps=15),
        optimizer="adam", lr=0.05, optimizer_kwargs={"betas": (0.0, 0.999)},
        lr_schedule=linear_lr(1e-3), weight=paper_weight(1.0), constraint_on_clipped=True,
        generator=torch.Generator().manual_seed(0), callback=steps.append,
    )
    assert x.shape == x_init.shape and torch.isfinite(x).all()
    assert len(steps) == 15 and steps[0].t == 433
    assert steps[-1].weight < steps[0].weight and steps[-1].lr < steps[0].lr
    assert tiny_unet.training  # restored after the run
    before = c(x_init.clamp(-1, 1), 1.0)
    after = c(x.clamp(-1, 1), 1.0)
    assert (after > before).all(), (before, after)


def test_guided_samplers_on_a_unet(
    tiny_unet: EpsDenoiser, landcover: tuple[LandCoverConstraint, torch.Tensor]
) -> None:
    c, _ = landcover
    sched = NoiseSchedule.linear(1000)
    seen: list[SamplerStep] = []
    x = ddim_sample(tiny_unet, sched, (2, 5, 16, 16), steps=5, eta=0.5,
                    generator=torch.Generator().manual_seed(0), clip_x0=1.0,
                    guidance=LGDMC(c, n=4, scale=1.0), callback=seen.append)
    assert x.shape == (2, 5, 16, 16) and torch.isfinite(x).all() and len(seen) == 5
    start = torch.zeros(2, 5, 16, 16)
    y = ddpm_sample(tiny_unet, sched, start, t_start=10, generator=torch.Generator(),
                    guidance=DPS(c, scale=0.1))
    assert torch.isfinite(y).all()
