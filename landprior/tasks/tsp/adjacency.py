"""The latent adjacency of paper section 5: A = S + S^T with S = row-softmax(L / tau).

The diffusion prior works on images x = f(A) (see :mod:`landprior.tasks.tsp.render`), and
inference optimises the unconstrained logits L (the engine's latent variant, x = f(y)).
The diagonal of S is masked (a city is not its own neighbour), so every row of S sums to 1
and A is symmetric with a zero diagonal; for a tour, S puts 1/2 on each of the two
neighbours and A is the tour's 0/1 adjacency matrix.

The authors write S = softmax(-0.1 L), i.e. tau = 10 with the opposite sign. Under the
symmetric N(0, 1) initialisation and gradient-based optimisation of L the sign is only a
relabelling (L -> -L), so the plain ``softmax(L / tau)`` is used here.
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_TAU = 10.0


def init_logits(
    batch: int,
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Initial logits L ~ N(0, 1) of shape (batch, n, n) (paper section 5)."""
    if batch < 1 or n < 2:
        raise ValueError(f"need batch >= 1 and n >= 2, got batch={batch}, n={n}")
    return torch.randn(batch, n, n, generator=generator, dtype=dtype, device=device)


def adjacency_from_logits(logits: Tensor, tau: float = DEFAULT_TAU) -> Tensor:
    """A = S + S^T, S = softmax over rows of ``L / tau`` with the diagonal masked.

    Args:
        logits: (B, n, n) or (n, n) real logits L.
        tau: softmax temperature (authors: 10).

    Returns:
        A of the same shape: symmetric, zero diagonal, entries in [0, 2]; differentiable.
    """
    if logits.ndim not in (2, 3) or logits.shape[-1] != logits.shape[-2]:
        raise ValueError(f"logits must be (B, n, n) or (n, n), got {tuple(logits.shape)}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    n = logits.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    masked = (logits / tau).masked_fill(eye, float("-inf"))
    s = torch.softmax(masked, dim=-1)
    return s + s.transpose(-1, -2)


def tour_adjacency(tours: Tensor, n: int | None = None) -> Tensor:
    """0/1 adjacency (B, n, n) float32 of closed tours (B, n) (long): A_ij = 1 on tour edges."""
    if tours.ndim != 2:
        raise ValueError(f"tours must be (B, n), got {tuple(tours.shape)}")
    b, m = tours.shape
    n = m if n is None else n
    a = torch.zeros(b, n, n, dtype=torch.float32, device=tours.device)
    rows = torch.arange(b, device=tours.device)[:, None].expand(b, m)
    nxt = tours.roll(-1, dims=1)
    a[rows, tours, nxt] = 1.0
    a[rows, nxt, tours] = 1.0
    return a
