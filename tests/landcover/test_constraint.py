import math

import pytest
import torch

from landprior.landcover.constraint import (
    LandCoverConstraint,
    kl_to_weak_labels,
    local_mutual_information,
    log_band_mass,
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


@pytest.mark.parametrize("sigma", [0.2, 0.05, 0.02])
def test_log_band_mass_is_the_log_of_the_normal_mass_and_never_underflows(sigma: float) -> None:
    u = torch.linspace(-3.0, 4.0, 7001, dtype=torch.float64)
    cdf = lambda v: 0.5 * (1.0 + torch.erf(v / math.sqrt(2.0)))  # noqa: E731
    direct = cdf((1.5 - u) / sigma) - cdf((0.5 - u) / sigma)
    exact = direct > 1e-10  # where the plain difference of CDFs is still accurate
    log_mass = log_band_mass(u, sigma)
    torch.testing.assert_close(log_mass[exact], direct[exact].log(), rtol=0, atol=1e-5)
    assert torch.isfinite(log_mass).all()
    assert (log_mass[u < 0.5].diff() > 0).all() and (log_mass[u > 1.5].diff() < 0).all()
    log32 = log_band_mass(u.float(), sigma)
    assert torch.isfinite(log32).all()


def test_pixel_far_from_every_band_takes_the_nearest_class_not_class_0() -> None:
    # every class well under the band (x ~ -0.9), class 3 the least far: the old direct
    # formula gave all five masses 0 -> uniform p -> argmax water (class 0) and no gradient
    x = torch.full((1, 5, 1, 1), -0.9)
    x[0, 3] = -0.5
    p = onehot_to_probs(x, sigma=0.02)
    assert torch.isfinite(p).all() and p.argmax(1).item() == 3
    assert p[0, 3].item() == pytest.approx(1.0)
    x64 = x.double().requires_grad_(True)
    onehot_to_probs(x64, sigma=0.2)[0, 0].sum().backward()
    assert x64.grad[0, 0].item() > 0  # raising x_water raises p_water


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
