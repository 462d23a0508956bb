import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landprior.diffusion.schedule import NoiseSchedule
from landprior.landcover.pseudolabel import PseudoLabelConfig, agreement, pseudolabel_chips


def zero_denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """eps_theta = 0: the diffusion term has no gradient w.r.t. x, isolating the constraint."""
    return torch.zeros_like(x_t)


def _scene(n: int = 4, size: int = 16, seed: int = 0):
    """Blocky truth; exact (unlabelled) colour clusters; coarse weak labels.

    The weak labels are the truth's class proportions in 9x9 windows: right at the scale
    of the KL window, but their argmax (a majority filter) misses small blocks. MI with
    the clusters supplies the fine structure, as in the paper's section 4.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 5, (n, size // 3 + 1, size // 3 + 1), generator=g)
    truth = coarse.repeat_interleave(3, 1).repeat_interleave(3, 2)[:, :size, :size]
    onehot = F.one_hot(truth, 5).permute(0, 3, 1, 2).float()
    clusters = onehot[:, torch.randperm(5, generator=g)]
    weak = F.avg_pool2d(onehot, 9, stride=1, padding=4, count_include_pad=False)
    return truth, clusters, weak


def test_constraint_driven_pseudolabels_beat_the_weak_labels() -> None:
    truth, clusters, weak = _scene()
    cfg = PseudoLabelConfig(steps=60, lr=3e-2, mi_radius=3, kl_radius=4, batch_size=4)
    labels, probs = pseudolabel_chips(zero_denoiser, NoiseSchedule.linear(), weak, clusters, cfg)
    assert labels.shape == truth.shape and labels.dtype == torch.uint8
    assert probs.shape == weak.shape
    torch.testing.assert_close(probs.sum(1), torch.ones(truth.shape))
    weak_acc = agreement(weak.argmax(1).numpy(), truth.numpy())
    ours = agreement(labels.numpy(), truth.numpy())
    assert ours > weak_acc + 0.05, (ours, weak_acc)


def test_deterministic_under_a_seed() -> None:
    _, clusters, weak = _scene(n=3)
    cfg = PseudoLabelConfig(steps=10, batch_size=3)
    a, _ = pseudolabel_chips(zero_denoiser, NoiseSchedule.linear(), weak, clusters, cfg)
    b, _ = pseudolabel_chips(zero_denoiser, NoiseSchedule.linear(), weak, clusters, cfg)
    assert torch.equal(a, b)


def test_bad_inputs() -> None:
    _, clusters, weak = _scene(n=2)
    s = NoiseSchedule.linear()
    with pytest.raises(ValueError, match="same chips"):
        pseudolabel_chips(zero_denoiser, s, weak, clusters[:1])
    with pytest.raises(ValueError, match="prior models 6 classes"):
        pseudolabel_chips(zero_denoiser, s, weak, clusters, num_classes=6)
    with pytest.raises(ValueError, match="NaN"):
        pseudolabel_chips(zero_denoiser, s, weak * float("nan"), clusters)
    with pytest.raises(ValueError, match="no chips"):
        pseudolabel_chips(zero_denoiser, s, weak[:0], clusters[:0])
    with pytest.raises(ValueError, match="steps"):
        PseudoLabelConfig(steps=0)


def test_agreement_ignores_255() -> None:
    assert agreement(np.array([1, 2, 3]), np.array([1, 255, 0])) == pytest.approx(0.5)


def test_weak_argmax_initialisation_starts_on_the_one_hot_manifold() -> None:
    from landprior.landcover.pseudolabel import _initial_x

    _, _, weak = _scene(n=2)
    x = _initial_x(weak, "weak_argmax")
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(x.argmax(1), weak.argmax(1))
    torch.testing.assert_close(_initial_x(weak, "weak"), 2 * weak - 1)
    with pytest.raises(ValueError, match="weak_argmax"):
        PseudoLabelConfig(init="ones")
