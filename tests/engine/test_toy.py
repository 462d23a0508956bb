"""The LGD paper's 1-D check: analytic denoiser, exact posterior, DPS vs LGD-MC."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from landprior.cli import main
from landprior.diffusion.schedule import NoiseSchedule
from landprior.engine.toy import (
    MOG_METHODS,
    GaussianMixtureDenoiser,
    MogSettings,
    gaussian_kl,
    logistic_constraint,
    run_lgd_mog,
)

SCHED = NoiseSchedule.linear(1000)


@pytest.mark.parametrize("t", [1, 50, 200, 500, 900])
def test_analytic_denoiser_matches_monte_carlo(t: int) -> None:
    """Tweedie x0_hat from the analytic eps equals E[x0 | x_t] by self-normalised IS."""
    den = GaussianMixtureDenoiser(SCHED)
    g = torch.Generator().manual_seed(t)
    n = 200_000
    comp = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1
    x0 = comp + 0.2 * torch.randn(n, generator=g, dtype=torch.float64)
    a = float(SCHED.alphas_cumprod[t - 1])
    x_t = torch.tensor([[-1.3], [-0.5], [-0.2], [0.4], [1.1]], dtype=torch.float64) * math.sqrt(a)
    log_w = -0.5 * (x_t - math.sqrt(a) * x0[None, :]) ** 2 / (1 - a)
    w = torch.softmax(log_w, dim=1)
    mc = (w * x0[None, :]).sum(dim=1, keepdim=True)
    tb = torch.full((5,), t)
    x0_hat = SCHED.predict_x0(x_t, tb, den(x_t, tb))
    torch.testing.assert_close(x0_hat, mc, atol=0.01, rtol=0.0)


def test_score_is_the_gradient_of_the_log_density() -> None:
    den = GaussianMixtureDenoiser(SCHED)
    x = torch.linspace(-2, 2, 9, dtype=torch.float64).reshape(9, 1).requires_grad_(True)
    t = torch.full((9,), 300)
    (grad,) = torch.autograd.grad(den.log_prob(x, t).sum(), x)
    torch.testing.assert_close(den.score(x, t), grad)
    # the density integrates to one
    grid = torch.linspace(-6, 6, 4001, dtype=torch.float64).reshape(-1, 1)
    mass = den.log_prob(grid, torch.full((4001,), 300)).exp().sum() * (12 / 4000)
    assert float(mass) == pytest.approx(1.0, abs=1e-6)


def test_posterior_is_exactly_the_left_component() -> None:
    """p0(x) sigmoid(-50 x) / Z = N(x; -1, 0.2^2): the Bayes classifier of the two parts."""
    den = GaussianMixtureDenoiser(SCHED)
    x = torch.linspace(-2, 2, 41, dtype=torch.float64).reshape(-1, 1)
    t1 = torch.full((41,), 1)
    # at t = 1 the marginal is p0 up to a 1e-4 variance change; compare with p0 itself
    log_p0 = torch.logsumexp(
        torch.stack([-0.5 * ((x - m) / 0.2) ** 2 for m in (-1.0, 1.0)]), dim=0
    ) - math.log(2 * 0.2 * math.sqrt(2 * math.pi))
    log_post = log_p0 + logistic_constraint()(x, 0.0).reshape(-1, 1) + math.log(2)
    log_left = -0.5 * ((x + 1) / 0.2) ** 2 - math.log(0.2 * math.sqrt(2 * math.pi))
    torch.testing.assert_close(log_post, log_left)
    assert den.log_prob(x, t1).shape == x.shape


def test_gaussian_kl() -> None:
    assert gaussian_kl(-1, 0.2, -1, 0.2) == 0.0
    assert gaussian_kl(0, 1, 1, 1) == pytest.approx(0.5)
    assert gaussian_kl(0, 1, 0, 2) == pytest.approx(math.log(2) + 1 / 8 - 0.5)


def test_lgd_mc_beats_dps_at_a_fixed_seed() -> None:
    result = run_lgd_mog(MogSettings(samples=500, seed=0), methods=("oracle", "dps", "lgd_mc_20"))
    kl = result["kl"]
    assert kl["oracle"] < 0.01
    assert kl["lgd_mc_20"] < kl["dps"] / 5, kl
    assert result["fit"]["lgd_mc_20"]["frac_left"] > 0.99


def test_cli_prints_one_json_object() -> None:
    out = CliRunner().invoke(main, ["bench", "lgd-mog", "--json", "--samples", "50", "--seed", "1"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert set(data["kl"]) == set(MOG_METHODS)
    assert all(math.isfinite(v) and v >= 0 for v in data["kl"].values())
    assert data["settings"]["samples"] == 50
    table = CliRunner().invoke(main, ["bench", "lgd-mog", "--samples", "50"])
    assert table.exit_code == 0 and "lgd_mc_20" in table.output
    assert CliRunner().invoke(main, ["bench", "lgd-mog", "--help"]).exit_code == 0
