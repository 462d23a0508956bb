"""Pseudo-labels for a target city: Algorithm 1 under the MI - KL constraint (section 4).

For each chip (at the prior's 1/4 label resolution) the engine's point estimator
optimises ``x`` (B, 5, h, w), initialised from the weak labels, under the label DDPM prior
and ``log c = MI(p(x), z) - KL(weak || avg p(x))`` (eq. 15) with ``w = k / steps``.
The paper's land-cover row: 200 steps, t ~430 -> 1, Adam lr 5e-3 with betas (0, 0.999),
lr decaying linearly 1 -> 1e-3. Chips are processed in batches of independent problems.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landprior.diffusion.denoiser import Denoiser
from landprior.diffusion.schedule import NoiseSchedule
from landprior.engine.constraints import paper_weight
from landprior.engine.pnp import PnPStep, infer_point, linear_lr
from landprior.engine.schedules import paper_schedule
from landprior.landcover.constraint import (
    KL_DIRECTIONS,
    LandCoverConstraint,
    onehot_to_probs,
    probs_to_x,
)

log = logging.getLogger(__name__)

InitName = Literal["weak", "weak_argmax"]
INIT_NAMES: tuple[str, ...] = get_args(InitName)


@dataclass(frozen=True)
class PseudoLabelConfig:
    """Settings of the land-cover inference (defaults: the paper's row, PAPER_NOTES)."""

    steps: int = 200
    t_schedule: str = "landcover"
    lr: float = 5e-3
    beta1: float = 0.0
    beta2: float = 0.999
    lr_end: float = 1e-3
    constraint_weight: float = 1.0
    mi_weight: float = 1.0
    kl_weight: float = 1.0
    mi_radius: int = 15
    kl_radius: int = 15
    sigma_start: float = 0.2
    sigma_end: float = 0.02
    batch_size: int = 32
    seed: int = 0
    init: str = "weak"
    kl_direction: str = "forward"

    def __post_init__(self) -> None:
        if self.kl_direction not in KL_DIRECTIONS:
            raise ValueError(
                f"unknown KL direction {self.kl_direction!r}; expected one of {KL_DIRECTIONS}"
            )
        if self.init not in INIT_NAMES:
            raise ValueError(f"unknown init {self.init!r}; expected one of {INIT_NAMES}")
        if self.steps < 1:
            raise ValueError(f"pseudolabel steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"pseudolabel batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"pseudolabel lr must be > 0, got {self.lr}")


def _check_inputs(weak: Tensor, clusters: Tensor, num_classes: int | None) -> None:
    if weak.dim() != 4 or clusters.dim() != 4:
        raise ValueError(
            f"weak labels and clusters must be (N, C, h, w); got {tuple(weak.shape)} and "
            f"{tuple(clusters.shape)}"
        )
    if weak.shape[0] == 0:
        raise ValueError("no chips to pseudo-label")
    if weak.shape[0] != clusters.shape[0] or weak.shape[-2:] != clusters.shape[-2:]:
        raise ValueError(
            f"weak labels {tuple(weak.shape)} and clusters {tuple(clusters.shape)} must cover "
            "the same chips on the same grid"
        )
    if num_classes is not None and weak.shape[1] != num_classes:
        raise ValueError(
            f"the prior models {num_classes} classes but the weak labels have {weak.shape[1]}"
        )
    for name, value in (("weak labels", weak), ("clusters", clusters)):
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} contain NaN or inf")


def _initial_x(weak: Tensor, init: str) -> Tensor:
    """x at the start: ``2 q - 1`` of the weak labels q ("weak", the paper), or the one-hot
    of their argmax ("weak_argmax": on the prior's data manifold from the first step)."""
    if init == "weak_argmax":
        onehot = torch.nn.functional.one_hot(weak.argmax(dim=1), weak.shape[1])
        return probs_to_x(onehot.permute(0, 3, 1, 2).to(weak.dtype))
    return probs_to_x(weak)


def pseudolabel_chips(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    weak: Tensor,
    clusters: Tensor,
    config: PseudoLabelConfig = PseudoLabelConfig(),
    *,
    num_classes: int | None = None,
    callback: Callable[[int, PnPStep], None] | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Infer pseudo-labels for chips.

    Args:
        weak: (N, L, h, w) weak-label distributions at the prior's resolution.
        clusters: (N, K, h, w) local colour-cluster responsibilities on the same grid.
        num_classes: the prior's class count, checked against the weak labels.
        callback: ``callback(batch_index, step)`` after every engine step.
        device: where the chips are optimised (default: the denoiser's device). The noise
            is drawn on the CPU from the same seeded generators on every device, so a GPU
            run follows the CPU run's random stream.

    Returns:
        labels (N, h, w) uint8 (argmax) and probabilities (N, L, h, w) float32 (the final
        sigma's p(x), section 4).
    """
    _check_inputs(weak, clusters, num_classes)
    weak = weak.float()
    weak = weak / weak.sum(dim=1, keepdim=True).clamp_min(1e-8)
    clusters = clusters.float()
    t_schedule = paper_schedule(
        config.t_schedule, steps=config.steps, num_timesteps=schedule.num_timesteps
    )
    if device is None:  # the denoiser's device; a plain function runs on the CPU
        first = next(denoiser.parameters(), None) if isinstance(denoiser, nn.Module) else None
        device = first.device if first is not None else "cpu"
    device = torch.device(device)
    n = weak.shape[0]
    starts = list(range(0, n, config.batch_size))
    labels = torch.empty(n, *weak.shape[-2:], dtype=torch.uint8)
    probs = torch.empty(weak.shape, dtype=torch.float32)
    for b, start in enumerate(tqdm(starts, desc="pseudo-label", disable=not progress)):
        stop = min(start + config.batch_size, n)
        weak_batch = weak[start:stop].to(device)
        constraint = LandCoverConstraint(
            clusters=clusters[start:stop].to(device),
            weak_labels=weak_batch,
            mi_radius=config.mi_radius,
            kl_radius=config.kl_radius,
            sigma_start=config.sigma_start,
            sigma_end=config.sigma_end,
            mi_weight=config.mi_weight,
            kl_weight=config.kl_weight,
            kl_direction=config.kl_direction,
        )
        generator = torch.Generator().manual_seed(config.seed * 100_003 + b)
        step_cb = None if callback is None else (lambda step, b=b: callback(b, step))
        x = infer_point(
            denoiser,
            constraint,
            _initial_x(weak_batch, config.init),
            schedule,
            t_schedule=t_schedule,
            optimizer="adam",
            lr=config.lr,
            optimizer_kwargs={"betas": (config.beta1, config.beta2)},
            lr_schedule=linear_lr(config.lr_end),
            weight=paper_weight(config.constraint_weight),
            generator=generator,
            callback=step_cb,
        )
        p = onehot_to_probs(x.detach(), config.sigma_end).cpu()
        probs[start:stop] = p
        labels[start:stop] = p.argmax(dim=1).to(torch.uint8)
        log.debug("pseudo-labelled chips %d..%d of %d", start, stop, n)
    return labels, probs


def agreement(labels: np.ndarray, truth: np.ndarray, ignore_index: int = 255) -> float:
    """Fraction of non-ignored pixels where ``labels == truth`` (a quick quality figure)."""
    keep = truth != ignore_index
    return float((labels[keep] == truth[keep]).mean()) if keep.any() else float("nan")
