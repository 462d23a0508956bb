import numpy as np
import pytest
import torch

from landprior.diffusion.schedule import NoiseSchedule


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedule_is_float64_monotone_and_readonly(name: str) -> None:
    s = NoiseSchedule.from_name(name, 1000)
    assert s.num_timesteps == 1000
    assert s.alphas_cumprod.dtype == np.float64
    assert np.all(np.diff(s.alphas_cumprod) < 0)
    assert 0 < s.alphas_cumprod[-1] < 1e-3
    with pytest.raises(ValueError):
        s.alphas_cumprod[0] = 0.5


def test_linear_matches_paper_endpoints() -> None:
    s = NoiseSchedule.linear()
    assert s.betas[0] == pytest.approx(1e-4)
    assert s.betas[-1] == pytest.approx(2e-2)
    # abar_1 = 1 - beta_1 under the 1-based convention.
    x = torch.ones(1, 1)
    assert s.abar(1, x).item() == pytest.approx(1 - 1e-4)


def test_eps_x0_round_trip_and_q_sample() -> None:
    s = NoiseSchedule.linear(100)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 5, 5, generator=g)
    eps = torch.randn(4, 3, 5, 5, generator=g)
    t = torch.tensor([1, 10, 50, 100])
    xt = s.q_sample(x0, t, eps)
    torch.testing.assert_close(s.predict_x0(xt, t, eps), x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s.predict_eps(xt, t, x0), eps, atol=1e-4, rtol=1e-4)


def test_posterior_matches_closed_form() -> None:
    s = NoiseSchedule.linear(50)
    t = 20
    b = s.betas[t - 1]
    a = 1 - b
    ab, ab_prev = s.alphas_cumprod[t - 1], s.alphas_cumprod[t - 2]
    x0 = torch.tensor([[0.3]], dtype=torch.float64)
    xt = torch.tensor([[-0.7]], dtype=torch.float64)
    mean, var, _ = s.posterior_mean_variance(x0, xt, t)
    coef1 = np.sqrt(ab_prev) * b / (1 - ab)
    coef2 = np.sqrt(a) * (1 - ab_prev) / (1 - ab)
    expected_mean = coef1 * 0.3 + coef2 * -0.7
    assert mean.item() == pytest.approx(expected_mean)
    assert var.item() == pytest.approx((1 - ab_prev) / (1 - ab) * b)


def test_sigma_ve() -> None:
    s = NoiseSchedule.linear()
    x = torch.zeros(1)
    ab = s.alphas_cumprod[499]
    assert s.sigma_ve(500, x).item() == pytest.approx(np.sqrt((1 - ab) / ab), rel=1e-6)


@pytest.mark.parametrize("bad", [0, 1001, -3])
def test_t_out_of_range_is_a_clear_error(bad: int) -> None:
    s = NoiseSchedule.linear()
    with pytest.raises(ValueError, match=r"expected integers in \[1, 1000\]"):
        s.q_sample(torch.zeros(1, 2), torch.tensor([bad]), torch.zeros(1, 2))


def test_bad_names_and_betas() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        NoiseSchedule.from_name("quadratic")
    with pytest.raises(ValueError, match="beta"):
        NoiseSchedule(np.array([0.1, 1.5]))
    with pytest.raises(ValueError, match="noise shape"):
        NoiseSchedule.linear(10).q_sample(torch.zeros(2, 3), 1, torch.zeros(2, 4))
