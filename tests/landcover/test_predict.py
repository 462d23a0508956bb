"""Whole-tile prediction to a paletted GeoTIFF (real rasterio files, a real small U-Net)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from landprior.landcover.chips import sample_city_chips
from landprior.landcover.classes import CLASS_COLORS
from landprior.landcover.enviroatlas import EnviroAtlas, Tile
from landprior.landcover.predict import predict_tile, tile_reader
from landprior.landcover.segmenter import (
    SegmentationUNet,
    SegmenterConfig,
    SegmenterTrainConfig,
    predict_array,
    train_segmenter,
)
from landprior.landcover.weak_labels import prior_from_uint8
from tests.landcover.conftest import SOURCE_CITY, TARGET_CITY, TILE_SIZE


def _segmenter(ds: EnviroAtlas, inputs: str) -> SegmentationUNet:
    """A small U-Net trained for a few steps on source chips (so it predicts several classes)."""
    chips = sample_city_chips(ds, SOURCE_CITY, "train", 8, size=64, factor=4, seed=0)
    x, y = chips.training_tensors(inputs=inputs)
    torch.manual_seed(0)
    model = SegmenterConfig(in_channels=x.shape[1], base_channels=4, depth=2).build()
    train_segmenter(model, x, y, SegmenterTrainConfig(steps=6, batch_size=4, lr=1e-2))
    return model.eval()


@pytest.fixture(scope="module")
def image_model(tiny_dataset: EnviroAtlas) -> SegmentationUNet:
    return _segmenter(tiny_dataset, "image")


@pytest.fixture(scope="module")
def weak_model(tiny_dataset: EnviroAtlas) -> SegmentationUNet:
    return _segmenter(tiny_dataset, "image+weak")


def _tile(ds: EnviroAtlas) -> Tile:
    return ds.tiles(TARGET_CITY, "test")[0]


def test_tile_reader_reads_windows(tiny_dataset: EnviroAtlas) -> None:
    ds, tile = tiny_dataset, _tile(tiny_dataset)
    naip = ds.read(tile, "naip").astype(np.float32) / 255
    weak = prior_from_uint8(ds.read(tile, "prior"))
    read = tile_reader(ds, tile, "image")
    np.testing.assert_array_equal(read(10, 20, 16, 24), naip[:, 10:26, 20:44])
    read_w = tile_reader(ds, tile, "image+weak")
    both = read_w(0, 0, 32, 32)
    assert both.shape == (9, 32, 32) and both.dtype == np.float32
    np.testing.assert_array_equal(both[:4], naip[:, :32, :32])
    np.testing.assert_allclose(both[4:], weak[:, :32, :32], atol=1e-6)
    with pytest.raises(ValueError, match="unknown segmenter inputs 'rgb'"):
        tile_reader(ds, tile, "rgb")


def _check_class_map(path: Path, ds: EnviroAtlas, tile: Tile, expected: np.ndarray) -> None:
    profile = ds.profile(tile, "naip")
    with rasterio.open(path) as src:
        assert src.crs == profile["crs"]
        assert src.transform == profile["transform"]
        assert (src.count, src.height, src.width) == (1, TILE_SIZE, TILE_SIZE)
        assert src.dtypes[0] == "uint8"
        assert src.nodata == 255
        cmap = src.colormap(1)
        for k, rgb in enumerate(CLASS_COLORS):
            assert cmap[k][:3] == rgb
        got = src.read(1)
    np.testing.assert_array_equal(got, expected)


def test_predict_tile_equals_argmax_of_predict_array(
    tiny_dataset: EnviroAtlas, image_model: SegmentationUNet, tmp_path: Path
) -> None:
    ds, tile = tiny_dataset, _tile(tiny_dataset)
    out = predict_tile(image_model, ds, tile, tmp_path / "pred" / "t.tif", inputs="image",
                       downsample=4, window=16, overlap=4)
    assert out == tmp_path / "pred" / "t.tif"
    image = ds.read(tile, "naip").astype(np.float32) / 255
    probs = predict_array(image_model, image, window=16, overlap=4, downsample=4)
    expected = probs.argmax(0).astype(np.uint8)
    assert len(np.unique(expected)) >= 2  # a trivially constant map would prove little
    _check_class_map(out, ds, tile, expected)
    # the class map and its category side-car (.aux.xml), no temporary files
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.tif", "t.tif.aux.xml"]


def test_predict_tile_with_weak_labels_and_probabilities(
    tiny_dataset: EnviroAtlas, weak_model: SegmentationUNet, tmp_path: Path
) -> None:
    ds, tile = tiny_dataset, _tile(tiny_dataset)
    out = predict_tile(weak_model, ds, tile, tmp_path / "w.tif", inputs="image+weak",
                       downsample=2, window=32, overlap=8,
                       probabilities_path=tmp_path / "probs" / "p.tif")
    image = np.concatenate([ds.read(tile, "naip").astype(np.float32) / 255,
                            prior_from_uint8(ds.read(tile, "prior"))])
    probs = predict_array(weak_model, image, window=32, overlap=8, downsample=2)
    _check_class_map(out, ds, tile, probs.argmax(0).astype(np.uint8))
    with rasterio.open(tmp_path / "probs" / "p.tif") as src:
        assert src.count == 5 and src.dtypes[0] == "uint8"
        assert src.crs == ds.profile(tile, "naip")["crs"]
        stored = src.read()
    np.testing.assert_allclose(stored / 255.0, probs, atol=1 / 255)
    # an image-only model cannot be fed image+weak inputs
    model4 = SegmenterConfig(base_channels=4, depth=2).build().eval()
    with pytest.raises(ValueError, match=r"expects \(B, 4, H, W\)"):
        predict_tile(model4, ds, tile, tmp_path / "x.tif", inputs="image+weak", window=16)
    assert not (tmp_path / "x.tif").exists()


def test_predict_tile_rejects_a_window_larger_than_the_tile(
    tiny_dataset: EnviroAtlas, image_model: SegmentationUNet, tmp_path: Path
) -> None:
    ds, tile = tiny_dataset, _tile(tiny_dataset)
    with pytest.raises(ValueError, match="smaller than one prediction window"):
        predict_tile(image_model, ds, tile, tmp_path / "big.tif", downsample=4, window=64)
    assert not (tmp_path / "big.tif").exists()


def _copy_with(tiny_root: Path, where: Path, layer: str, edit) -> tuple[EnviroAtlas, Tile]:
    """A copy of the tiny dataset whose target tile's ``layer`` is rewritten by ``edit``."""
    import shutil

    ds = EnviroAtlas(shutil.copytree(tiny_root, where))
    tile = _tile(ds)
    path = ds.path(tile, layer)
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    profile, data = edit(profile, data)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return ds, tile


def test_imagery_nodata_is_written_as_map_nodata(
    tiny_root: Path, image_model: SegmentationUNet, tmp_path: Path
) -> None:
    """NAIP with nodata 0 and a black (no-data) band of rows: those pixels get 255, not a class."""
    def blank_rows(profile, data):
        data = data.copy()
        data[:, :20] = 0
        return {**profile, "nodata": 0}, data

    ds, tile = _copy_with(tiny_root, tmp_path / "ds", "naip", blank_rows)
    out = predict_tile(image_model, ds, tile, tmp_path / "m.tif", downsample=4, window=16,
                       overlap=4, probabilities_path=tmp_path / "p.tif")
    with rasterio.open(out) as src:
        classes = src.read(1)
        assert src.nodata == 255
    assert (classes[:20] == 255).all()
    assert (classes[20:] < 5).all()  # every valid pixel still gets a class
    # probabilities have no free value for "no data": an internal mask says it (GDAL, QGIS)
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.mask_flag_enums[0] == [rasterio.enums.MaskFlags.per_dataset]
        assert not (tmp_path / "p.tif.msk").exists() and src.overviews(1)
        np.testing.assert_array_equal(src.read_masks(1) == 0, classes == 255)
        assert (src.read()[:, :20] == 0).all()
    # the model sees the no-data rows filled from the nearest valid pixel (row 20, same
    # column), not as black: its probabilities on the valid rows are exactly those of the
    # same imagery with that filling done beforehand and no nodata declared
    def prefilled(profile, data):
        data = data.copy()
        data[:, :20] = data[:, 20:21]
        return {**profile, "nodata": None}, data

    ds_filled, tile = _copy_with(tiny_root, tmp_path / "ds_filled", "naip", prefilled)
    predict_tile(image_model, ds_filled, tile, tmp_path / "f.tif", downsample=4, window=16,
                 overlap=4, probabilities_path=tmp_path / "pf.tif")
    with rasterio.open(tmp_path / "p.tif") as got, rasterio.open(tmp_path / "pf.tif") as want:
        np.testing.assert_array_equal(got.read()[:, 20:], want.read()[:, 20:])


def test_fill_invalid_takes_the_nearest_valid_pixel() -> None:
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin

    from landprior.landcover.predict import fill_invalid

    pixels = np.arange(4 * 6 * 8, dtype=np.uint8).reshape(4, 6, 8) + 1
    pixels[:, :, :3] = 0  # a no-data collar of three columns
    profile = {"driver": "GTiff", "height": 6, "width": 8, "count": 4, "dtype": "uint8",
               "crs": "EPSG:26917", "transform": from_origin(0, 6, 1, 1), "nodata": 0}

    def read(row: int, col: int, h: int, w: int) -> np.ndarray:
        return pixels[:, row:row + h, col:col + w].astype(np.float32) / 255

    with MemoryFile() as mem, mem.open(**profile) as src:
        src.write(pixels)
        filled = fill_invalid(read, src)(0, 0, 6, 8)
        np.testing.assert_array_equal(filled[:, :, 3:], read(0, 0, 6, 8)[:, :, 3:])
        for col in range(3):  # each collar pixel takes its row's first valid pixel
            np.testing.assert_array_equal(filled[:, :, col], read(0, 0, 6, 8)[:, :, 3])
        assert (fill_invalid(read, src)(0, 0, 6, 3) == 0).all()  # nothing valid to take
    profile.pop("nodata")
    with MemoryFile() as mem, mem.open(**profile) as src:  # no nodata, no mask: as read
        src.write(pixels)
        np.testing.assert_array_equal(fill_invalid(read, src)(0, 0, 6, 8), read(0, 0, 6, 8))


def test_a_weak_layer_off_the_imagery_grid_is_refused(
    tiny_root: Path, weak_model: SegmentationUNet, tmp_path: Path
) -> None:
    """Stacking a weak layer shifted by 100 m pixel by pixel would be silently wrong."""
    from affine import Affine

    from landprior.landcover.enviroatlas import DataError

    def shift(profile, data):
        t = profile["transform"]
        return {**profile, "transform": Affine(t.a, t.b, t.c + 100, t.d, t.e, t.f)}, data

    ds, tile = _copy_with(tiny_root, tmp_path / "ds", "prior", shift)
    with pytest.raises(DataError, match=r"is not on the grid of .*a_naip"):
        predict_tile(weak_model, ds, tile, tmp_path / "w.tif", inputs="image+weak",
                     downsample=4, window=16)
    assert not (tmp_path / "w.tif").exists()
    with pytest.raises(DataError, match="is not on the grid"):
        sample_city_chips(ds, TARGET_CITY, "test", 2, size=64, factor=4, seed=0)


def test_imagery_that_is_not_about_1_m_projected_warns(caplog: pytest.LogCaptureFixture) -> None:
    from affine import Affine
    from rasterio.crs import CRS

    from landprior.landcover.predict import check_imagery_grid

    utm = CRS.from_epsg(26917)
    with caplog.at_level("WARNING", logger="landprior.landcover.predict"):
        check_imagery_grid({"crs": utm, "transform": Affine(1, 0, 0, 0, -1, 0)}, "ok.tif")
        check_imagery_grid({"crs": utm, "transform": Affine(0.6, 0, 0, 0, -0.6, 0)}, "n.tif")
        assert caplog.records == []
        check_imagery_grid({"crs": utm, "transform": Affine(10, 0, 0, 0, -10, 0)}, "s2.tif")
        check_imagery_grid({"crs": CRS.from_epsg(4326),
                            "transform": Affine(1e-5, 0, 0, 0, -1e-5, 0)}, "geo.tif")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "s2.tif has 10 m pixels" in messages[0]
    assert "geo.tif is in a geographic CRS" in messages[1]
