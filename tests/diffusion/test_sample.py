"""DDPM / DDIM samplers: timesteps, starting times, callbacks, guidance plumbing, correctness."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

from landprior.diffusion.sample import (
    GuidanceContext,
    SamplerStep,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    fork_generator,
)
from landprior.diffusion.schedule import NoiseSchedule
from landprior.engine.toy import GaussianMixtureDenoiser
from tests.engine.helpers import tiny_net_denoiser


@pytest.fixture
def sched() -> NoiseSchedule:
    return NoiseSchedule.from_name("linear", 100)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_ddim_timesteps() -> None:
    ts = ddim_timesteps(20, 1000)
    assert len(ts) == 20 and ts[0] == 1000 and ts[-1] == 1
    assert all(a > b for a, b in itertools.pairwise(ts))
    assert ddim_timesteps(1, 50) == [50]
    assert ddim_timesteps(50, 50) == list(range(50, 0, -1))
    with pytest.raises(ValueError, match="exceeds"):
        ddim_timesteps(51, 50)
    with pytest.raises(ValueError, match="positive integer"):
        ddim_timesteps(0, 50)


@pytest.mark.parametrize("bad", [0, 101, -3, 2.5, True])
def test_t_start_outside_range_is_an_error(sched: NoiseSchedule, bad: object) -> None:
    den = tiny_net_denoiser(sched)
    with pytest.raises(ValueError, match=r"t_start must be an integer in \[1, 100\]"):
        ddpm_sample(den, sched, (1, 1, 4, 4), t_start=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"t_start"):
        ddim_sample(den, sched, (1, 1, 4, 4), steps=5, t_start=bad)  # type: ignore[arg-type]


def test_bad_shapes_and_eta(sched: NoiseSchedule) -> None:
    den = tiny_net_denoiser(sched)
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(den, sched, ())
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(den, sched, (0, 1, 4, 4))
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(den, sched, (1, 1, 4, 4), steps=5, eta=-1.0)

    def wrong(x_t: Tensor, t: Tensor) -> Tensor:
        return x_t[:, :0]

    with pytest.raises(ValueError, match="denoiser returned shape"):
        ddpm_sample(wrong, sched, (2, 1, 4, 4), t_start=3)


def test_ddpm_from_t_start_with_callback(sched: NoiseSchedule) -> None:
    den = tiny_net_denoiser(sched)
    x = torch.randn(3, 1, 4, 4, generator=gen(1))
    x_copy = x.clone()
    steps: list[SamplerStep] = []
    out = ddpm_sample(den, sched, x, t_start=20, generator=gen(), callback=steps.append)
    assert torch.equal(x, x_copy)  # the input is not modified
    assert [s.t for s in steps] == list(range(20, 0, -1))
    assert [s.t_prev for s in steps] == [*range(19, 0, -1), 0]
    assert torch.equal(steps[0].x_t, x)
    for a, b in itertools.pairwise(steps):
        assert torch.equal(a.x_next, b.x_t)
    assert torch.equal(steps[-1].x_next, out)
    s = steps[5]
    torch.testing.assert_close(s.x0_hat, sched.predict_x0(s.x_t, s.t, s.eps))
    with pytest.raises(AttributeError):
        s.t = 3  # type: ignore[misc]  # frozen


def test_ddim_eta0_is_deterministic_given_x_T(sched: NoiseSchedule) -> None:
    den = tiny_net_denoiser(sched)
    x = torch.randn(2, 1, 4, 4, generator=gen(1))
    a = ddim_sample(den, sched, x, steps=10, generator=gen(0))
    b = ddim_sample(den, sched, x, steps=10, generator=gen(5))
    assert torch.equal(a, b)
    c = ddim_sample(den, sched, x, steps=10, eta=1.0, generator=gen(0))
    d = ddim_sample(den, sched, x, steps=10, eta=1.0, generator=gen(5))
    assert not torch.equal(c, d)


def test_clip_x0(sched: NoiseSchedule) -> None:
    den = tiny_net_denoiser(sched)
    seen: list[SamplerStep] = []
    ddim_sample(den, sched, (2, 1, 4, 4), steps=5, generator=gen(), clip_x0=0.3,
                callback=seen.append)
    assert max(float(s.x0_hat.abs().max()) for s in seen) <= 0.3 + 1e-6


def test_graph_only_when_guided(sched: NoiseSchedule) -> None:
    seen: list[tuple[bool, bool]] = []
    den = tiny_net_denoiser(sched)

    def spy(x_t: Tensor, t: Tensor) -> Tensor:
        seen.append((torch.is_grad_enabled(), x_t.requires_grad))
        return den(x_t, t)

    ddim_sample(spy, sched, (2, 1, 4, 4), steps=3, generator=gen())
    assert seen == [(False, False)] * 3
    seen.clear()
    contexts: list[GuidanceContext] = []

    def guide(x_t: Tensor, t: Tensor, x0_hat: Tensor, ctx: GuidanceContext) -> Tensor:
        contexts.append(ctx)
        assert x0_hat.requires_grad and t.shape == (2,)
        (g,) = torch.autograd.grad(x0_hat.sum(), x_t)
        return 0.0 * g

    ddim_sample(spy, sched, (2, 1, 4, 4), steps=3, generator=gen(), guidance=guide)
    assert seen == [(True, True)] * 3
    assert [c.t for c in contexts] == [100, 50, 1]
    assert [c.t_prev for c in contexts] == [50, 1, 0]
    assert [c.progress for c in contexts] == pytest.approx([0, 1 / 3, 2 / 3])
    assert all(c.generator is not None and c.score_coef > 0 for c in contexts)


def test_guidance_with_wrong_shape_is_an_error(sched: NoiseSchedule) -> None:
    den = tiny_net_denoiser(sched)

    def bad(x_t: Tensor, t: Tensor, x0_hat: Tensor, ctx: GuidanceContext) -> Tensor:
        return torch.zeros(1)

    with pytest.raises(ValueError, match="guidance returned"):
        ddpm_sample(den, sched, (2, 1, 4, 4), t_start=2, guidance=bad)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim-eta1"])
def test_score_coef_matches_a_finite_difference(sched: NoiseSchedule, sampler: str) -> None:
    """Adding g to the score (eps -> eps - sqrt(1 - abar) g) moves x_prev by score_coef * g."""
    mix = GaussianMixtureDenoiser(sched)
    x = torch.randn(5, 1, generator=gen(2), dtype=torch.float64)
    delta = 1e-4

    def shifted(x_t: Tensor, t: Tensor) -> Tensor:
        return mix(x_t, t) - (1 - sched.abar(t, x_t)).sqrt() * delta

    def first_step(den: object, guidance: object = None) -> tuple[Tensor, list[float]]:
        steps: list[SamplerStep] = []
        coefs: list[float] = []

        def grab(x_t: Tensor, t: Tensor, x0_hat: Tensor, ctx: GuidanceContext) -> Tensor:
            coefs.append(ctx.score_coef)
            return torch.zeros_like(x_t)

        kwargs = {"generator": gen(), "callback": steps.append, "t_start": 41,
                  "guidance": grab if guidance else None}
        if sampler == "ddpm":
            ddpm_sample(den, sched, x, **kwargs)  # type: ignore[arg-type]
        else:
            eta = 1.0 if sampler == "ddim-eta1" else 0.0
            ddim_sample(den, sched, x, steps=4, eta=eta, **kwargs)  # type: ignore[arg-type]
        return steps[0].x_next, coefs

    base, _ = first_step(mix)
    moved, _ = first_step(shifted)
    _, coefs = first_step(mix, guidance=True)
    expected = torch.full_like(x, coefs[0])
    torch.testing.assert_close((moved - base) / delta, expected, rtol=1e-5, atol=1e-6)


def _mixture_samples(sampler: str, sched: NoiseSchedule, n: int = 4000) -> Tensor:
    mix = GaussianMixtureDenoiser(sched)
    shape = (n, 1)
    if sampler == "ddpm":
        out = ddpm_sample(mix, sched, shape, generator=gen(), dtype=torch.float64)
    elif sampler == "ddim-eta1":
        out = ddim_sample(mix, sched, shape, steps=500, eta=1.0, generator=gen(),
                          dtype=torch.float64)
    else:
        out = ddim_sample(mix, sched, shape, steps=500, generator=gen(), dtype=torch.float64)
    return out.flatten()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim-eta1"])
def test_samplers_reproduce_a_known_prior(sampler: str) -> None:
    """With the exact denoiser of 0.5 N(-1, 0.2^2) + 0.5 N(1, 0.2^2), samples follow p0."""
    sched = NoiseSchedule.linear(1000)
    x = _mixture_samples(sampler, sched)
    left, right = x[x < 0], x[x >= 0]
    assert abs(left.numel() / x.numel() - 0.5) < 0.04
    for part, mean in ((left, -1.0), (right, 1.0)):
        assert abs(float(part.mean()) - mean) < 0.03
        assert abs(float(part.std()) - 0.2) < 0.02


def test_fork_generator_is_deterministic_and_does_not_advance() -> None:
    g = gen(3)
    before = g.get_state().clone()
    a, b = fork_generator(g, "x"), fork_generator(g, "x")
    assert torch.equal(g.get_state(), before)
    assert a is not None and b is not None
    assert torch.equal(torch.randn(4, generator=a), torch.randn(4, generator=b))
    c = fork_generator(g, "y")
    assert c is not None
    assert not torch.equal(torch.randn(4, generator=c), torch.randn(4, generator=gen(3)))
    assert fork_generator(None, "x") is None


def test_row_generators_draw_each_row_from_its_own_seed() -> None:
    from landprior.diffusion.sample import RowGenerators, randn, shared_generator

    both = randn((2, 3, 4), RowGenerators([11, 12], shared_seed=0))
    first = randn((1, 3, 4), RowGenerators([11], shared_seed=5))
    second = randn((1, 3, 4), RowGenerators([12], shared_seed=5))
    torch.testing.assert_close(both, torch.cat([first, second]), rtol=0, atol=0)
    assert not torch.equal(both[0], both[1])
    rows = RowGenerators([1, 2], shared_seed=7)
    assert shared_generator(rows) is rows.shared
    plain = torch.Generator().manual_seed(0)
    assert shared_generator(plain) is plain
    with pytest.raises(ValueError, match="number of rows"):
        randn((3, 4), rows)
    with pytest.raises(ValueError, match="at least one seed"):
        RowGenerators([], shared_seed=0)


def test_samplers_take_row_generators_with_and_without_guidance() -> None:
    """DDPM with per-row generators: each row equals its own single-row run; guidance forks."""
    from landprior.diffusion.sample import RowGenerators

    sched = NoiseSchedule.from_name("linear", 100)
    den = tiny_net_denoiser(sched)
    both = ddpm_sample(den, sched, (2, 1, 4, 4), generator=RowGenerators([3, 4], shared_seed=0))
    for k, seed in enumerate((3, 4)):
        one = ddpm_sample(den, sched, (1, 1, 4, 4), generator=RowGenerators([seed], shared_seed=0))
        torch.testing.assert_close(both[k : k + 1], one, rtol=1e-5, atol=1e-5)

    def pull_to_zero(x_t: Tensor, t: int, x0_hat: Tensor, ctx) -> Tensor:
        return -0.01 * x_t

    guided = ddpm_sample(den, sched, (2, 1, 4, 4), guidance=pull_to_zero,
                         generator=RowGenerators([3, 4], shared_seed=0))  # fmt: skip
    assert guided.shape == both.shape and not torch.allclose(guided, both)
