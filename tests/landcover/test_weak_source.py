"""Weak labels from a dataset layer or from a folder written by `landprior data weak-labels`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from landprior.cli import main
from landprior.landcover.enviroatlas import EnviroAtlas
from landprior.landcover.weak_labels import prior_from_uint8
from landprior.landcover.weak_source import weak_label_path, weak_reader
from tests.landcover.conftest import SOURCE_CITY, TARGET_CITY


@pytest.fixture(scope="module")
def weak_folder(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weak labels of the target city's test tiles, written by the CLI (source co-occurrence)."""
    out = tmp_path_factory.mktemp("weak") / "weak_labels"
    result = CliRunner().invoke(main, [
        "data", "weak-labels", "--root", str(tiny_root), "--city", TARGET_CITY,
        "--split", "test", "--out", str(out), "--chunk", "64",
    ])
    assert result.exit_code == 0, result.output
    return out


def _copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


def test_layer_and_cli_folder_give_the_same_arrays(
    tiny_dataset: EnviroAtlas, weak_folder: Path
) -> None:
    ds = tiny_dataset
    tile = ds.tiles(TARGET_CITY, "test")[0]
    assert weak_label_path(weak_folder, tile).is_file()
    from_layer, from_folder = weak_reader(ds, "prior"), weak_reader(ds, weak_folder)
    a, b = from_layer(tile, None), from_folder(tile, None)
    assert a.shape == b.shape == (5, 128, 128)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a.sum(0), 1.0, atol=1e-5)
    # the synthetic prior layer is computed like `data weak-labels` (source co-occurrence)
    np.testing.assert_array_equal(a, b)
    assert (a.argmax(0) == b.argmax(0)).mean() > 0.99
    window = Window(16, 8, 40, 24)
    np.testing.assert_array_equal(from_folder(tile, window), b[:, 8:32, 16:56])
    np.testing.assert_array_equal(from_layer(tile, window), a[:, 8:32, 16:56])
    # a str spec works as well as a Path
    np.testing.assert_array_equal(weak_reader(ds, str(weak_folder))(tile, None), b)
    np.testing.assert_array_equal(
        weak_reader(ds, "prior_no_osm_no_buildings")(tile, None),
        prior_from_uint8(ds.read(tile, "prior_no_osm_no_buildings")),
    )


def _rewrite(path: Path, data: np.ndarray, **changes: object) -> None:
    with rasterio.open(path) as src:
        profile = dict(src.profile)
    profile.update(count=data.shape[0], height=data.shape[1], width=data.shape[2],
                   dtype=str(data.dtype), **changes)
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    profile["tiled"] = False
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_folder_with_a_wrong_grid_names_the_file(
    tiny_dataset: EnviroAtlas, weak_folder: Path, tmp_path: Path
) -> None:
    ds = tiny_dataset
    tile = ds.tiles(TARGET_CITY, "test")[0]
    t = ds.profile(tile, "naip")["transform"]
    cases = {
        "size": (np.zeros((5, 64, 128), np.uint8), {}, r"grid 64x128 .* differs from the imagery"),
        "crs": (np.zeros((5, 128, 128), np.uint8), {"crs": "EPSG:32618"}, "differs from the"),
        "transform": (np.zeros((5, 128, 128), np.uint8),
                      {"transform": t @ rasterio.Affine.translation(2, 0)}, "transform differs"),
        "bands": (np.zeros((3, 128, 128), np.uint8), {}, "expected 5 uint8 bands, got 3"),
        "dtype": (np.zeros((5, 128, 128), np.float32), {}, "expected 5 uint8 bands, got 5 float32"),
    }
    for name, (data, changes, message) in cases.items():
        folder = _copy(weak_folder, tmp_path / name)
        bad = weak_label_path(folder, tile)
        _rewrite(bad, data, **changes)
        read = weak_reader(ds, folder)
        with pytest.raises(ValueError, match=message) as info:
            read(tile, None)
        assert str(bad) in str(info.value), name


def test_missing_tile_and_unknown_spec(
    tiny_dataset: EnviroAtlas, weak_folder: Path, tmp_path: Path
) -> None:
    ds = tiny_dataset
    source_tile = ds.tiles(SOURCE_CITY, "test")[0]
    read = weak_reader(ds, weak_folder)  # the folder only covers the target city
    with pytest.raises(FileNotFoundError, match=rf"weak labels for {source_tile.key} not found"):
        read(source_tile, None)
    with pytest.raises(FileNotFoundError, match="neither a layer") as info:
        weak_reader(ds, tmp_path / "does_not_exist")
    assert "'prior'" in str(info.value) and "'prior_no_osm_no_buildings'" in str(info.value)
    with pytest.raises(FileNotFoundError, match="'naip'"):
        weak_reader(ds, "priors")
