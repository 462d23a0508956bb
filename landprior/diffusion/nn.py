"""Small building blocks of the guided-diffusion U-Net (Dhariwal & Nichol 2021).

Only layers that carry no parameters of their own, or whose parameter names must match the
released checkpoints exactly (``weight`` / ``bias`` of a GroupNorm), live here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in (at least) float32 and cast back to the input dtype.

    Keeps the statistics stable when the trunk runs in half precision. Parameters are the
    usual ``weight`` and ``bias`` of shape (C,), as in the released checkpoints.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return super().forward(x.float()).to(x.dtype)
        return super().forward(x)


def group_norm(channels: int, groups: int = 32) -> GroupNorm32:
    """The U-Net's normalisation layer: ``groups`` groups over ``channels`` channels."""
    if channels % groups != 0:
        raise ValueError(
            f"GroupNorm needs channels divisible by the group count: got {channels} channels "
            f"and {groups} groups"
        )
    return GroupNorm32(groups, channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero (residual branches start as identity)."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


def redraw_zero_init(module: nn.Module) -> nn.Module:
    """Re-draw (torch's default init) every conv / linear layer that :func:`zero_init` left
    at zero: an untrained network whose output and gradients depend on its input, as a
    trained one's do (benchmarks and device-parity tests of untrained nets)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Linear) and not layer.weight.detach().any():
            layer.reset_parameters()
    return module


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps.

    Transformer-style position encoding as used by Ho et al. and guided-diffusion:
    ``[cos(t w_0) .. cos(t w_{h-1}), sin(t w_0) .. sin(t w_{h-1})]`` with
    ``w_i = max_period^(-i/h)``, ``h = dim // 2`` (cosines first, zero-padded if ``dim`` is odd).

    Args:
        timesteps: shape (B,), the network's 0-based timestep index.
        dim: embedding width.

    Returns:
        float32 tensor of shape (B, dim).
    """
    if timesteps.dim() != 1:
        raise ValueError(f"timesteps must have shape (B,), got {tuple(timesteps.shape)}")
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    freqs = torch.exp(-math.log(max_period) * exponent)
    angles = timesteps.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2 == 1:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], 1)], dim=1)
    return emb


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of ``module`` (works on the meta device too)."""
    return sum(p.numel() for p in module.parameters())
