"""The contract every sampler and estimator of the engine passes, with no special cases."""

from __future__ import annotations

import pytest
import torch

from tests.engine.helpers import (
    GUIDED,
    METHODS,
    SHAPE,
    Method,
    make_denoiser,
    region_loss,
    schedule,
)

DENOISERS = ["mixture", "tinynet"]


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", DENOISERS)
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_shape_and_finite(method: Method, kind: str) -> None:
    sched = schedule()
    x = _x()
    out = method.run(make_denoiser(kind, sched), sched, x, 1.0, _gen())
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert not out.requires_grad


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_deterministic_under_a_generator(method: Method) -> None:
    sched = schedule()
    den = make_denoiser("tinynet", sched)

    def run(seed: int) -> torch.Tensor:
        gen = _gen(seed)  # the generator also draws the start
        return method.run(den, sched, torch.randn(SHAPE, generator=gen), 1.0, gen)

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("kind", DENOISERS)
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_zero_guidance_is_exactly_unguided(method: Method, kind: str) -> None:
    sched = schedule()
    den = make_denoiser(kind, sched)
    plain = method.run(den, sched, _x(), None, _gen())
    zero = method.run(den, sched, _x(), 0.0, _gen())
    assert torch.equal(plain, zero)


@pytest.mark.parametrize("kind", DENOISERS)
@pytest.mark.parametrize("method", GUIDED, ids=lambda m: m.name)
def test_guidance_lowers_the_loss(method: Method, kind: str) -> None:
    sched = schedule()
    den = make_denoiser(kind, sched)
    plain = region_loss(method.run(den, sched, _x(), None, _gen()))
    guided = region_loss(method.run(den, sched, _x(), 1.0, _gen()))
    assert guided.mean() < 0.7 * plain.mean(), (guided, plain)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_batch_problems_are_independent(method: Method) -> None:
    sched = schedule()
    den = make_denoiser("tinynet", sched)
    x1 = _x(0)
    x2 = x1.clone()
    x2[1:] = _x(7)[1:]  # same first problem, different others
    out1 = method.run(den, sched, x1, 1.0, _gen())
    out2 = method.run(den, sched, x2, 1.0, _gen())
    torch.testing.assert_close(out1[0], out2[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out1[1:], out2[1:])
