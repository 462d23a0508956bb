"""A = S + S^T with S = row-softmax(L / tau), diagonal masked (paper section 5)."""

from __future__ import annotations

import pytest
import torch

from landprior.tasks.tsp.adjacency import adjacency_from_logits, init_logits, tour_adjacency


def test_symmetric_zero_diagonal_row_stochastic_s() -> None:
    logits = init_logits(4, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = adjacency_from_logits(logits, tau=10.0)
    assert a.shape == (4, 9, 9)
    torch.testing.assert_close(a, a.transpose(1, 2))
    assert (torch.diagonal(a, dim1=1, dim2=2) == 0).all()
    # rows of S sum to 1, so A has total mass 2n and entries in [0, 2]
    torch.testing.assert_close(a.sum((1, 2)), torch.full((4,), 18.0, dtype=torch.float64))
    assert a.min() >= 0 and a.max() <= 2
    # tau = 10 keeps N(0, 1) logits near uniform: S_ij ~ 1 / (n - 1)
    off_diagonal = ~torch.eye(9, dtype=torch.bool)
    assert (a[:, off_diagonal] - 2 / 8).abs().max() < 0.1


def test_unbatched_tau_and_gradient() -> None:
    logits = torch.randn(6, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    sharp = adjacency_from_logits(logits, tau=0.01)
    assert sharp.shape == (6, 6)
    # at a low temperature every row of S picks its largest off-diagonal logit
    masked = logits.detach().masked_fill(torch.eye(6, dtype=torch.bool), float("-inf"))
    best = masked.argmax(1)
    s = 0.5 * sharp.detach()
    assert (s[torch.arange(6), best] >= 0.49).all()
    adjacency_from_logits(logits).sum().backward()
    assert logits.grad is not None
    with pytest.raises(ValueError, match="tau"):
        adjacency_from_logits(logits, tau=0)
    with pytest.raises(ValueError, match="logits must be"):
        adjacency_from_logits(torch.zeros(2, 3, 4))


def test_init_logits_seeded() -> None:
    a = init_logits(2, 5, generator=torch.Generator().manual_seed(3))
    b = init_logits(2, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert a.shape == (2, 5, 5) and a.dtype == torch.float32
    with pytest.raises(ValueError, match="batch"):
        init_logits(0, 5)


def test_tour_adjacency() -> None:
    a = tour_adjacency(torch.tensor([[0, 2, 1, 3]]))
    expected = torch.zeros(4, 4)
    for u, v in ((0, 2), (2, 1), (1, 3), (3, 0)):
        expected[u, v] = expected[v, u] = 1
    torch.testing.assert_close(a[0], expected)
