"""Chip export: GeoTIFFs that overlay the city's tiles, a footprint index, atomic folders."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import from_bounds

import landprior.landcover.chip_export as chip_export
from landprior.cli import main
from landprior.landcover.chip_export import INDEX_NAME, export_chip_set
from landprior.landcover.chips import ChipSet, sample_city_chips
from landprior.landcover.classes import CLASS_COLORS, IGNORE_INDEX
from landprior.landcover.enviroatlas import EnviroAtlas
from landprior.landcover.tiling import mode_downsample

from .conftest import TARGET_CITY

N_CHIPS, SIZE, FACTOR = 4, 32, 4


@pytest.fixture
def chips_with_pseudo(tiny_dataset: EnviroAtlas) -> ChipSet:
    cs = sample_city_chips(tiny_dataset, TARGET_CITY, "test", N_CHIPS, size=SIZE,
                           factor=FACTOR, seed=5)
    assert cs.truth is not None
    pseudo = cs.truth.copy()
    pseudo[pseudo == IGNORE_INDEX] = 0
    pseudo[:, :, :3] = (pseudo[:, :, :3] + 1) % 5  # wrong in the first three columns
    return cs.with_(pseudo=pseudo)


def test_export_writes_georeferenced_chips_that_overlay_the_tiles(
    tiny_dataset: EnviroAtlas, chips_with_pseudo: ChipSet, tmp_path: Path
) -> None:
    cs = chips_with_pseudo
    out = tmp_path / "export"
    result = export_chip_set(cs, out)
    assert result.layers == ("pseudo", "weak", "truth") and result.files == 3 * N_CHIPS
    index = gpd.read_file(result.index, layer="chips")
    assert len(index) == N_CHIPS and index.crs is not None
    tiles = {t.tile_id: t for t in tiny_dataset.tiles(TARGET_CITY, "test")}
    for i, row in index.iterrows():
        assert row["tile_id"] == str(cs.tile_ids[i])
        for layer, expected in (("pseudo", cs.pseudo[i]), ("truth", cs.truth[i]),
                                ("weak", cs.weak[i].argmax(0))):
            with rasterio.open(out / row[f"file_{layer}"]) as src:
                np.testing.assert_array_equal(src.read(1), expected, err_msg=layer)
                assert src.crs == index.crs and src.nodata == IGNORE_INDEX
                assert src.res == (FACTOR, FACTOR)
                assert tuple(src.colormap(1)[2][:3]) == CLASS_COLORS[2]
                assert row.geometry.bounds == pytest.approx(tuple(src.bounds))
                bounds = src.bounds
        # the exported truth is the tile's own labels under the chip's footprint, pooled
        tile = tiles[row["tile_id"]]
        with rasterio.open(tile.paths["lc"]) as lc:
            window = from_bounds(*bounds, transform=lc.transform).round_offsets().round_lengths()
        labels = tiny_dataset.read_labels(tile, "prior", window)
        np.testing.assert_array_equal(mode_downsample(labels, FACTOR), cs.truth[i])
        assert (row["row_1m"], row["col_1m"]) == (window.row_off, window.col_off)
        valid = cs.truth[i] != IGNORE_INDEX
        acc = 100 * np.mean(cs.pseudo[i][valid] == cs.truth[i][valid])
        assert row["pseudo_accuracy_pct"] == pytest.approx(acc, abs=0.01)
        assert row["pseudo_accuracy_pct"] < 100  # the columns we broke
    assert not list(tmp_path.glob(".*tmp"))


def test_missing_layers_are_skipped_and_only_missing_is_an_error(
    chips_with_pseudo: ChipSet, tmp_path: Path
) -> None:
    no_pseudo = chips_with_pseudo.with_(pseudo=None)
    result = export_chip_set(no_pseudo, tmp_path / "a")
    assert result.layers == ("weak", "truth")
    index = gpd.read_file(result.index)
    assert "file_pseudo" not in index and "pseudo_accuracy_pct" not in index
    assert "weak_accuracy_pct" in index
    with pytest.raises(ValueError, match="none of the layers"):
        export_chip_set(no_pseudo, tmp_path / "b", layers=("pseudo",))
    with pytest.raises(ValueError, match="unknown chip layers"):
        export_chip_set(no_pseudo, tmp_path / "c", layers=("clusters",))
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_existing_folder_needs_overwrite(chips_with_pseudo: ChipSet, tmp_path: Path) -> None:
    out = tmp_path / "export"
    export_chip_set(chips_with_pseudo, out, layers=("truth",))
    with pytest.raises(FileExistsError, match="overwrite"):
        export_chip_set(chips_with_pseudo, out)
    again = export_chip_set(chips_with_pseudo, out, layers=("pseudo", "pseudo"), overwrite=True)
    assert again.files == N_CHIPS and again.layers == ("pseudo",)
    assert sorted(p.name for p in out.glob("*.tif")) == [
        f"{i:04d}_{chips_with_pseudo.tile_ids[i]}_pseudo.tif" for i in range(N_CHIPS)
    ]


def test_interrupted_export_leaves_nothing(
    chips_with_pseudo: ChipSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = chip_export.write_class_map

    def failing(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(chip_export, "write_class_map", failing)
    with pytest.raises(OSError, match="disk full"):
        export_chip_set(chips_with_pseudo, tmp_path / "export")
    assert list(tmp_path.iterdir()) == []


def test_export_chips_cli(chips_with_pseudo: ChipSet, tmp_path: Path) -> None:
    path = chips_with_pseudo.save(tmp_path / "chips.npz")
    out = tmp_path / "export"
    runner = CliRunner()
    res = runner.invoke(main, ["landcover", "export-chips", "--chips", str(path),
                               "--out-dir", str(out), "--layer", "pseudo"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["files"] == N_CHIPS and info["layers"] == ["pseudo"]
    assert (out / INDEX_NAME).is_file()
    again = runner.invoke(main, ["landcover", "export-chips", "--chips", str(path),
                                 "--out-dir", str(out)])
    assert again.exit_code != 0 and "overwrite" in again.output
