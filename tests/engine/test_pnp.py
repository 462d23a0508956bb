"""Algorithm 1 (point, latent, Gaussian): optimizers, schedules, callbacks, freezing, errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from landprior.engine.constraints import ConstraintError, constraint
from landprior.engine.pnp import (
    OPTIMIZER_NAMES,
    PnPStep,
    infer_gaussian,
    infer_latent,
    infer_point,
    linear_lr,
    make_optimizer,
)
from landprior.engine.schedules import linear_schedule
from tests.engine.helpers import (
    SHAPE,
    T,
    region_constraint,
    region_loss,
    schedule,
    tiny_net_denoiser,
)

TS = linear_schedule(12, 60, 1, num_timesteps=T)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_every_optimizer_runs_and_lowers_the_constraint_loss(name: str) -> None:
    sched = schedule()
    den = tiny_net_denoiser(sched)
    x0 = torch.randn(SHAPE, generator=gen(1))
    lr = {"sgd": 0.1, "adagrad": 0.3, "rmsprop": 0.02}.get(name, 0.05)
    out = infer_point(den, region_constraint(), x0, sched, t_schedule=TS, optimizer=name, lr=lr,
                      weight=5.0, generator=gen())
    assert region_loss(out).mean() < region_loss(x0).mean()


def test_unknown_optimizer_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown optimizer 'lbfgs'.*adam.*adamax.*sgd"):
        make_optimizer("lbfgs", [torch.zeros(1, requires_grad=True)], 0.1)
    with pytest.raises(ValueError, match="lr"):
        make_optimizer("adam", [torch.zeros(1, requires_grad=True)], -1.0)


def test_callback_schedule_lr_and_weight() -> None:
    sched = schedule()
    steps: list[PnPStep] = []
    infer_point(tiny_net_denoiser(sched), region_constraint(), SHAPE, sched, t_schedule=TS,
                lr=0.1, lr_schedule=linear_lr(0.5), weight=lambda p: 1.0 - p,
                optimizer_kwargs={"betas": (0.0, 0.999)}, generator=gen(),
                callback=steps.append)
    assert [s.t for s in steps] == TS.tolist()
    assert [s.index for s in steps] == list(range(12))
    assert steps[0].lr == pytest.approx(0.1) and steps[6].lr == pytest.approx(0.075)
    assert steps[0].weight == pytest.approx(1.0) and steps[6].weight == pytest.approx(0.5)
    s = steps[3]
    assert s.diffusion_loss.shape == (4,) and s.log_c is not None and s.log_c.shape == (4,)
    torch.testing.assert_close(s.loss, s.diffusion_loss - s.weight * s.log_c)


def test_preset_schedule_by_name_and_bad_schedules() -> None:
    sched = schedule()  # T = 100
    den = tiny_net_denoiser(sched)
    steps: list[PnPStep] = []
    infer_point(den, None, SHAPE, sched, t_schedule="landcover", generator=gen(),
                callback=steps.append)
    assert len(steps) == 200 and max(s.t for s in steps) <= 100
    with pytest.raises(ValueError, match="unknown t schedule 'nope'"):
        infer_point(den, None, SHAPE, sched, t_schedule="nope")
    with pytest.raises(ValueError, match=r"out of range.*\[1, 100\]"):
        infer_point(den, None, SHAPE, sched, t_schedule=[150, 50, 1])


def test_bad_inputs() -> None:
    sched = schedule()
    den = tiny_net_denoiser(sched)
    x = torch.randn(SHAPE)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x_init contains NaN"):
        infer_point(den, None, x, sched, t_schedule=TS)
    with pytest.raises(ValueError, match="shape"):
        infer_point(den, None, (0, 1, 4, 4), sched, t_schedule=TS)
    with pytest.raises(ValueError, match="floating"):
        infer_point(den, None, torch.zeros(SHAPE, dtype=torch.long), sched, t_schedule=TS)
    with pytest.raises(ValueError, match="decode must map"):
        infer_latent(den, None, (4, 3), lambda y: y.sum(), sched, t_schedule=TS)
    with pytest.raises(ValueError, match="constraint_on"):
        infer_latent(den, None, SHAPE, lambda y: y, sched, t_schedule=TS,
                     constraint_on="z")  # type: ignore[arg-type]


def test_nan_from_the_constraint_is_a_clear_error() -> None:
    sched = schedule()

    def exploding(x: Tensor) -> Tensor:
        return torch.log(-x.flatten(1).abs().mean(dim=1))  # log of a negative number

    with pytest.raises(ConstraintError, match=r"'exploding'.*non-finite"):
        infer_point(tiny_net_denoiser(sched), constraint(exploding), SHAPE, sched,
                    t_schedule=TS)


def test_denoiser_is_frozen_during_and_restored_after() -> None:
    sched = schedule()
    den = tiny_net_denoiser(sched)
    den.train()
    seen: list[tuple[bool, bool]] = []
    hook = den.register_forward_pre_hook(
        lambda m, args: seen.append((m.training, any(p.requires_grad for p in m.parameters())))
    )
    infer_point(den, region_constraint(), SHAPE, sched, t_schedule=TS, generator=gen())
    hook.remove()
    assert seen and all(s == (False, False) for s in seen)
    assert den.training and all(p.requires_grad for p in den.parameters())
    assert all(p.grad is None for p in den.parameters())


def test_constraint_on_clipped_x() -> None:
    sched = schedule()
    seen: list[float] = []

    def spy(x: Tensor) -> Tensor:
        seen.append(float(x.detach().abs().max()))
        return -x.flatten(1).mean(dim=1)

    x0 = 3.0 * torch.randn(SHAPE, generator=gen(2))
    infer_point(tiny_net_denoiser(sched), constraint(spy), x0, sched, t_schedule=TS,
                constraint_on_clipped=True)
    assert max(seen) <= 1.0
    seen.clear()
    infer_point(tiny_net_denoiser(sched), constraint(spy), x0, sched, t_schedule=TS)
    assert max(seen) > 1.0


def test_final_denoise_runs_plain_ddpm_from_t() -> None:
    sched = schedule()
    calls: list[int] = []
    den = tiny_net_denoiser(sched)

    def counting(x_t: Tensor, t: Tensor) -> Tensor:
        calls.append(int(t[0]))
        return den(x_t, t)

    infer_point(counting, None, SHAPE, sched, t_schedule=TS, generator=gen(),
                final_denoise_from=20)
    assert calls[: len(TS)] == TS.tolist()
    assert calls[len(TS):] == list(range(20, 0, -1))


def test_latent_variant_optimises_y_through_decode() -> None:
    sched = schedule()
    decoded: list[Tensor] = []

    def decode(y: Tensor) -> Tensor:
        decoded.append(y.detach().clone())
        return torch.tanh(y).reshape(SHAPE)

    y = infer_latent(tiny_net_denoiser(sched), region_constraint(), (4, 36), decode, sched,
                     t_schedule=TS, lr=0.1, weight=5.0, generator=gen())
    assert y.shape == (4, 36) and len(decoded) == len(TS)
    assert region_loss(decode(y)).mean() < region_loss(decode(decoded[0])).mean()
    seen: list[tuple[int, ...]] = []

    def on_latent(x: Tensor) -> Tensor:
        seen.append(tuple(x.shape))
        return -x.flatten(1).mean(dim=1)

    infer_latent(tiny_net_denoiser(sched), constraint(on_latent), (4, 36), decode, sched,
                 t_schedule=TS, constraint_on="latent")
    assert set(seen) == {(4, 36)}


def test_gaussian_variant_entropy_widens_q() -> None:
    sched = schedule()
    den = tiny_net_denoiser(sched)
    common = {"t_schedule": TS, "init_log_std": -2.0, "lr": 0.05, "generator": gen()}
    mu, log_std = infer_gaussian(den, None, SHAPE, sched, entropy_weight=50.0, **common)
    assert mu.shape == SHAPE and log_std.shape == SHAPE
    assert float(log_std.mean()) > -2.0
    _, narrow = infer_gaussian(den, None, SHAPE, sched, entropy_weight=0.0, **common)
    assert float(log_std.mean()) > float(narrow.mean())
    with pytest.raises(ValueError, match="init_log_std"):
        infer_gaussian(den, None, SHAPE, sched, t_schedule=TS, init_log_std=float("nan"))
