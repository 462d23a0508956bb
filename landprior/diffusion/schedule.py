"""Immutable DDPM noise schedules, precomputed once in float64 (Ho et al. 2020).

Timestep convention used everywhere in landprior: ``t`` is an integer in ``{1, ..., T}``
as in the papers (Graikos et al. 2022, eq. 1-2). ``abar(t) = prod_{s<=t} (1 - beta_s)``
is ``alphas_cumprod[t - 1]``. Networks in the guided-diffusion layout embed ``t - 1``;
that shift lives in one adapter (:class:`landprior.diffusion.denoiser.EpsDenoiser`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

ScheduleName = Literal["linear", "cosine"]
SCHEDULE_NAMES: tuple[str, ...] = get_args(ScheduleName)


def _linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def _cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal (2021) eq. 17: abar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2)."""
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1.0 - f[1:] / f[:-1]
    return np.clip(betas, 0.0, max_beta)


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A fixed variance schedule ``beta_1 .. beta_T`` and everything derived from it.

    All arrays are float64 numpy arrays of shape ``(T,)`` indexed by ``t - 1``.
    Torch-side helpers gather them per batch element and cast to the input's dtype.
    """

    betas: np.ndarray
    name: str = "custom"
    alphas_cumprod: np.ndarray = field(init=False, repr=False)
    alphas_cumprod_prev: np.ndarray = field(init=False, repr=False)
    posterior_variance: np.ndarray = field(init=False, repr=False)
    posterior_log_variance_clipped: np.ndarray = field(init=False, repr=False)
    posterior_mean_coef1: np.ndarray = field(init=False, repr=False)
    posterior_mean_coef2: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0:
            raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
        if not np.all((betas > 0) & (betas < 1)):
            raise ValueError("every beta must lie in (0, 1)")
        abar = np.cumprod(1.0 - betas)
        abar_prev = np.append(1.0, abar[:-1])
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        # q(x_{t-1} | x_t, x_0) has zero variance at t = 1; clip the log as guided-diffusion.
        post_logvar = np.log(np.append(post_var[1], post_var[1:])) if betas.size > 1 else np.log(
            np.maximum(post_var, 1e-20)
        )
        coef1 = betas * np.sqrt(abar_prev) / (1.0 - abar)
        coef2 = (1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar)
        for name, value in (
            ("betas", betas),
            ("alphas_cumprod", abar),
            ("alphas_cumprod_prev", abar_prev),
            ("posterior_variance", post_var),
            ("posterior_log_variance_clipped", post_logvar),
            ("posterior_mean_coef1", coef1),
            ("posterior_mean_coef2", coef2),
        ):
            value = np.array(value, dtype=np.float64)
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        # float64 torch copies, made once; gathered per batch and cast on use.
        object.__setattr__(self, "_tables", {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def linear(
        cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2
    ) -> NoiseSchedule:
        """Ho et al. linear betas (1e-4 .. 2e-2 for T = 1000, as the paper's priors)."""
        return cls(_linear_betas(num_timesteps, beta_start, beta_end), name="linear")

    @classmethod
    def cosine(cls, num_timesteps: int = 1000) -> NoiseSchedule:
        """Nichol & Dhariwal cosine schedule."""
        return cls(_cosine_betas(num_timesteps), name="cosine")

    @classmethod
    def from_name(cls, name: str, num_timesteps: int = 1000) -> NoiseSchedule:
        """Build a named schedule; a wrong name lists the allowed ones."""
        if name == "linear":
            # Rescale so that T != 1000 keeps the same overall noise level (guided-diffusion).
            scale = 1000 / num_timesteps
            return cls.linear(num_timesteps, 1e-4 * scale, 2e-2 * scale)
        if name == "cosine":
            return cls.cosine(num_timesteps)
        raise ValueError(f"unknown noise schedule {name!r}; expected one of {SCHEDULE_NAMES}")

    # ------------------------------------------------------------------ basic facts
    @property
    def num_timesteps(self) -> int:
        """Number of diffusion steps T."""
        return int(self.betas.size)

    def check_t(self, t: Tensor | int) -> Tensor:
        """Return ``t`` as a long tensor, raising if any value is outside ``[1, T]``."""
        t = torch.as_tensor(t)
        if t.is_floating_point():
            if not torch.all(t == t.round()):
                raise ValueError(f"timesteps must be integers in [1, {self.num_timesteps}]")
            t = t.long()
        if t.numel() and (int(t.min()) < 1 or int(t.max()) > self.num_timesteps):
            raise ValueError(
                f"timestep out of range: got values in [{int(t.min())}, {int(t.max())}], "
                f"expected integers in [1, {self.num_timesteps}]"
            )
        return t.long()

    def _gather(self, array: np.ndarray, t: Tensor, like: Tensor) -> Tensor:
        """array[t - 1] broadcast to ``like``'s rank, on its device and dtype."""
        t = self.check_t(t).to("cpu")
        key = id(array)
        table = self._tables.get(key)
        if table is None:
            table = torch.tensor(array, dtype=torch.float64)
            self._tables[key] = table
        values = table[t.reshape(-1) - 1]
        values = values.to(device=like.device, dtype=like.dtype)
        if t.dim() == 0:
            values = values.reshape(())
        return values.reshape(values.shape + (1,) * (like.dim() - values.dim()))

    def abar(self, t: Tensor | int, like: Tensor) -> Tensor:
        """``abar_t`` per batch element, shaped to broadcast against ``like`` (B, ...)."""
        return self._gather(self.alphas_cumprod, t, like)

    # ------------------------------------------------------------------ forward process
    def q_sample(self, x0: Tensor, t: Tensor | int, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (paper eq. 2)."""
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        a = self.abar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def predict_x0(self, x_t: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
        """Tweedie / eps -> x0: x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        a = self.abar(t, x_t)
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()

    def predict_eps(self, x_t: Tensor, t: Tensor | int, x0: Tensor) -> Tensor:
        """x0 -> eps: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
        a = self.abar(t, x_t)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    def posterior_mean_variance(
        self, x0: Tensor, x_t: Tensor, t: Tensor | int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x0)."""
        mean = self._gather(self.posterior_mean_coef1, t, x_t) * x0 + self._gather(
            self.posterior_mean_coef2, t, x_t
        ) * x_t
        var = self._gather(self.posterior_variance, t, x_t)
        logvar = self._gather(self.posterior_log_variance_clipped, t, x_t)
        return mean, var, logvar

    def sigma_ve(self, t: Tensor | int, like: Tensor) -> Tensor:
        """Noise level in the variance-exploding scale: sigma_t^2 = (1 - abar_t) / abar_t."""
        a = self.abar(t, like)
        return ((1 - a) / a).sqrt()
