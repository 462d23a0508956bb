"""The land-cover constraint of Graikos et al. (2022), section 4, eq. 15.

``log c(x) = MI(p(x), z) - KL(weak || avg p(x))`` where

* ``x`` (B, L, H, W) is the diffusion variable: one-hot labels scaled to [-1, 1]
  (``x = 2 * onehot - 1``, the prior's training scale);
* ``p(x)`` turns x into per-pixel class probabilities: with ``u = (x + 1) / 2``,
  ``p_l ~ Phi((1.5 - u_l) / sigma) - Phi((0.5 - u_l) / sigma)`` (the mass of
  N(u_l, sigma^2) in [0.5, 1.5]), renormalised over classes; sigma is annealed
  0.2 -> 0.02 over inference (PAPER_NOTES);
* ``z`` (B, K, H, W) are local colour-cluster responsibilities;
* MI is the mutual information of the local joint ``p(l, c)`` = window average of
  ``p_l z_c`` over fully overlapping windows (31x31 at the 1/4 label resolution),
  normalised by ``H(L) + H(C)`` and averaged over pixels;
* KL compares the weak-label distribution ``q`` (B, L, H, W) with the window average of
  ``p`` per pixel (the authors' code; the paper text says non-overlapping blocks).

Both terms are averaged over pixels, so log c is O(1) whatever the chip size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from landprior.landcover.boxfilter import box_mean

_EPS = 1e-8


def log_band_mass(u: Tensor, sigma: float) -> Tensor:
    """``log(Phi((1.5 - u) / sigma) - Phi((0.5 - u) / sigma))``, stable for any u.

    The mass of N(u, sigma^2) in [0.5, 1.5]. Computed as ``log Phi(hi) + log(1 - Phi(lo) /
    Phi(hi))`` on the side of the band where both normal tails are small (reflected when u
    is below the band), so it neither underflows to log 0 nor loses its gradient far from
    the band: with sigma = 0.02 a direct difference of the two CDFs is exactly 0 in float32
    once u is ~0.11 or more outside [0.5, 1.5].
    """
    a = (0.5 - u) / sigma
    b = (1.5 - u) / sigma
    below = a > 0  # u under the band: reflect, Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    hi = torch.where(below, -a, b)
    lo = torch.where(below, -b, a)
    log_hi = torch.special.log_ndtr(hi)
    ratio = (torch.special.log_ndtr(lo) - log_hi).clamp_max(-1e-12)
    return log_hi + torch.log(-torch.expm1(ratio))


def onehot_to_probs(x: Tensor, sigma: float) -> Tensor:
    """Per-pixel class probabilities (B, L, H, W) from x in the [-1, 1] one-hot scale.

    ``p_l`` proportional to the mass of N(u_l, sigma^2) in [0.5, 1.5], ``u = (x + 1) / 2``
    (section 4), normalised in log space (:func:`log_band_mass`): a pixel whose every
    class lies far from the band still gets the class nearest to it, and a gradient,
    instead of a uniform 1/L whose argmax would fall on class 0.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    u = (x + 1.0) / 2.0
    return torch.softmax(log_band_mass(u, sigma), dim=1)


def local_mutual_information(p: Tensor, z: Tensor, radius: int) -> Tensor:
    """Normalised local MI per pixel, (B, H, W).

    Joint ``P(l, c)`` = box mean over (2r+1)^2 windows of ``p_l z_c``;
    ``MI = sum P log(P / (P_l P_c))`` divided by ``H(L) + H(C)``.
    """
    b, n_l, h, w = p.shape
    n_c = z.shape[1]
    joint = box_mean((p[:, :, None] * z[:, None, :]).reshape(b, n_l * n_c, h, w), radius)
    joint = joint.reshape(b, n_l, n_c, h, w).clamp_min(_EPS)
    joint = joint / joint.sum(dim=(1, 2), keepdim=True)
    p_l = joint.sum(dim=2)
    p_c = joint.sum(dim=1)
    h_l = -(p_l * p_l.log()).sum(dim=1)
    h_c = -(p_c * p_c.log()).sum(dim=1)
    h_lc = -(joint * joint.log()).sum(dim=(1, 2))
    mi = h_l + h_c - h_lc
    return mi / (h_l + h_c).clamp_min(_EPS)


KL_DIRECTIONS = ("forward", "reverse", "symmetric")


def kl_to_weak_labels(q: Tensor, p: Tensor, radius: int, direction: str = "forward") -> Tensor:
    """KL between the weak labels q and ``p_bar = box_mean(p)`` per pixel, (B, H, W).

    ``forward``: ``KL(q || p_bar)`` (eq. 15; mass-covering: p must cover every class q has,
    extra classes cost little); ``reverse``: ``KL(p_bar || q)`` (mode-seeking: classes the
    weak labels rule out are penalised); ``symmetric``: the mean of both.
    """
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"unknown KL direction {direction!r}; expected one of {KL_DIRECTIONS}")
    p_bar = box_mean(p, radius).clamp_min(_EPS)
    q = q.clamp_min(0.0)
    log_q, log_p = q.clamp_min(_EPS).log(), p_bar.log()
    if direction == "forward":
        return (q * (log_q - log_p)).sum(dim=1)
    if direction == "reverse":
        return (p_bar * (log_p - log_q)).sum(dim=1)
    return 0.5 * ((q - p_bar) * (log_q - log_p)).sum(dim=1)  # (KL(q||p) + KL(p||q)) / 2


@dataclass
class LandCoverConstraint:
    """``log c(x) = mi_weight * MI - kl_weight * KL`` (paper eq. 15), per chip, shape (B,).

    Follows the engine's Constraint protocol: ``constraint(x, progress)`` with progress in
    [0, 1] annealing sigma geometrically from ``sigma_start`` to ``sigma_end``.

    Args:
        clusters: (B, K, H, W) colour-cluster responsibilities (each pixel sums to 1).
        weak_labels: (B, L, H, W) weak-label distributions (each pixel sums to 1).
        mi_radius, kl_radius: window radii (15 -> the paper's 31x31 windows).
        kl_direction: "forward" (the paper), "reverse" or "symmetric"; see
            :func:`kl_to_weak_labels`.
    """

    clusters: Tensor
    weak_labels: Tensor
    mi_radius: int = 15
    kl_radius: int = 15
    sigma_start: float = 0.2
    sigma_end: float = 0.02
    mi_weight: float = 1.0
    kl_weight: float = 1.0
    kl_direction: str = "forward"

    def __post_init__(self) -> None:
        if self.kl_direction not in KL_DIRECTIONS:
            raise ValueError(
                f"unknown KL direction {self.kl_direction!r}; expected one of {KL_DIRECTIONS}"
            )
        for name in ("clusters", "weak_labels"):
            value = getattr(self, name)
            if value.dim() != 4:
                raise ValueError(f"{name} must be (B, C, H, W), got shape {tuple(value.shape)}")
            if not torch.isfinite(value).all():
                raise ValueError(f"{name} contains NaN or inf")
        if self.clusters.shape[0] != self.weak_labels.shape[0] or (
            self.clusters.shape[-2:] != self.weak_labels.shape[-2:]
        ):
            raise ValueError(
                f"clusters {tuple(self.clusters.shape)} and weak_labels "
                f"{tuple(self.weak_labels.shape)} must share batch size and grid"
            )
        if self.sigma_start <= 0 or self.sigma_end <= 0:
            raise ValueError("sigma_start and sigma_end must be > 0")

    def sigma(self, progress: float) -> float:
        """Geometric anneal sigma_start -> sigma_end as progress goes 0 -> 1."""
        progress = min(max(float(progress), 0.0), 1.0)
        return self.sigma_start * (self.sigma_end / self.sigma_start) ** progress

    def terms(self, x: Tensor, progress: float = 0.0) -> dict[str, Tensor]:
        """MI and KL per chip (B,), for logging and tests."""
        if x.dim() != 4 or x.shape[0] != self.weak_labels.shape[0]:
            raise ValueError(
                f"x must be (B, L, H, W) with B = {self.weak_labels.shape[0]}, "
                f"got {tuple(x.shape)}"
            )
        if x.shape[1] != self.weak_labels.shape[1]:
            raise ValueError(
                f"x has {x.shape[1]} classes but the weak labels have "
                f"{self.weak_labels.shape[1]}; the prior and the class table disagree"
            )
        if x.shape[-2:] != self.weak_labels.shape[-2:]:
            raise ValueError(
                f"x grid {tuple(x.shape[-2:])} != weak-label grid "
                f"{tuple(self.weak_labels.shape[-2:])}"
            )
        z = self.clusters.to(dtype=x.dtype, device=x.device)
        q = self.weak_labels.to(dtype=x.dtype, device=x.device)
        p = onehot_to_probs(x, self.sigma(progress))
        mi = local_mutual_information(p, z, self.mi_radius).mean(dim=(1, 2))
        kl = kl_to_weak_labels(q, p, self.kl_radius, self.kl_direction).mean(dim=(1, 2))
        return {"mi": mi, "kl": kl}

    def __call__(self, x: Tensor, progress: float = 0.0) -> Tensor:
        terms = self.terms(x, progress)
        return self.mi_weight * terms["mi"] - self.kl_weight * terms["kl"]


def probs_to_x(probs: Tensor) -> Tensor:
    """Initialise x from probabilities (e.g. weak labels): ``2 p - 1`` in the prior's scale."""
    return 2.0 * probs - 1.0


def x_to_labels(x: Tensor) -> Tensor:
    """Hard labels (B, H, W) from x: argmax over classes."""
    return x.argmax(dim=1)
