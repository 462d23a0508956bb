"""The 1-D check of the LGD paper (Song et al. 2023, sections 4.2 and 6.1).

Prior ``p0 = 0.5 N(-1, 0.2^2) + 0.5 N(1, 0.2^2)``; its noised marginals are Gaussian
mixtures too, so the eps-denoiser is exact (:class:`GaussianMixtureDenoiser`):

    p_t(x_t) = sum_k w_k N(x_t; sqrt(abar_t) mu_k, abar_t s_k^2 + 1 - abar_t)
    eps(x_t, t) = -sqrt(1 - abar_t) grad log p_t(x_t)

The loss is the logistic loss of the component y = 0 (the one at -1) under the Bayes
classifier of the two components, ``p(y=0 | x) = sigmoid(-k x)`` with
``k = 2 |mu| / s^2 = 50``; then ``p0(x) p(y=0 | x) = 0.5 N(x; -1, 0.2^2)`` exactly, so the
true posterior is the component itself. Each method draws samples with 20-step DDIM and is
scored by ``KL(N(-1, 0.2^2) || N(mean, std^2))`` of the Gaussian fitted to its samples.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landprior.diffusion.sample import Guidance, GuidanceContext, ddim_sample
from landprior.diffusion.schedule import NoiseSchedule
from landprior.engine.constraints import LogC
from landprior.engine.dps import DPS, StepRule
from landprior.engine.lgd import LGDMC

__all__ = [
    "MOG_METHODS",
    "GaussianMixtureDenoiser",
    "MogSettings",
    "gaussian_kl",
    "logistic_constraint",
    "run_lgd_mog",
    "sample_method",
]

log = logging.getLogger(__name__)

MOG_METHODS: tuple[str, ...] = ("oracle", "dps", "lgd_mc_1", "lgd_mc_5", "lgd_mc_10", "lgd_mc_20")


class GaussianMixtureDenoiser(nn.Module):
    """Exact eps-denoiser of a 1-D Gaussian mixture prior, applied to every coordinate of x.

    Args:
        schedule: the noise schedule (abar_t).
        means, stds, weights: the K components of p0 (weights are normalised).
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        means: Sequence[float] = (-1.0, 1.0),
        stds: Sequence[float] = (0.2, 0.2),
        weights: Sequence[float] = (0.5, 0.5),
    ) -> None:
        super().__init__()
        if not (len(means) == len(stds) == len(weights) >= 1):
            raise ValueError("means, stds and weights must have the same positive length")
        if min(stds) <= 0 or min(weights) <= 0:
            raise ValueError("stds and weights must be > 0")
        self.schedule = schedule
        total = float(sum(weights))
        self.register_buffer("means", torch.tensor(means, dtype=torch.float64))
        self.register_buffer("stds", torch.tensor(stds, dtype=torch.float64))
        log_w = torch.tensor([w / total for w in weights], dtype=torch.float64).log()
        self.register_buffer("log_weights", log_w)

    def _components(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Log-responsibility terms, centred residuals and variances, each (..., K)."""
        a = self.schedule.abar(t, x_t).unsqueeze(-1)
        means, stds = self.means.to(x_t), self.stds.to(x_t)
        var = a * stds**2 + (1.0 - a)
        resid = x_t.unsqueeze(-1) - a.sqrt() * means
        log_norm = var.log() + resid**2 / var + math.log(2 * math.pi)
        log_terms = self.log_weights.to(x_t) - 0.5 * log_norm
        return log_terms, resid, var

    def log_prob(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``log p_t(x_t)`` per coordinate, same shape as ``x_t``."""
        log_terms, _, _ = self._components(x_t, t)
        return torch.logsumexp(log_terms, dim=-1)

    def score(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``grad_{x_t} log p_t(x_t)``, same shape as ``x_t``."""
        log_terms, resid, var = self._components(x_t, t)
        resp = torch.softmax(log_terms, dim=-1)
        return -(resp * resid / var).sum(dim=-1)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """eps (B, ...) = -sqrt(1 - abar_t) score(x_t)."""
        a = self.schedule.abar(t, x_t)
        return -(1.0 - a).sqrt() * self.score(x_t, t)


def logistic_constraint(slope: float = 50.0, threshold: float = 0.0) -> LogC:
    """log c(x) = log sigmoid(-slope (x - threshold)) summed over coordinates, (B, ...) -> (B,).

    ``-log c`` is the logistic loss of the class y = 0 (left of the threshold).
    """

    def log_c(x: Tensor, progress: float) -> Tensor:
        return F.logsigmoid(-slope * (x - threshold)).flatten(1).sum(dim=1)

    return LogC(log_c, name=f"logistic(slope={slope:g})")


def gaussian_kl(mean_p: float, std_p: float, mean_q: float, std_q: float) -> float:
    """``KL(N(mean_p, std_p^2) || N(mean_q, std_q^2))`` in nats."""
    return (
        math.log(std_q / std_p)
        + (std_p**2 + (mean_p - mean_q) ** 2) / (2.0 * std_q**2)
        - 0.5
    )


@dataclass(frozen=True)
class MogSettings:
    """Settings of the 1-D check; the defaults are the reported configuration.

    ``scale`` and ``rule`` are shared by every guided method (no per-method tuning):
    ``rule="score"`` adds ``scale * grad log p(y | x_t)`` (the method's estimate) to the
    score inside each DDIM step, so ``scale = 1`` is the Bayes weight with no tuning.
    """

    samples: int = 2000
    seed: int = 0
    steps: int = 20
    eta: float = 0.0
    scale: float = 1.0
    rule: StepRule = "score"
    slope: float = 50.0
    num_timesteps: int = 1000
    mean: float = 1.0
    std: float = 0.2


@dataclass(frozen=True)
class _ExactGuidance:
    """The exact ``grad log p(y=0 | x_t)``: the score of the left component minus the mixture's.

    A reference, not a method: it shows the error of the sampler itself (20-step DDIM).
    """

    mixture: GaussianMixtureDenoiser
    component: GaussianMixtureDenoiser
    scale: float

    def __call__(self, x_t: Tensor, t: Tensor, x0_hat: Tensor, ctx: GuidanceContext) -> Tensor:
        with torch.no_grad():
            g = self.component.score(x_t, t) - self.mixture.score(x_t, t)
        return self.scale * ctx.score_coef * g


def sample_method(method: str, settings: MogSettings) -> Tensor:
    """Draw ``settings.samples`` 1-D samples (N,) for one of :data:`MOG_METHODS` or "exact".

    "exact" is DDIM with the exact guidance (score rule), the floor set by the sampler.
    """
    if method not in (*MOG_METHODS, "exact"):
        raise ValueError(f"unknown method {method!r}; expected one of {(*MOG_METHODS, 'exact')}")
    gen = torch.Generator().manual_seed(settings.seed)
    shape = (settings.samples, 1)
    if method == "oracle":
        # The exact posterior p0(x) sigmoid(-k x) / Z is the component N(-mean, std^2) itself.
        x = -settings.mean + settings.std * torch.randn(shape, generator=gen, dtype=torch.float64)
        return x.flatten()
    schedule = NoiseSchedule.linear(settings.num_timesteps)
    denoiser = GaussianMixtureDenoiser(
        schedule, (-settings.mean, settings.mean), (settings.std, settings.std)
    )
    loss = logistic_constraint(settings.slope)
    if method == "exact":
        component = GaussianMixtureDenoiser(schedule, (-settings.mean,), (settings.std,), (1.0,))
        guidance: Guidance = _ExactGuidance(denoiser, component, settings.scale)
    elif method == "dps":
        guidance = DPS(loss, scale=settings.scale, rule=settings.rule)
    else:
        n = int(method.rsplit("_", 1)[1])
        guidance = LGDMC(loss, n=n, scale=settings.scale, rule=settings.rule)
    x = ddim_sample(
        denoiser, schedule, shape, steps=settings.steps, eta=settings.eta,
        generator=gen, guidance=guidance, dtype=torch.float64,
    )
    return x.flatten()


def run_lgd_mog(
    settings: MogSettings | None = None,
    methods: Sequence[str] = MOG_METHODS,
    *,
    reference: bool = True,
) -> dict[str, Any]:
    """Run the 1-D check: KL per method, sample mean/std and the settings, as a JSON-ready dict.

    With ``reference=True`` also reports ``kl_reference["exact"]``: DDIM with the exact
    guidance, i.e. the error of the sampler alone.
    """
    settings = settings or MogSettings()
    kl: dict[str, float] = {}
    fits: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    for method in (*methods, "exact") if reference else methods:
        x = sample_method(method, settings)
        if not bool(x.isfinite().all()):
            raise RuntimeError(f"{method}: non-finite samples")
        m, s = float(x.mean()), float(x.std())
        kl[method] = gaussian_kl(-settings.mean, settings.std, m, s)
        fits[method] = {"mean": m, "std": s, "frac_left": float((x < 0).double().mean())}
        log.info("%s: mean %.4f std %.4f KL %.4g", method, m, s, kl[method])
    kl_reference = {"exact": kl.pop("exact")} if reference else {}
    return {
        "kl": kl,
        "kl_reference": kl_reference,
        "fit": fits,
        "target": {"mean": -settings.mean, "std": settings.std},
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "seconds": time.perf_counter() - start,
    }
