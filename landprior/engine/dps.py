"""Diffusion posterior sampling (Chung et al., ICLR 2023) as a guidance term.

DPS approximates ``p(y | x_t)`` by ``exp(-loss(x0_hat(x_t)))`` with the Tweedie estimate
``x0_hat`` and, after each unguided DDPM/DDIM step, moves

    x_{t-1} <- x_{t-1} - zeta_t grad_{x_t} loss(x0_hat(x_t))          (DPS Algorithm 1)

with ``loss = -log c`` for an engine :class:`~landprior.engine.constraints.Constraint`.
``zeta_t`` is a constant (or scheduled) ``scale``, or ``scale / ||residual||`` as in the
original, where for a squared-error loss ``||residual|| = sqrt(loss)``.

With ``rule="score"`` the gradient is instead treated as an estimate of
``grad_{x_t} log p(y | x_t)`` and added to the score inside the step, i.e. the sampler's
``x_{t-1}`` moves by ``score_coef * scale * (-grad loss)``; ``scale = 1`` is then the
Bayes-consistent weight. :mod:`landprior.engine.lgd` shares this rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from landprior.diffusion.sample import GuidanceContext
from landprior.engine.constraints import Constraint, Weight, as_weight, evaluate

__all__ = ["DPS", "NORMALIZE_NAMES", "RULE_NAMES", "Normalize", "StepRule", "guidance_step"]

StepRule = Literal["step", "score"]
RULE_NAMES: tuple[str, ...] = get_args(StepRule)
Normalize = Literal["none", "residual"]
NORMALIZE_NAMES: tuple[str, ...] = get_args(Normalize)


def _check_choices(rule: str, normalize: str) -> None:
    if rule not in RULE_NAMES:
        raise ValueError(f"unknown guidance rule {rule!r}; expected one of {RULE_NAMES}")
    if normalize not in NORMALIZE_NAMES:
        raise ValueError(f"unknown normalize {normalize!r}; expected one of {NORMALIZE_NAMES}")


def guidance_step(
    loss: Tensor,
    x_t: Tensor,
    ctx: GuidanceContext,
    *,
    scale: Weight,
    rule: StepRule = "step",
    normalize: Normalize = "none",
) -> Tensor:
    """The correction to ``x_{t-1}`` from a per-problem ``loss`` (B,) differentiable in ``x_t``.

    ``step``: ``-zeta_t grad``; ``score``: ``-score_coef * zeta_t * grad``. Problems are
    independent: the gradient of the summed loss w.r.t. ``x_t[b]`` only involves ``loss[b]``.
    """
    grad = None
    if loss.requires_grad:
        (grad,) = torch.autograd.grad(loss.sum(), x_t, allow_unused=True)
    if grad is None:  # a loss that ignores x_t gives no guidance
        grad = torch.zeros_like(x_t)
    zeta = as_weight(scale)(ctx.progress)
    if normalize == "residual":
        per = zeta / loss.detach().clamp_min(1e-12).sqrt()
        zeta_t: Tensor | float = per.reshape((-1,) + (1,) * (x_t.dim() - 1)).to(grad.dtype)
    else:
        zeta_t = zeta
    if rule == "score":
        zeta_t = zeta_t * ctx.score_coef
    return -zeta_t * grad


@dataclass(frozen=True)
class DPS:
    """DPS guidance: ``loss = -log c(x0_hat)``; pass it as ``guidance=`` to a sampler.

    Args:
        constraint: log c (B, ...) -> (B,).
        scale: zeta (constant or a schedule of progress).
        rule: "step" (Chung et al.: subtract zeta grad from x_{t-1}) or "score".
        normalize: "none" or "residual" (zeta_t = zeta / sqrt(loss), the original's
            ``zeta / ||y - A x0_hat||`` for squared-error losses).
    """

    constraint: Constraint
    scale: Weight = 1.0
    rule: StepRule = "step"
    normalize: Normalize = "none"

    def __post_init__(self) -> None:
        _check_choices(self.rule, self.normalize)
        as_weight(self.scale)

    def loss(self, x0_hat: Tensor, ctx: GuidanceContext) -> Tensor:
        """``-log c(x0_hat)``, shape (B,)."""
        return -evaluate(self.constraint, x0_hat, ctx.progress)

    def __call__(self, x_t: Tensor, t: Tensor, x0_hat: Tensor, ctx: GuidanceContext) -> Tensor:
        loss = self.loss(x0_hat, ctx)
        return guidance_step(
            loss, x_t, ctx, scale=self.scale, rule=self.rule, normalize=self.normalize
        )


