"""Loss-guided diffusion with Monte Carlo samples (LGD-MC; Song et al., ICML 2023).

DPS evaluates the loss at the point estimate ``x0_hat``; LGD-MC replaces the intractable
``p(x0 | x_t)`` by ``N(x0_hat, r_t^2 I)`` and estimates

    log p(y | x_t) ~ log (1/n) sum_i exp(-loss(x0_hat + r_t eps_i)),   eps_i ~ N(0, I)

with ``r_t = sigma_t / sqrt(1 + sigma_t^2)`` and ``sigma_t^2 = (1 - abar_t) / abar_t`` (the
variance-exploding noise level; so ``r_t = sqrt(1 - abar_t)``). The denoiser runs once per
step whatever ``n``: only the loss is evaluated ``n`` times. ``n = 1`` is DPS evaluated at
one noisy point. The step rule is shared with :mod:`landprior.engine.dps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from landprior.diffusion.sample import GuidanceContext, randn
from landprior.engine.constraints import Constraint, Weight, as_weight, evaluate
from landprior.engine.dps import Normalize, StepRule, _check_choices, guidance_step

__all__ = ["LGDMC", "lgd_radius"]


def lgd_radius(ctx: GuidanceContext, like: Tensor) -> Tensor:
    """``r_t = sigma_t / sqrt(1 + sigma_t^2)``, broadcastable to ``like`` (B, ...)."""
    sigma = ctx.schedule.sigma_ve(ctx.t, like)
    return sigma / (1.0 + sigma.square()).sqrt()


@dataclass(frozen=True)
class LGDMC:
    """LGD-MC guidance with ``n`` Monte Carlo samples; pass it as ``guidance=`` to a sampler.

    The constraint is called ``n`` times on (B, ...) batches (so per-problem constraints
    work unchanged). Noise comes from ``ctx.generator`` (forked from the sampler's).
    Other arguments as :class:`~landprior.engine.dps.DPS`.
    """

    constraint: Constraint
    n: int = 10
    scale: Weight = 1.0
    rule: StepRule = "step"
    normalize: Normalize = "none"

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n (Monte Carlo samples) must be a positive integer, got {self.n!r}")
        _check_choices(self.rule, self.normalize)
        as_weight(self.scale)

    def loss(self, x0_hat: Tensor, ctx: GuidanceContext) -> Tensor:
        """``-log mean_i exp(log c(x0_hat + r_t eps_i))``, shape (B,)."""
        r = lgd_radius(ctx, x0_hat)
        eps = randn(
            (self.n, *x0_hat.shape), ctx.generator, device=x0_hat.device, dtype=x0_hat.dtype
        )
        log_c = torch.stack(
            [evaluate(self.constraint, x0_hat + r * eps[i], ctx.progress) for i in range(self.n)]
        )
        return -(torch.logsumexp(log_c, dim=0) - math.log(self.n))

    def __call__(self, x_t: Tensor, t: Tensor, x0_hat: Tensor, ctx: GuidanceContext) -> Tensor:
        loss = self.loss(x0_hat, ctx)
        return guidance_step(
            loss, x_t, ctx, scale=self.scale, rule=self.rule, normalize=self.normalize
        )
