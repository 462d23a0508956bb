import pytest
import torch
import torch.nn.functional as F

from landprior.landcover.boxfilter import box_mean


@pytest.mark.parametrize("radius", [0, 1, 3, 7, 15])
def test_box_mean_equals_avg_pool_without_padding_counts(radius: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 17, generator=g, dtype=torch.float64)
    expected = F.avg_pool2d(
        x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False
    ) if radius <= 8 else None
    got = box_mean(x, radius)
    assert got.shape == x.shape
    if expected is not None:
        torch.testing.assert_close(got, expected)
    else:  # avg_pool2d limits padding to half the kernel and the image; check by brute force
        i, j = 5, 9
        window = x[..., max(0, i - radius) : i + radius + 1, max(0, j - radius) : j + radius + 1]
        torch.testing.assert_close(got[..., i, j], window.mean(dim=(-1, -2)))


def test_box_mean_rejects_negative_radius() -> None:
    with pytest.raises(ValueError, match="radius"):
        box_mean(torch.zeros(1, 1, 4, 4), -1)
