"""Chip sets: the container (save/load, validation, segmenter tensors) and city sampling."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine
from rasterio.windows import Window

from landprior.landcover.chips import ChipSet, sample_city_chips
from landprior.landcover.enviroatlas import EnviroAtlas
from landprior.landcover.weak_labels import prior_from_uint8
from tests.landcover.conftest import SOURCE_CITY, TARGET_CITY

N, H, W = 3, 6, 6


def _chipset(with_optional: bool = True, seed: int = 0) -> ChipSet:
    rng = np.random.default_rng(seed)
    weak = rng.random((N, 5, H, W)).astype(np.float32)
    weak /= weak.sum(axis=1, keepdims=True)
    optional: dict[str, np.ndarray] = {}
    if with_optional:
        optional = {
            "truth": rng.integers(0, 5, (N, H, W)).astype(np.uint8),
            "clusters": rng.random((N, 4, H, W)).astype(np.float32),
            "pseudo": rng.integers(0, 5, (N, H, W)).astype(np.uint8),
            "pseudo_probs": rng.random((N, 5, H, W)).astype(np.float16),
        }
        optional["truth"][0, 0, 0] = 255
    return ChipSet(
        city="somecity_xx-2020",
        crs='PROJCS["some WKT"]',
        factor=4,
        image=rng.random((N, 4, H, W)).astype(np.float32),
        weak=weak,
        tile_ids=np.array(["t1", "t1", "t2"]),
        offsets=rng.integers(0, 100, (N, 2)).astype(np.int64),
        transforms=rng.random((N, 6)),
        **optional,
    )


# --------------------------------------------------------------------------- container


@pytest.mark.parametrize("with_optional", [True, False])
def test_save_load_round_trip(tmp_path: Path, with_optional: bool) -> None:
    cs = _chipset(with_optional)
    old_umask = os.umask(0o022)
    try:
        path = cs.save(tmp_path / "sub" / "chips.npz")
    finally:
        os.umask(old_umask)
    assert path == tmp_path / "sub" / "chips.npz" and path.is_file()
    assert path.stat().st_mode & 0o777 == 0o644, "not mkstemp's private 0600"
    back = ChipSet.load(path)
    assert (back.city, back.crs, back.factor) == (cs.city, cs.crs, cs.factor)
    assert isinstance(back.city, str) and isinstance(back.factor, int)
    assert len(back) == N
    for name in ("image", "weak", "tile_ids", "offsets", "transforms",
                 "truth", "clusters", "pseudo", "pseudo_probs"):
        a, b = getattr(cs, name), getattr(back, name)
        if a is None:
            assert b is None, name
        else:
            assert b.dtype == a.dtype, name
            np.testing.assert_array_equal(b, a, err_msg=name)
    # no temporary files left next to the chip set
    assert sorted(p.name for p in path.parent.iterdir()) == ["chips.npz"]


def test_save_is_atomic_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "chips.npz"
    old = _chipset(seed=1)
    old.save(path)
    before = path.read_bytes()

    def disk_full(file: str, **arrays: object) -> None:
        Path(file).write_bytes(b"PK\x03\x04 half a zip")  # a partial archive, then failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    with pytest.raises(OSError, match="No space"):
        _chipset(seed=2).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old chip set is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chips.npz"]  # no partial temp file
    np.testing.assert_array_equal(ChipSet.load(path).image, old.image)

    # a fresh target: nothing at all is left behind
    with monkeypatch.context() as m:
        m.setattr(np, "savez_compressed", disk_full)
        with pytest.raises(OSError):
            _chipset().save(tmp_path / "new" / "chips.npz")
    assert list((tmp_path / "new").iterdir()) == []


def test_save_onto_a_directory_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "taken.npz"
    target.mkdir()
    with pytest.raises(OSError):
        _chipset().save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.npz"]
    assert target.is_dir()


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        ChipSet.load(tmp_path / "missing.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"this is not a zip")
    with pytest.raises(ValueError, match=r"broken\.npz is not a chip set"):
        ChipSet.load(broken)
    whole = _chipset().save(tmp_path / "whole.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # a crashed copy
    with pytest.raises(ValueError, match=r"cannot read chip set .*truncated\.npz"):
        ChipSet.load(truncated)
    cs = _chipset(with_optional=False)
    partial = tmp_path / "partial.npz"
    np.savez(partial, image=cs.image, weak=cs.weak, city=np.array(cs.city))
    with pytest.raises(ValueError, match=r"partial\.npz.*'crs'|lacks the field"):
        ChipSet.load(partial)


def test_validation_errors() -> None:
    cs = _chipset()
    with pytest.raises(ValueError, match="chips are 0 x 0 pixels"):
        cs.with_(image=cs.image[:, :, :0, :0], weak=cs.weak[:, :, :0, :0], truth=None,
                 clusters=None, pseudo=None, pseudo_probs=None)
    with pytest.raises(ValueError, match="'weak' has 2 chips, not 3"):
        cs.with_(weak=cs.weak[:2])
    with pytest.raises(ValueError, match="'offsets' has 2 chips"):
        cs.with_(offsets=cs.offsets[:2])
    with pytest.raises(ValueError, match="'pseudo' has 4 chips"):
        cs.with_(pseudo=np.zeros((4, H, W), np.uint8))
    with pytest.raises(ValueError, match=r"'truth' grid \(5, 6\) != \(6, 6\)"):
        cs.with_(truth=cs.truth[:, :5])
    with pytest.raises(ValueError, match="'clusters' grid"):
        cs.with_(clusters=cs.clusters[..., :3])
    with pytest.raises(ValueError, match=r"'weak' grid"):
        cs.with_(weak=cs.weak[..., :4])
    with pytest.raises(ValueError, match=r"\(N, C, h, w\)"):
        cs.with_(image=cs.image[:, 0])
    # with_ makes a validated copy and leaves the original alone
    new = cs.with_(pseudo=None)
    assert new.pseudo is None and cs.pseudo is not None


def test_training_tensors_shapes_and_errors() -> None:
    cs = _chipset()
    x, y = cs.training_tensors()
    assert x.shape == (N, 4, H, W) and x.dtype == torch.float32
    assert y.shape == (N, H, W) and y.dtype == torch.int64
    np.testing.assert_array_equal(x.numpy(), cs.image)
    np.testing.assert_array_equal(y.numpy(), cs.truth.astype(np.int64))
    assert int(y[0, 0, 0]) == 255  # ignore index survives
    xw, yp = cs.training_tensors(target="pseudo", inputs="image+weak")
    assert xw.shape == (N, 9, H, W)
    np.testing.assert_array_equal(xw[:, :4].numpy(), cs.image)
    np.testing.assert_array_equal(xw[:, 4:].numpy(), cs.weak)
    np.testing.assert_array_equal(yp.numpy(), cs.pseudo)
    with pytest.raises(ValueError, match="unknown target 'labels'"):
        cs.training_tensors(target="labels")
    with pytest.raises(ValueError, match=r"unknown segmenter inputs 'weak'.*image\+weak"):
        cs.training_tensors(inputs="weak")
    bare = _chipset(with_optional=False)
    with pytest.raises(ValueError, match="no 'pseudo' labels"):
        bare.training_tensors(target="pseudo")
    with pytest.raises(ValueError, match="no 'truth' labels"):
        bare.training_tensors()


# --------------------------------------------------------------------------- sampling


def _mode_blocks(labels: np.ndarray, f: int) -> np.ndarray:
    """Majority label per f x f block (255 does not vote; ties -> lowest class), by loops."""
    h, w = labels.shape[0] // f, labels.shape[1] // f
    out = np.full((h, w), 255, np.uint8)
    for i in range(h):
        for j in range(w):
            block = labels[i * f : (i + 1) * f, j * f : (j + 1) * f].ravel()
            block = block[block != 255]
            if block.size:
                out[i, j] = np.bincount(block, minlength=5).argmax()
    return out


def test_sample_city_chips_content_and_georeference(tiny_dataset: EnviroAtlas) -> None:
    ds = tiny_dataset
    n, size, f = 5, 32, 4
    cs = sample_city_chips(ds, SOURCE_CITY, "train", n, size=size, factor=f, seed=3)
    h = size // f
    assert len(cs) == n and cs.city == SOURCE_CITY and cs.factor == f
    assert cs.image.shape == (n, 4, h, h) and cs.image.dtype == np.float32
    assert cs.weak.shape == (n, 5, h, h) and cs.weak.dtype == np.float32
    assert cs.truth is not None and cs.truth.shape == (n, h, h) and cs.truth.dtype == np.uint8
    assert cs.offsets.shape == (n, 2) and cs.transforms.shape == (n, 6)
    assert cs.clusters is None and cs.pseudo is None
    np.testing.assert_allclose(cs.weak.sum(axis=1), 1.0, atol=1e-5)
    tiles = {t.tile_id: t for t in ds.tiles(SOURCE_CITY, "train")}
    assert set(cs.tile_ids.tolist()) == set(tiles)  # 5 chips over 2 tiles: both used
    for i in range(n):
        tile = tiles[str(cs.tile_ids[i])]
        profile = ds.profile(tile, "naip")
        assert cs.crs == profile["crs"].to_wkt()
        row, col = (int(v) for v in cs.offsets[i])
        assert 0 <= row <= profile["height"] - size and 0 <= col <= profile["width"] - size
        # the tile transform moved to the chip's pixel offset, pixels f times larger
        t = profile["transform"]
        x0, y0 = t @ (col, row)
        expected = Affine(t.a * f, t.b * f, x0, t.d * f, t.e * f, y0)
        np.testing.assert_allclose(cs.transforms[i], tuple(expected)[:6], rtol=0, atol=1e-6)
        corner = Affine(*cs.transforms[i]) @ (h, h)
        assert corner == pytest.approx(t @ (col + size, row + size))
        window = Window(col, row, size, size)
        naip = ds.read(tile, "naip", window).astype(np.float64) / 255
        pooled = naip.reshape(4, h, f, h, f).mean(axis=(2, 4))
        np.testing.assert_allclose(cs.image[i], pooled, atol=1e-6)
        labels = ds.read_labels(tile, "prior", window)
        np.testing.assert_array_equal(cs.truth[i], _mode_blocks(labels, f))
        weak = prior_from_uint8(ds.read(tile, "prior", window)).reshape(5, h, f, h, f)
        weak = weak.mean(axis=(2, 4))
        np.testing.assert_allclose(cs.weak[i], weak / weak.sum(0), atol=1e-5)


def test_sample_city_chips_is_deterministic_per_seed(tiny_dataset: EnviroAtlas) -> None:
    a = sample_city_chips(tiny_dataset, TARGET_CITY, "test", 4, size=32, seed=7)
    b = sample_city_chips(tiny_dataset, TARGET_CITY, "test", 4, size=32, seed=7)
    c = sample_city_chips(tiny_dataset, TARGET_CITY, "test", 4, size=32, seed=8)
    for name in ("image", "weak", "truth", "offsets", "transforms", "tile_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert not np.array_equal(a.offsets, c.offsets)
    nt = sample_city_chips(tiny_dataset, TARGET_CITY, "test", 2, size=32, with_truth=False)
    assert nt.truth is None


def test_sample_city_chips_bad_arguments(tiny_dataset: EnviroAtlas) -> None:
    ds = tiny_dataset
    with pytest.raises(ValueError, match="number of chips must be >= 1, got 0"):
        sample_city_chips(ds, SOURCE_CITY, "train", 0)
    with pytest.raises(ValueError, match="size 30 is not divisible by the factor 4"):
        sample_city_chips(ds, SOURCE_CITY, "train", 2, size=30)
    with pytest.raises(ValueError, match="smaller than a 256 x 256 chip"):
        sample_city_chips(ds, SOURCE_CITY, "train", 2, size=256)
    with pytest.raises(ValueError, match="no split 'train' for city"):
        sample_city_chips(ds, TARGET_CITY, "train", 2, size=32)
    with pytest.raises(ValueError, match="unknown city 'atlantis'"):
        sample_city_chips(ds, "atlantis", "test", 2, size=32)
    with pytest.raises(FileNotFoundError, match="neither a layer"):
        sample_city_chips(ds, SOURCE_CITY, "train", 2, size=32, weak_layer="no_such_layer")


def test_save_to_a_name_without_npz_suffix(tmp_path: Path) -> None:
    """numpy appends .npz to names without it: the temporary file must already end so."""
    path = _chipset().save(tmp_path / "chips")
    assert path == tmp_path / "chips" and [p.name for p in tmp_path.iterdir()] == ["chips"]
    assert len(ChipSet.load(path)) == N
