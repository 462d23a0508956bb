"""Tiling: chips, their geotransforms, and the x1/4 label / imagery reductions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from landprior.landcover.classes import CHESAPEAKE_MAPPING, IGNORE_INDEX, remap
from landprior.landcover.tiling import (
    Chip,
    average_pool,
    chip_windows,
    chips_for_dataset,
    downsample_transform,
    extract_chips,
    mode_downsample,
    random_chips,
    read_chips,
    sample_label_patches,
)
from tests.conftest import shared_data_path

TRANSFORM = from_origin(600_000.0, 4_300_000.0, 1.0, 1.0)


def write_tif(path: Path, data: np.ndarray, transform: Affine = TRANSFORM) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[-2],
        width=data.shape[-1],
        count=data.shape[0],
        dtype=data.dtype,
        crs="EPSG:26917",
        transform=transform,
    ) as dst:
        dst.write(data)
    return path


def test_chip_grid_snaps_last_chip_and_covers_tile() -> None:
    chips = chip_windows(300, 260, 128, stride=100, transform=TRANSFORM, name="t")
    rows = sorted({c.row for c in chips})
    cols = sorted({c.col for c in chips})
    assert rows == [0, 100, 172] and cols == [0, 100, 132]
    cover = np.zeros((300, 260), bool)
    for c in chips:
        assert (c.height, c.width) == (128, 128)
        cover[c.slices] = True
        assert c.transform == window_transform(c.window, TRANSFORM)
        assert c.window == Window(c.col, c.row, 128, 128)
    assert cover.all()
    exact = chip_windows(256, 256, 64)
    assert len(exact) == 16 and all(c.transform is None for c in exact)
    rect = chip_windows(100, 80, (50, 40))
    assert {(c.row, c.col) for c in rect} == {(0, 0), (0, 40), (50, 0), (50, 40)}


def test_tile_smaller_than_chip_names_the_tile() -> None:
    with pytest.raises(ValueError, match=r"tile 'm_123_naip.tif' is 100 x 300 px.*128 x 128"):
        chip_windows(100, 300, 128, name="m_123_naip.tif")
    with pytest.raises(ValueError, match="chip size"):
        chip_windows(100, 100, 0)
    with pytest.raises(ValueError, match="smaller than"):
        random_chips(10, 10, 64, 2, generator=np.random.default_rng(0))


def test_extract_and_read_chips_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, size=(4, 130, 150), dtype=np.uint8)
    path = write_tif(tmp_path / "tile.tif", tile)
    with rasterio.open(path) as src:
        chips = chips_for_dataset(src, 64, stride=48)
        batch = read_chips(src, chips)
        one_band = read_chips(src, chips[:2], indexes=[2])
    assert chips[0].transform == TRANSFORM
    arr = extract_chips(tile, chips)
    assert arr.shape == (len(chips), 4, 64, 64) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, batch)
    np.testing.assert_array_equal(one_band[:, 0], arr[:2, 1])
    for i, c in enumerate(chips):
        np.testing.assert_array_equal(arr[i], tile[:, c.slices[0], c.slices[1]])
    flat = extract_chips(tile[0], chips)
    assert flat.shape == (len(chips), 64, 64)
    with pytest.raises(ValueError, match="outside"):
        extract_chips(tile, [Chip(100, 100, 64, 64)])
    with pytest.raises(ValueError, match="different sizes"):
        extract_chips(tile, [Chip(0, 0, 64, 64), Chip(0, 0, 32, 32)])
    with pytest.raises(ValueError, match="smaller than"):
        extract_chips(tile[:, :50], chips[:1])


def test_random_chips_are_seeded_and_inside() -> None:
    a = random_chips(500, 400, 256, 20, generator=np.random.default_rng(5), transform=TRANSFORM)
    b = random_chips(500, 400, 256, 20, generator=np.random.default_rng(5), transform=TRANSFORM)
    assert a == b
    assert all(0 <= c.row <= 244 and 0 <= c.col <= 144 for c in a)
    assert all(c.transform == window_transform(c.window, TRANSFORM) for c in a)


def naive_mode(lab: np.ndarray, f: int, k: int = 5) -> np.ndarray:
    out = np.full((lab.shape[0] // f, lab.shape[1] // f), IGNORE_INDEX, np.uint8)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = lab[i * f : (i + 1) * f, j * f : (j + 1) * f].ravel()
            counts = np.bincount(block[block != IGNORE_INDEX], minlength=k)
            if counts.sum():
                out[i, j] = counts.argmax()
    return out


def test_mode_downsample_hand_made_blocks() -> None:
    w, i = 0, IGNORE_INDEX
    lab = np.array(
        [
            # majority 3 (ignore does not vote) | all ignored      | tie 1 / 4 -> lowest
            [3, 3, 3, w, i, i, i, i, 1, 1, 4, 4],
            [3, i, i, i, i, i, i, i, 1, 1, 4, 4],
            [i, i, 2, 2, i, i, i, i, 1, 1, 4, 4],
            [i, i, i, 2, i, i, i, i, 1, 1, 4, 4],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(mode_downsample(lab, 4), [[3, i, 1]])
    np.testing.assert_array_equal(mode_downsample(lab, 2), [[3, w, i, i, 1, 4], [i, 2, i, i, 1, 4]])
    rng = np.random.default_rng(1)
    rand = rng.choice([0, 1, 2, 3, 4, i], size=(64, 48)).astype(np.uint8)
    np.testing.assert_array_equal(mode_downsample(rand, 4), naive_mode(rand, 4))
    batch = np.stack([rand, rand[::-1]])
    assert mode_downsample(batch, 4).shape == (2, 16, 12)
    np.testing.assert_array_equal(mode_downsample(batch, 4)[1], naive_mode(rand[::-1], 4))
    np.testing.assert_array_equal(mode_downsample(lab, 4, method="nearest"), [[2, i, 4]])


def test_downsampling_bad_input() -> None:
    with pytest.raises(ValueError, match="divisible"):
        mode_downsample(np.zeros((10, 8), np.uint8), 4)
    with pytest.raises(ValueError, match="label value 7"):
        mode_downsample(np.full((4, 4), 7, np.uint8), 4)
    with pytest.raises(ValueError, match="integer"):
        mode_downsample(np.zeros((4, 4), np.float32), 4)
    with pytest.raises(ValueError, match="method"):
        mode_downsample(np.zeros((4, 4), np.uint8), 4, method="bilinear")
    with pytest.raises(ValueError, match="divisible"):
        average_pool(np.zeros((3, 10, 10)), 4)


def test_average_pool_and_transform() -> None:
    img = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    pooled = average_pool(img, 4)
    assert pooled.shape == (2, 2, 2) and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled[1, 0, 1], img[1, :4, 4:].mean())
    coarse = downsample_transform(TRANSFORM, 4)
    assert coarse.a == 4.0 and coarse.e == -4.0
    assert coarse @ (1, 1) == TRANSFORM @ (4, 4)
    chip = chip_windows(256, 256, 64, transform=TRANSFORM)[5]
    small = downsample_transform(chip.transform, 4)
    assert small @ (0, 0) == chip.transform @ (0, 0)


def test_sample_label_patches() -> None:
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 5, size=(300, 300)).astype(np.uint8)
    lab[:, :150] = IGNORE_INDEX
    a = sample_label_patches(lab, 6, generator=np.random.default_rng(2), size=64)
    b = sample_label_patches(lab, 6, generator=np.random.default_rng(2), size=64)
    assert a.shape == (6, 16, 16) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    clean = sample_label_patches(
        lab, 4, generator=np.random.default_rng(3), size=64, max_ignore_fraction=0.0
    )
    assert (clean != IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="could not find"):
        sample_label_patches(
            np.full((80, 80), IGNORE_INDEX, np.uint8),
            2,
            generator=rng,
            size=64,
            max_ignore_fraction=0.0,
        )


@pytest.mark.realdata
def test_real_chesapeake_tile_keeps_crs_and_transform() -> None:
    folder = shared_data_path("chesapeake", "test_tile")
    with rasterio.open(folder / "m_3907833_nw_17_1_naip-new.tif") as src:
        chips = chips_for_dataset(src, 64, stride=64)
        naip = read_chips(src, chips)
        crs, transform = src.crs, src.transform
    with rasterio.open(folder / "m_3907833_nw_17_1_lc.tif") as src:
        lab = remap(src.read(1), CHESAPEAKE_MAPPING)
        assert src.crs == crs and src.transform == transform
    assert crs.to_epsg() == 26917
    assert naip.shape == (25, 4, 64, 64)  # 260 px: 4 chips + 1 snapped per axis
    for c in chips:
        col, row = c.col, c.row
        assert c.transform @ (0, 0) == pytest.approx(transform @ (col, row))
    labs = extract_chips(lab, chips)
    small = mode_downsample(labs, 4)
    assert small.shape == (25, 16, 16)
    assert set(np.unique(small)) <= {0, 1, 2, 3, 4, IGNORE_INDEX}
