"""DPS and LGD-MC guidance terms: step rules, r_t, Monte Carlo estimate, one denoiser call."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from landprior.diffusion.sample import GuidanceContext, ddim_sample, ddpm_sample
from landprior.diffusion.schedule import NoiseSchedule
from landprior.engine.constraints import ConstraintError, constraint
from landprior.engine.dps import DPS
from landprior.engine.lgd import LGDMC, lgd_radius
from tests.engine.helpers import region_constraint, tiny_net_denoiser

SCHED = NoiseSchedule.from_name("linear", 100)


def _ctx(t: int = 40, seed: int = 0, progress: float = 0.25) -> GuidanceContext:
    return GuidanceContext(SCHED, t, t - 1, 0.37, progress, torch.Generator().manual_seed(seed))


def _inputs(t: int = 40) -> tuple[Tensor, Tensor, Tensor]:
    x_t = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(9)).requires_grad_(True)
    tb = torch.full((3,), t)
    x0_hat = 0.8 * torch.tanh(x_t) + 0.1 * x_t.square()
    return x_t, tb, x0_hat


def _linear(x: Tensor) -> Tensor:
    w = torch.linspace(-1, 1, x[0].numel()).reshape(x[0].shape)
    return (w * x).flatten(1).sum(dim=1)


def test_lgd_radius_is_sqrt_one_minus_abar() -> None:
    for t in (1, 30, 100):
        r = lgd_radius(_ctx(t), torch.zeros(2, 3))
        expected = math.sqrt(1 - SCHED.alphas_cumprod[t - 1])
        assert r.dim() == 2  # broadcastable against (B, ...)
        assert float(r.flatten()[0]) == pytest.approx(expected, rel=1e-5)


def test_rules_and_normalisation() -> None:
    c = region_constraint()
    x_t, _, x0_hat = _inputs()  # a fresh graph per call: guidance frees it
    (grad,) = torch.autograd.grad(-c(x0_hat, 0.25).sum(), x_t)
    loss = (-c(x0_hat, 0.25)).detach()
    step = DPS(c, scale=0.3)(*_inputs(), _ctx())
    torch.testing.assert_close(step, -0.3 * grad)
    score = DPS(c, scale=0.3, rule="score")(*_inputs(), _ctx())
    torch.testing.assert_close(score, -0.37 * 0.3 * grad)
    resid = DPS(c, scale=0.3, normalize="residual")(*_inputs(), _ctx())
    torch.testing.assert_close(resid, -0.3 * grad / loss.sqrt().reshape(3, 1, 1, 1))
    seen: list[float] = []
    DPS(c, scale=lambda p: seen.append(p) or 1.0)(*_inputs(), _ctx(progress=0.6))
    assert seen == [0.6]


def test_lgd_equals_dps_for_a_linear_loss() -> None:
    """The noise term of the MC estimate does not depend on x_t for a linear log c."""
    c = constraint(_linear)
    dps = DPS(c, scale=0.5)(*_inputs(), _ctx())
    for n in (1, 7):
        lgd = LGDMC(c, n=n, scale=0.5)(*_inputs(), _ctx())
        torch.testing.assert_close(lgd, dps)


def test_lgd_n1_is_dps_at_a_noisy_point() -> None:
    c = region_constraint()
    _, _, x0_hat = _inputs()
    ctx = _ctx(seed=4)
    lgd_loss = LGDMC(c, n=1).loss(x0_hat, ctx)
    eps = torch.randn((1, *x0_hat.shape), generator=torch.Generator().manual_seed(4))[0]
    expected = DPS(c).loss(x0_hat + lgd_radius(ctx, x0_hat) * eps, ctx)
    torch.testing.assert_close(lgd_loss, expected)


def test_lgd_estimate_is_a_log_mean_exp() -> None:
    c = region_constraint()
    _, _, x0_hat = _inputs()
    ctx = _ctx(seed=5)
    loss = LGDMC(c, n=6).loss(x0_hat, ctx)
    eps = torch.randn((6, *x0_hat.shape), generator=torch.Generator().manual_seed(5))
    r = lgd_radius(ctx, x0_hat)
    vals = torch.stack([c(x0_hat + r * e, 0.25) for e in eps])
    torch.testing.assert_close(loss, -vals.exp().mean(dim=0).log())


def test_one_denoiser_call_per_step_whatever_n() -> None:
    den = tiny_net_denoiser(SCHED)
    calls = {"den": 0, "loss": 0}

    def counting(x_t: Tensor, t: Tensor) -> Tensor:
        calls["den"] += 1
        return den(x_t, t)

    def counted(x: Tensor) -> Tensor:
        calls["loss"] += 1
        return -x.square().flatten(1).mean(dim=1)

    gen = torch.Generator().manual_seed(0)
    ddim_sample(counting, SCHED, (2, 1, 4, 4), steps=5, generator=gen,
                guidance=LGDMC(constraint(counted), n=20))
    assert calls == {"den": 5, "loss": 100}
    calls.update(den=0, loss=0)
    ddpm_sample(counting, SCHED, (2, 1, 4, 4), t_start=4, generator=gen,
                guidance=DPS(constraint(counted)))
    assert calls == {"den": 4, "loss": 4}


def test_bad_guidance_settings_list_the_allowed_values() -> None:
    c = region_constraint()
    with pytest.raises(ValueError, match=r"unknown guidance rule 'push'.*'step', 'score'"):
        DPS(c, rule="push")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown normalize 'l1'.*'none', 'residual'"):
        LGDMC(c, normalize="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive integer"):
        LGDMC(c, n=0)
    with pytest.raises(ValueError, match="finite"):
        DPS(c, scale=float("nan"))


def test_non_finite_loss_in_guidance_names_the_constraint() -> None:
    bad = constraint(lambda x: torch.full((x.shape[0],), float("nan")), name="nan_loss")
    with pytest.raises(ConstraintError, match="'nan_loss'"):
        ddim_sample(tiny_net_denoiser(SCHED), SCHED, (2, 1, 4, 4), steps=3,
                    guidance=LGDMC(bad, n=2))


def test_a_loss_that_ignores_x_gives_no_guidance() -> None:
    const = constraint(lambda x: torch.zeros(x.shape[0]), name="const")
    out = DPS(const)(*_inputs(), _ctx())
    assert torch.equal(out, torch.zeros_like(out))
