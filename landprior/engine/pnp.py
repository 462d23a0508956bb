"""Algorithm 1 of Graikos et al. (2022, section 2.2): a diffusion model as a plug-and-play prior.

Each step draws one ``t`` (shared by the batch, from an annealed t schedule) and noise
``eps``, forms ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps`` (eq. 2) and takes one
optimiser step on the variables with the per-problem loss (eq. 9/10)

    L_b = mean_pixels (eps - eps_theta(x_t, t))^2 - w(progress) log c(x_b)

summed over the batch (so the gradient for problem b only involves L_b). Three variants
share one loop (:func:`_optimise`):

* :func:`infer_point` - the point estimate: optimise x itself;
* :func:`infer_latent` - eq. 13: ``x = decode(y)``, optimise y (TSP: ``x = f(A(L))``);
* :func:`infer_gaussian` - appendix A: ``q(x) = N(mu, diag sigma^2)``, optimise mu and
  log sigma with the reparametrised sample ``x = mu + sigma z`` and the entropy of q.

The denoiser is frozen for the run (eval, no parameter gradients) and gradients are taken
with ``torch.autograd.grad`` w.r.t. the optimised tensors only (PAPER_NOTES: ~2x faster).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landprior.diffusion.denoiser import Denoiser, as_batch_t
from landprior.diffusion.sample import RowGenerators, ddpm_sample, randn, shared_generator
from landprior.diffusion.schedule import NoiseSchedule
from landprior.engine.constraints import Constraint, Weight, as_weight, evaluate
from landprior.engine.schedules import TSchedule, resolve_t_schedule

__all__ = [
    "OPTIMIZER_NAMES",
    "LRSchedule",
    "OptimizerName",
    "PnPStep",
    "final_denoise",
    "frozen",
    "infer_gaussian",
    "infer_latent",
    "infer_point",
    "linear_lr",
    "make_optimizer",
]

log = logging.getLogger(__name__)

OptimizerName = Literal["adam", "adamw", "adamax", "sgd", "rmsprop", "adagrad", "nadam", "radam"]
OPTIMIZER_NAMES: tuple[str, ...] = get_args(OptimizerName)
_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adamax": torch.optim.Adamax,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
}

LRSchedule = Callable[[float], float]
"""``progress -> factor`` multiplying the base learning rate (progress in [0, 1))."""


@dataclass(frozen=True)
class PnPStep:
    """One Algorithm 1 step, for callbacks. Tensors are detached; per-problem values are (B,).

    ``x`` is the point the step evaluated (before the optimiser update); ``log_c`` is None
    without a constraint.
    """

    index: int
    steps: int
    t: int
    progress: float
    x: Tensor
    diffusion_loss: Tensor
    log_c: Tensor | None
    loss: Tensor
    weight: float
    lr: float


Callback = Callable[[PnPStep], None]

# build(params, generator) -> (x for the diffusion term (B, ...), extra per-problem loss or None)
_Build = Callable[[list[Tensor], torch.Generator | None], tuple[Tensor, Tensor | None]]


def linear_lr(end: float, start: float = 1.0) -> LRSchedule:
    """lr factor going linearly ``start -> end`` (TSP: 1 -> 0.77; land cover: 1 -> 1e-3)."""
    start, end = float(start), float(end)
    return lambda progress: start + (end - start) * progress


def make_optimizer(
    name: str, params: Sequence[Tensor], lr: float, kwargs: dict[str, Any] | None = None
) -> torch.optim.Optimizer:
    """A torch optimizer by name (:data:`OPTIMIZER_NAMES`); a wrong name lists the allowed ones.

    Only element-wise optimizers are offered, so batched problems never interact.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZER_NAMES}")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return _OPTIMIZERS[key](list(params), lr=lr, **(kwargs or {}))


@contextlib.contextmanager
def frozen(denoiser: Denoiser) -> Iterator[Denoiser]:
    """Eval mode and ``requires_grad=False`` on the denoiser's parameters, restored afterwards."""
    if not isinstance(denoiser, nn.Module):
        yield denoiser
        return
    was_training = denoiser.training
    flags = [(p, p.requires_grad) for p in denoiser.parameters()]
    denoiser.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield denoiser
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        denoiser.train(was_training)


def _as_init(
    x_init: Tensor | Sequence[int],
    generator: torch.Generator | RowGenerators | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    label: str,
) -> Tensor:
    if isinstance(x_init, Tensor):
        if x_init.dim() < 1 or x_init.shape[0] < 1:
            raise ValueError(f"{label} must be (B, ...) with B >= 1, got {tuple(x_init.shape)}")
        if not x_init.is_floating_point():
            raise ValueError(f"{label} must be a floating-point tensor, got {x_init.dtype}")
        if not bool(x_init.isfinite().all()):
            raise ValueError(f"{label} contains NaN or inf")
        return x_init.detach().clone()
    shape = tuple(int(s) for s in x_init)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"{label} shape must be (B, ...) with positive sizes, got {shape}")
    return randn(shape, generator, device=device, dtype=dtype or torch.get_default_dtype())


def _optimise(
    denoiser: Denoiser,
    constraint: Constraint | None,
    schedule: NoiseSchedule,
    params: list[Tensor],
    build: _Build,
    *,
    t_schedule: TSchedule,
    optimizer: str,
    lr: float,
    optimizer_kwargs: dict[str, Any] | None,
    lr_schedule: LRSchedule | None,
    weight: Weight,
    constraint_on_clipped: bool,
    constraint_input: Callable[[Tensor, list[Tensor]], Tensor] | None,
    generator: torch.Generator | RowGenerators | None,
    callback: Callback | None,
    progress: bool,
    desc: str,
) -> None:
    """The one Algorithm 1 loop: updates ``params`` (leaf tensors) in place."""
    ts = resolve_t_schedule(
        t_schedule, schedule.num_timesteps, generator=shared_generator(generator)
    ).tolist()
    weight_fn = as_weight(weight)
    opt = make_optimizer(optimizer, params, lr, optimizer_kwargs)
    base_lrs = [group["lr"] for group in opt.param_groups]
    steps = len(ts)
    abar = schedule.alphas_cumprod
    with frozen(denoiser):
        for i in tqdm(range(steps), disable=not progress, desc=desc, leave=False):
            t, prog = ts[i], i / steps
            if lr_schedule is not None:
                factor = float(lr_schedule(prog))
                for group, base in zip(opt.param_groups, base_lrs, strict=True):
                    group["lr"] = base * factor
            w = float(weight_fn(prog))
            with torch.enable_grad():
                x, extra = build(params, generator)
                noise = randn(x.shape, generator, device=x.device, dtype=x.dtype)
                a = float(abar[t - 1])
                x_t = math.sqrt(a) * x + math.sqrt(1.0 - a) * noise
                eps = denoiser(x_t, as_batch_t(t, x.shape[0], device=x.device))
                if eps.shape != x.shape:
                    raise ValueError(
                        f"denoiser returned shape {tuple(eps.shape)} for x_t {tuple(x.shape)}"
                    )
                diffusion = (noise - eps).square().flatten(1).mean(dim=1)
                loss = diffusion
                log_c = None
                if constraint is not None:
                    xc = x if constraint_input is None else constraint_input(x, params)
                    if constraint_on_clipped:
                        xc = xc.clamp(-1.0, 1.0)
                    log_c = evaluate(constraint, xc, prog)
                    loss = loss - w * log_c
                if extra is not None:
                    loss = loss + extra
                grads = torch.autograd.grad(loss.sum(), params)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step()
            if callback is not None:
                callback(
                    PnPStep(
                        index=i, steps=steps, t=t, progress=prog, x=x.detach(),
                        diffusion_loss=diffusion.detach(),
                        log_c=None if log_c is None else log_c.detach(),
                        loss=loss.detach(), weight=w, lr=opt.param_groups[0]["lr"],
                    )
                )
    log.debug("%s: %d steps done", desc, steps)


def infer_point(
    denoiser: Denoiser,
    constraint: Constraint | None,
    x_init: Tensor | Sequence[int],
    schedule: NoiseSchedule,
    *,
    t_schedule: TSchedule,
    optimizer: OptimizerName = "adam",
    lr: float = 0.01,
    optimizer_kwargs: dict[str, Any] | None = None,
    lr_schedule: LRSchedule | None = None,
    weight: Weight = 1.0,
    constraint_on_clipped: bool = False,
    generator: torch.Generator | RowGenerators | None = None,
    callback: Callback | None = None,
    final_denoise_from: int | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Algorithm 1: a point estimate of x under the prior and ``constraint`` (section 2.2).

    Args:
        denoiser: eps_theta(x_t, t) -> eps, (B, ...) -> (B, ...).
        constraint: log c(x, progress) -> (B,), or None for the prior alone.
        x_init: initial x (B, ...) (e.g. weak labels) or a shape to start from N(0, I).
        t_schedule: long tensor / list of t per step, or a preset name
            ("mnist", "tsp", "ffhq", "landcover").
        optimizer, lr, optimizer_kwargs: any of :data:`OPTIMIZER_NAMES`, e.g.
            ``optimizer_kwargs={"betas": (0.0, 0.999)}`` (land cover).
        lr_schedule: ``progress -> factor`` of lr, e.g. ``linear_lr(1e-3)``.
        weight: w (constant or ``progress -> w``) multiplying log c.
        constraint_on_clipped: evaluate c on clip(x, -1, 1); the diffusion term sees raw x.
        final_denoise_from: if set, noise the result to this t and run plain DDPM
            denoising back to 0 (faces: t = 200, section 3.2).

    Returns:
        x, shape (B, ...), detached.
    """
    x = _as_init(x_init, generator, device, dtype, "x_init").requires_grad_(True)

    def build(params: list[Tensor], gen: torch.Generator | None) -> tuple[Tensor, None]:
        return params[0], None

    _optimise(
        denoiser, constraint, schedule, [x], build, t_schedule=t_schedule, optimizer=optimizer,
        lr=lr, optimizer_kwargs=optimizer_kwargs, lr_schedule=lr_schedule, weight=weight,
        constraint_on_clipped=constraint_on_clipped, constraint_input=None,
        generator=generator, callback=callback, progress=progress, desc="pnp",
    )
    out = x.detach()
    if final_denoise_from is not None:
        out = final_denoise(denoiser, schedule, out, final_denoise_from, generator=generator)
    return out


def final_denoise(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x: Tensor,
    t: int,
    *,
    generator: torch.Generator | RowGenerators | None = None,
    progress: bool = False,
) -> Tensor:
    """Noise x (B, ...) to time t (eq. 2) and run plain DDPM ancestral sampling back to 0."""
    noisy = schedule.q_sample(
        x, schedule.check_t(t), randn(x.shape, generator, device=x.device, dtype=x.dtype)
    )
    with frozen(denoiser):
        return ddpm_sample(
            denoiser, schedule, noisy, t_start=t, generator=generator, progress=progress
        )


def infer_latent(
    denoiser: Denoiser,
    constraint: Constraint | None,
    y_init: Tensor | Sequence[int],
    decode: Callable[[Tensor], Tensor],
    schedule: NoiseSchedule,
    *,
    t_schedule: TSchedule,
    optimizer: OptimizerName = "adam",
    lr: float = 0.01,
    optimizer_kwargs: dict[str, Any] | None = None,
    lr_schedule: LRSchedule | None = None,
    weight: Weight = 1.0,
    constraint_on: Literal["x", "latent"] = "x",
    constraint_on_clipped: bool = False,
    generator: torch.Generator | RowGenerators | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Algorithm 1 in a latent (eq. 13): ``x = decode(y)``, the optimiser runs on y.

    Args:
        y_init: initial latent (B, ...) or a shape for N(0, I) (TSP: L ~ N(0, 1)).
        decode: differentiable y (B, ...) -> x (B, ...) in the prior's space.
        constraint_on: evaluate log c on the decoded "x" or on the "latent" y.
        Others as :func:`infer_point`.

    Returns:
        y, shape (B, ...), detached (decode it for x).
    """
    if constraint_on not in ("x", "latent"):
        raise ValueError(
            f"unknown constraint_on {constraint_on!r}; expected one of ('x', 'latent')"
        )
    y = _as_init(y_init, generator, device, dtype, "y_init").requires_grad_(True)

    def build(params: list[Tensor], gen: torch.Generator | None) -> tuple[Tensor, None]:
        x = decode(params[0])
        if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] != params[0].shape[0]:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"decode must map (B, ...) to (B, ...) with B = {params[0].shape[0]}, got {got}"
            )
        return x, None

    def latent(x: Tensor, params: list[Tensor]) -> Tensor:
        return params[0]

    _optimise(
        denoiser, constraint, schedule, [y], build, t_schedule=t_schedule, optimizer=optimizer,
        lr=lr, optimizer_kwargs=optimizer_kwargs, lr_schedule=lr_schedule, weight=weight,
        constraint_on_clipped=constraint_on_clipped,
        constraint_input=latent if constraint_on == "latent" else None,
        generator=generator, callback=callback, progress=progress, desc="pnp-latent",
    )
    return y.detach()


def infer_gaussian(
    denoiser: Denoiser,
    constraint: Constraint | None,
    mu_init: Tensor | Sequence[int],
    schedule: NoiseSchedule,
    *,
    t_schedule: TSchedule,
    init_log_std: float | Tensor = -2.0,
    entropy_weight: float = 1.0,
    optimizer: OptimizerName = "adam",
    lr: float = 0.01,
    optimizer_kwargs: dict[str, Any] | None = None,
    lr_schedule: LRSchedule | None = None,
    weight: Weight = 1.0,
    constraint_on_clipped: bool = False,
    generator: torch.Generator | RowGenerators | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Gaussian posterior variant (appendix A): ``q(x) = N(mu, diag(exp(log_std)^2))``.

    Each step samples ``x = mu + exp(log_std) z`` (reparametrised, z ~ N(0, I)) and adds
    ``-entropy_weight * H(q) / D`` (the entropy per dimension, ``mean(log_std)`` up to a
    constant, matching the per-pixel mean of the diffusion term) to each problem's loss.

    Returns:
        (mu, log_std), each of shape (B, ...), detached.
    """
    mu = _as_init(mu_init, generator, device, dtype, "mu_init").requires_grad_(True)
    log_std = torch.as_tensor(init_log_std, dtype=mu.dtype, device=mu.device)
    log_std = (log_std.detach().clone() + torch.zeros_like(mu)).requires_grad_(True)
    if not bool(log_std.isfinite().all()):
        raise ValueError("init_log_std contains NaN or inf")
    if not math.isfinite(entropy_weight):
        raise ValueError(f"entropy_weight must be finite, got {entropy_weight}")

    def build(params: list[Tensor], gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        m, s = params
        z = randn(m.shape, gen, device=m.device, dtype=m.dtype)
        x = m + s.exp() * z
        return x, -entropy_weight * s.flatten(1).mean(dim=1)

    _optimise(
        denoiser, constraint, schedule, [mu, log_std], build, t_schedule=t_schedule,
        optimizer=optimizer, lr=lr, optimizer_kwargs=optimizer_kwargs, lr_schedule=lr_schedule,
        weight=weight, constraint_on_clipped=constraint_on_clipped, constraint_input=None,
        generator=generator, callback=callback, progress=progress, desc="pnp-gaussian",
    )
    return mu.detach(), log_std.detach()
