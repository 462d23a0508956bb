"""Local colour clustering (paper section 4, PAPER_NOTES) and the global baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from affine import Affine
from rasterio.transform import from_origin

from landprior.landcover import boxfilter
from landprior.landcover.clustering import (
    box_mean,
    cluster_geotiff,
    global_colour_clustering,
    local_colour_clustering,
    prepare_naip,
)
from tests.conftest import shared_data_path


def checkerboard(
    batch: int = 2, seed: int = 0, block: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 4, 64, 64) two-colour checkerboard with a little noise, and its (64, 64) colour map."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    cb = (((yy // block) + (xx // block)) % 2).float()
    img = torch.stack([0.2 + 0.5 * cb, 0.8 - 0.5 * cb, 0.3 + 0.2 * cb, 0.6 - 0.3 * cb])
    img = img.expand(batch, 4, 64, 64).clone()
    img += 0.02 * torch.randn(img.shape, generator=g)
    return img.clamp(0, 1), cb


@pytest.mark.parametrize("radius", [0, 1, 7, 15, 40])
@pytest.mark.parametrize("matmul", [True, False])
def test_box_mean_matches_avg_pool(
    radius: int, matmul: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(boxfilter, "_MATMUL_MAX_SIDE", 256 if matmul else 0)
    x = torch.rand(2, 3, 37, 29, generator=torch.Generator().manual_seed(1))
    got = box_mean(x, radius)
    if radius == 0:
        torch.testing.assert_close(got, x)
        return
    k = 2 * min(radius, 40) + 1
    pad = torch.zeros(2, 3, 37 + 2 * radius, 29 + 2 * radius)
    pad[:, :, radius:-radius, radius:-radius] = x
    ones = torch.zeros_like(pad)
    ones[:, :, radius:-radius, radius:-radius] = 1
    ref = F.avg_pool2d(pad, k, stride=1) / F.avg_pool2d(ones, k, stride=1)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    if radius <= 7:  # avg_pool2d's padding limit
        torch.testing.assert_close(
            got, F.avg_pool2d(x, k, 1, radius, count_include_pad=False), atol=1e-5, rtol=1e-5
        )


def test_local_clustering_separates_colours_locally() -> None:
    img, cb = checkerboard()
    for k in (2, 5):
        resp = local_colour_clustering(
            img, n_components=k, generator=torch.Generator().manual_seed(1)
        )
        assert resp.shape == (2, k, 64, 64) and resp.dtype == torch.float32
        torch.testing.assert_close(resp.sum(1), torch.ones(2, 64, 64))
        onehot = F.one_hot(resp.argmax(1), k).permute(0, 3, 1, 2).float()
        # in every 15 x 15 window the clusters used by the two colours are disjoint
        used0 = box_mean(onehot * (1 - cb), 7) > 0
        used1 = box_mean(onehot * cb, 7) > 0
        assert not (used0 & used1).any()
        if k == 2:
            assert resp.max(1).values.mean() > 0.95


def test_batched_equals_per_chip_and_seeded() -> None:
    img, _ = checkerboard(batch=3, seed=4)
    img[1] = img[1].flip(-1)
    img[2] = torch.rand(4, 64, 64, generator=torch.Generator().manual_seed(9))
    init = torch.rand(3, 5, 64, 64, generator=torch.Generator().manual_seed(2))
    init /= init.sum(1, keepdim=True)
    kw = {"iterations": 8, "warmup_iterations": 2}
    batched = local_colour_clustering(img, init=init, **kw)
    for b in range(3):
        one = local_colour_clustering(img[b], init=init[b : b + 1], **kw)
        torch.testing.assert_close(one[0], batched[b], atol=1e-5, rtol=1e-4)
    a = local_colour_clustering(img, generator=torch.Generator().manual_seed(7), **kw)
    b2 = local_colour_clustering(img, generator=torch.Generator().manual_seed(7), **kw)
    c = local_colour_clustering(img, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a, b2) and not torch.equal(a, c)


def test_clustering_parameters_are_configurable() -> None:
    img, _ = checkerboard(batch=1)
    resp = local_colour_clustering(
        img[:, :3], n_components=3, radius=3, iterations=4, warmup_iterations=0, n_bands=3
    )
    assert resp.shape == (1, 3, 64, 64)
    zero = local_colour_clustering(img, iterations=0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(zero.sum(1), torch.ones(1, 64, 64))


def test_clustering_bad_input() -> None:
    img, _ = checkerboard(batch=1)
    with pytest.raises(ValueError, match="3 bands; expected 4"):
        local_colour_clustering(img[:, :3])
    bad = img.clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        local_colour_clustering(bad)
    with pytest.raises(ValueError, match="dtype"):
        local_colour_clustering((img * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="init has shape"):
        local_colour_clustering(img, init=torch.ones(1, 4, 64, 64))
    with pytest.raises(ValueError, match="expected"):
        local_colour_clustering(img[0, 0])
    with pytest.raises(ValueError, match="divisible"):
        prepare_naip(np.zeros((4, 30, 32), np.uint8))
    with pytest.raises(ValueError, match="method"):
        global_colour_clustering(img, method="dbscan")


def test_prepare_naip_pools_to_label_resolution() -> None:
    naip = np.random.default_rng(0).integers(0, 256, size=(2, 4, 256, 256), dtype=np.uint8)
    x = prepare_naip(naip)
    assert x.shape == (2, 4, 64, 64) and x.dtype == torch.float32
    np.testing.assert_allclose(
        x[1, 2, 3, 5].item(), naip[1, 2, 12:16, 20:24].mean() / 255, rtol=1e-5
    )


@pytest.mark.parametrize("method", ["gmm", "kmeans"])
def test_global_baseline(method: str) -> None:
    img, cb = checkerboard(batch=2)
    resp = global_colour_clustering(img, method=method, n_components=2, max_fit_pixels=2000)
    assert resp.shape == (2, 2, 64, 64)
    torch.testing.assert_close(resp.sum(1), torch.ones(2, 64, 64))
    lab = resp.argmax(1)
    agree = (lab == cb.long()).float().mean().item()
    assert max(agree, 1 - agree) > 0.99  # one global partition matches the colours
    hard = global_colour_clustering(img, n_components=2, soft=False)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.realdata
def test_real_naip_local_clustering_explains_colour(tmp_path: Path) -> None:
    path = shared_data_path("naip", "m_3211605_ne_11_060_20200415.tif")
    with rasterio.open(path) as src:
        naip = src.read()  # (4, 204, 266) uint8 at 0.6 m
        crs, transform = src.crs, src.transform
    out = cluster_geotiff(path, tmp_path / "z.tif", chip=32, iterations=5)
    with rasterio.open(out) as dst:  # CRS and transform survive chipping and writing
        assert dst.crs == crs and dst.crs.to_epsg() == 26911
        assert dst.transform.almost_equals(transform @ Affine.scale(4))
        assert dst.shape == (51, 66)
    x = prepare_naip(naip[:, :200, :264])  # (1, 4, 50, 66) at the label resolution
    resp = local_colour_clustering(x, generator=torch.Generator().manual_seed(0))
    assert resp.shape == (1, 5, 50, 66) and torch.isfinite(resp).all()
    torch.testing.assert_close(resp.sum(1), torch.ones(1, 50, 66))
    # the clusters explain colour: responsibility-weighted within-cluster variance is
    # well below the total variance of the pixels
    px = x[0].reshape(4, -1)
    r = resp[0].reshape(5, -1)
    w = r.sum(1, keepdim=True)
    mu = (r @ px.T) / w
    within = sum((r[k] * ((px - mu[k][:, None]) ** 2).sum(0)).sum() for k in range(5))
    total = ((px - px.mean(1, keepdim=True)) ** 2).sum()
    assert within < 0.5 * total


def test_cluster_geotiff(tmp_path: Path) -> None:
    img, _ = checkerboard(batch=1)
    naip = (img[0].repeat_interleave(4, -1).repeat_interleave(4, -2) * 255).round()
    naip = naip.to(torch.uint8).numpy()[:, :250, :230]  # 250 x 230 px, not divisible by 4
    transform = from_origin(400_000.0, 3_600_000.0, 0.6, 0.6)
    profile = {"driver": "GTiff", "count": 4, "dtype": "uint8", "crs": "EPSG:26911"}
    with rasterio.open(
        tmp_path / "naip.tif", "w", height=250, width=230, transform=transform, **profile
    ) as dst:
        dst.write(naip)
    out = cluster_geotiff(
        tmp_path / "naip.tif", tmp_path / "z.tif", chip=32, iterations=6, warmup_iterations=1
    )
    with rasterio.open(out) as src:
        z = src.read()
        assert src.crs.to_epsg() == 26911
        assert src.transform == transform @ Affine.scale(4)
        assert src.descriptions[0].endswith("cluster_1)")
    assert z.shape == (5, 62, 57) and z.dtype == np.uint8
    assert np.abs(z.astype(int).sum(0) - 255).max() <= 3
    whole = cluster_geotiff(tmp_path / "naip.tif", tmp_path / "w.tif", chip=0, iterations=2)
    with rasterio.open(whole) as src:
        assert src.shape == (62, 57)
    with rasterio.open(
        tmp_path / "rgb.tif", "w", height=8, width=8, transform=transform, **{**profile, "count": 3}
    ) as dst:
        dst.write(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"rgb\.tif has 3 bands; expected 4"):
        cluster_geotiff(tmp_path / "rgb.tif", tmp_path / "bad.tif")
    assert not (tmp_path / "bad.tif").exists()


def test_cli_cluster(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from landprior.cli import main

    naip = np.random.default_rng(0).integers(0, 256, size=(4, 128, 96), dtype=np.uint8)
    with rasterio.open(
        tmp_path / "naip.tif", "w", driver="GTiff", height=128, width=96, count=4, dtype="uint8",
        crs="EPSG:26916", transform=from_origin(500_000.0, 4_000_128.0, 1.0, 1.0),
    ) as dst:  # fmt: skip
        dst.write(naip)
    args = ["data", "cluster", str(tmp_path / "naip.tif"), str(tmp_path / "z.tif")]
    res = CliRunner().invoke(main, [*args, "--iterations", "3", "--components", "3"])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "z.tif") as src:
        assert (src.count, src.height, src.width) == (3, 32, 24)
        assert src.crs.to_epsg() == 26916
    bad = CliRunner().invoke(
        main, ["data", "cluster", str(tmp_path / "z.tif"), str(tmp_path / "q.tif")]
    )
    assert bad.exit_code != 0 and "expected 4" in bad.output
