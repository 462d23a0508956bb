import pytest
import torch

from landprior.landcover.constraint import (
    LandCoverConstraint,
    kl_to_weak_labels,
    local_mutual_information,
    onehot_to_probs,
    probs_to_x,
)


def _rand_simplex(g: torch.Generator, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.softmax(3 * torch.randn(*shape, generator=g, dtype=dtype), dim=1)


def test_onehot_to_probs_recovers_the_one_hot() -> None:
    labels = torch.tensor([[[0, 1], [4, 2]]])
    x = probs_to_x(torch.nn.functional.one_hot(labels, 5).permute(0, 3, 1, 2).double())
    p = onehot_to_probs(x, sigma=0.1)
    torch.testing.assert_close(p.sum(1), torch.ones(1, 2, 2, dtype=torch.float64))
    assert torch.equal(p.argmax(1), labels)
    assert p.max() > 0.99


def test_mi_is_one_when_labels_equal_clusters_and_zero_when_independent() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (1, 16, 16), generator=g)
    onehot = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).double()
    mi_same = local_mutual_information(onehot, onehot, radius=15).mean()
    assert mi_same.item() > 0.45  # MI / (H(L) + H(C)) = H / 2H at best
    uniform = torch.full((1, 3, 16, 16), 1 / 3, dtype=torch.float64)
    assert local_mutual_information(onehot, uniform, radius=15).abs().max() < 1e-6


def test_kl_is_zero_for_matching_constant_maps() -> None:
    q = torch.full((2, 5, 8, 8), 0.2, dtype=torch.float64)
    assert kl_to_weak_labels(q, q.clone(), radius=3).abs().max() < 1e-9


def test_kl_directions_differ_on_classes_the_weak_labels_rule_out() -> None:
    """Weak labels say 'only class 0 or 1'; p adds class 4. Forward KL barely notices (q puts
    no mass on 4), reverse KL pays log(p / q) for it, symmetric is the mean."""
    q = torch.zeros(1, 5, 4, 4, dtype=torch.float64)
    q[:, 0], q[:, 1] = 0.5, 0.5
    q = (q + 1e-4) / (1 + 5e-4)
    p_cover = q.clone()
    p_extra = torch.zeros_like(q)
    p_extra[:, 0], p_extra[:, 1], p_extra[:, 4] = 0.45, 0.45, 0.1
    kl = {d: {name: kl_to_weak_labels(q, p, 0, d).mean().item()
              for name, p in (("cover", p_cover), ("extra", p_extra))}
          for d in ("forward", "reverse", "symmetric")}
    assert kl["forward"]["cover"] < 1e-9 and kl["reverse"]["cover"] < 1e-9
    assert kl["forward"]["extra"] < 0.15  # log(0.5 / 0.45) ~ 0.105
    assert kl["reverse"]["extra"] > 0.5  # 0.1 * log(0.1 / 2e-5) ~ 0.85
    assert kl["symmetric"]["extra"] == pytest.approx(
        0.5 * (kl["forward"]["extra"] + kl["reverse"]["extra"])
    )
    with pytest.raises(ValueError, match="KL direction"):
        kl_to_weak_labels(q, p_cover, 0, "sideways")
    with pytest.raises(ValueError, match="KL direction"):
        LandCoverConstraint(clusters=q, weak_labels=q, kl_direction="sideways")


def test_constraint_prefers_labels_that_follow_clusters_and_weak_labels() -> None:
    g = torch.Generator().manual_seed(1)
    truth = torch.randint(0, 5, (2, 16, 16), generator=g)
    onehot = torch.nn.functional.one_hot(truth, 5).permute(0, 3, 1, 2).double()
    weak = 0.7 * onehot + 0.3 / 5
    c = LandCoverConstraint(clusters=onehot, weak_labels=weak, mi_radius=3, kl_radius=0)
    good = c(probs_to_x(onehot), progress=1.0)
    shuffled = probs_to_x(onehot[:, torch.randperm(5, generator=g)])
    bad = c(shuffled, progress=1.0)
    assert good.shape == (2,)
    assert torch.all(good > bad)


def test_gradients_match_finite_differences() -> None:
    g = torch.Generator().manual_seed(2)
    z = _rand_simplex(g, 1, 3, 6, 6)
    q = _rand_simplex(g, 1, 5, 6, 6)
    x = (0.5 * torch.randn(1, 5, 6, 6, generator=g, dtype=torch.float64)).requires_grad_()
    for direction in ("forward", "reverse", "symmetric"):
        c = LandCoverConstraint(clusters=z, weak_labels=q, mi_radius=2, kl_radius=1,
                                sigma_start=0.5, kl_direction=direction)
        assert torch.autograd.gradcheck(lambda v, c=c: c(v, 0.0), (x,), eps=1e-6, atol=1e-5)


def test_sigma_anneals_from_start_to_end() -> None:
    c = LandCoverConstraint(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    assert c.sigma(0.0) == pytest.approx(0.2)
    assert c.sigma(1.0) == pytest.approx(0.02)
    assert c.sigma(0.0) > c.sigma(0.5) > c.sigma(1.0)


def test_bad_inputs_are_named() -> None:
    z = torch.full((1, 5, 4, 4), 0.2)
    with pytest.raises(ValueError, match="NaN"):
        LandCoverConstraint(z, torch.full((1, 5, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="share batch size and grid"):
        LandCoverConstraint(z, torch.full((1, 5, 8, 8), 0.2))
    c = LandCoverConstraint(z, torch.full((1, 5, 4, 4), 0.2))
    with pytest.raises(ValueError, match="classes"):
        c(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="grid"):
        c(torch.zeros(1, 5, 8, 8))
