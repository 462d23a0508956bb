"""The one denoiser contract of the engine (k-diffusion ``external.py`` style).

Every task hands the engine an eps-predictor ``(x_t, t) -> eps`` with ``x_t`` of shape
(B, C, H, W) (or any (B, ...)) and ``t`` a long tensor of shape (B,) in ``{1..T}``.
Networks with other conventions are wrapped once, here.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class Denoiser(Protocol):
    """eps_theta(x_t, t): same shape as ``x_t``; ``t`` in ``{1..T}``, shape (B,)."""

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor: ...


class EpsDenoiser(nn.Module):
    """Adapt a guided-diffusion-layout network to the :class:`Denoiser` contract.

    * shifts ``t`` (1-based, as in the papers) to the network's 0-based timestep index;
    * for learned-sigma networks (``2 C`` output channels: eps, then the variance
      interpolation ``v``), returns only eps.
    """

    def __init__(self, net: nn.Module, *, learn_sigma: bool | None = None) -> None:
        super().__init__()
        self.net = net
        if learn_sigma is None:
            learn_sigma = bool(getattr(net, "learn_sigma", False))
        self.learn_sigma = learn_sigma

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        if t.dim() == 0:
            t = t.expand(x_t.shape[0])
        out = self.net(x_t, t.to(x_t.device) - 1)
        if self.learn_sigma:
            out = out[:, : x_t.shape[1]]
        if out.shape != x_t.shape:
            raise ValueError(
                f"denoiser returned shape {tuple(out.shape)} for input {tuple(x_t.shape)}"
            )
        return out


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients: guided inference differentiates w.r.t. x only.

    Measured ~2x faster per guided step on CPU than leaving the weights in the graph.
    """
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def as_batch_t(t: int | Tensor, batch: int, device: torch.device | str | None = None) -> Tensor:
    """A (B,) long tensor of timesteps from an int or tensor."""
    t = torch.as_tensor(t, dtype=torch.long, device=device)
    if t.dim() == 0:
        t = t.expand(batch)
    return t
