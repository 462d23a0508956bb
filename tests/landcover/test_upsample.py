"""Guided (joint bilateral) upsampling of coarse class probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landprior.landcover.segmenter import SegmenterConfig, iter_strip_predictions
from landprior.landcover.upsample import guided_upsample, upsample_probabilities

FACTOR = 4


def _edge_scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 16 x 16 image, dark left of column 6 and bright from it, and coarse probabilities.

    The edge runs through the middle of the second 4-pixel cell; the coarse model (as a
    model at x1/4 would) gives that mixed cell 0.6 / 0.4.
    """
    image = torch.full((1, 4, 16, 16), 0.9)
    image[..., :6] = 0.1
    truth = (torch.arange(16) >= 6).long().expand(16, 16)
    p_dark = torch.tensor([1.0, 0.6, 0.0, 0.0]).expand(4, 4)  # per coarse column
    probs = torch.stack([p_dark, 1 - p_dark])[None]  # (1, 2, 4, 4)
    return probs, image, truth


def test_guided_upsampling_follows_the_image_edge_bilinear_does_not() -> None:
    probs, image, truth = _edge_scene()
    guided = guided_upsample(probs, image, FACTOR)
    bilinear = upsample_probabilities(probs, image, FACTOR, "bilinear")
    assert guided.shape == bilinear.shape == (1, 2, 16, 16)
    assert torch.equal(guided[0].argmax(0), truth)
    assert not torch.equal(bilinear[0].argmax(0), truth)  # the mixed cell goes one way


def test_outputs_stay_distributions_and_constants_stay_constant() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=g)
    probs = torch.softmax(logits, 1)
    guide = torch.rand(2, 3, 24, 28, generator=g)
    out = guided_upsample(probs, guide, FACTOR, sigma_range=0.1)
    assert out.shape == (2, 5, 24, 28)
    assert (out >= 0).all()
    torch.testing.assert_close(out.sum(1), torch.ones(2, 24, 28))
    flat = torch.full((1, 5, 6, 7), 0.2)
    torch.testing.assert_close(guided_upsample(flat, guide[:1], FACTOR), torch.full(
        (1, 5, 24, 28), 0.2))  # fmt: skip
    # every pixel is a convex combination of its 3 x 3 coarse neighbours
    lo = -torch.nn.functional.max_pool2d(-probs, 3, 1, 1)
    hi = torch.nn.functional.max_pool2d(probs, 3, 1, 1)
    up = lambda t: t.repeat_interleave(FACTOR, -2).repeat_interleave(FACTOR, -1)  # noqa: E731
    assert (out >= up(lo) - 1e-6).all() and (out <= up(hi) + 1e-6).all()
    assert guided_upsample(probs, guide[..., :6, :7], 1) is probs


def test_bad_inputs_are_named() -> None:
    probs, image, _ = _edge_scene()
    with pytest.raises(ValueError, match=r"guide grid \(16, 16\) is not the probability grid"):
        guided_upsample(probs, image, 2)
    with pytest.raises(ValueError, match="same B"):
        guided_upsample(probs, image.expand(2, -1, -1, -1), FACTOR)
    with pytest.raises(ValueError, match="sigma_range and sigma_space must be > 0"):
        guided_upsample(probs, image, FACTOR, sigma_range=0.0)
    with pytest.raises(ValueError, match="unknown upsampling 'nearest'"):
        upsample_probabilities(probs, image, FACTOR, "nearest")  # type: ignore[arg-type]


def test_strip_prediction_checks_its_upsampling_settings() -> None:
    model = SegmenterConfig(in_channels=4, base_channels=4, depth=1).build().eval()

    def read(r: int, c: int, h: int, w: int) -> np.ndarray:
        return np.zeros((4, h, w), np.float32)

    with pytest.raises(ValueError, match="unknown upsampling 'cubic'"):
        next(iter_strip_predictions(model, read, 32, 32, window=8, overlap=2, downsample=4,
                                    upsample="cubic"))  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(ValueError, match=r"guide_bands must be in 1\.\.4"):
        next(iter_strip_predictions(model, read, 32, 32, window=8, overlap=2, downsample=4,
                                    guide_bands=5))  # fmt: skip
    strips = list(iter_strip_predictions(model, read, 32, 32, window=8, overlap=2, downsample=4))
    assert sum(s.shape[1] for _, s in strips) == 32
