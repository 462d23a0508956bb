"""The run report: class painting, chip and tile figures, report.md with tables and links."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from matplotlib import image as mpimg

from landprior.landcover.chips import ChipSet, sample_city_chips
from landprior.landcover.classes import CLASS_COLORS, CLASS_NAMES
from landprior.landcover.enviroatlas import EnviroAtlas
from landprior.landcover.evaluate import metrics_row, write_csv_atomic
from landprior.landcover.geotiff import write_class_map
from landprior.landcover.report import (
    _read_for_figure,
    chip_figure,
    paint,
    tile_figure,
    tile_figure_for,
    write_report,
)
from tests.landcover.conftest import TARGET_CITY

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_paint_uses_the_class_colours() -> None:
    labels = np.array([[0, 1, 2], [3, 4, 255]], dtype=np.uint8)
    rgb = paint(labels)
    assert rgb.shape == (2, 3, 3)
    for (r, c), k in np.ndenumerate(labels):
        want = (0, 0, 0) if k == 255 else CLASS_COLORS[k]
        np.testing.assert_allclose(rgb[r, c] * 255, want, atol=1e-3)


@pytest.fixture(scope="module")
def run(tiny_dataset: EnviroAtlas, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A chip set with clusters and pseudo-labels, and two folders of class maps."""
    ds = tiny_dataset
    tmp = tmp_path_factory.mktemp("report")
    cs = sample_city_chips(ds, TARGET_CITY, "test", 3, size=32, factor=4, seed=0)
    rng = np.random.default_rng(0)
    clusters = rng.random((3, 5, 8, 8)).astype(np.float32)
    cs = cs.with_(clusters=clusters, pseudo=cs.weak.argmax(1).astype(np.uint8))
    chips = cs.save(tmp / "chips.npz")
    folders = {"source": tmp / "pred_source", "ours": tmp / "pred_ours"}
    for k, folder in enumerate(folders.values()):
        folder.mkdir()
        for tile in ds.tiles(TARGET_CITY, "test"):
            profile = ds.profile(tile, "naip")
            classes = np.full((profile["height"], profile["width"]), k + 3, np.uint8)
            write_class_map(folder / f"{tile.tile_id}_landcover.tif", classes,
                            crs=profile["crs"], transform=profile["transform"])
    return {"chips": chips, "root": Path(ds.root), **folders}


def test_chip_figure_writes_a_png(run: dict[str, Path], tmp_path: Path) -> None:
    preds = {"source": run["source"], "ours": run["ours"]}
    png = chip_figure(run["chips"], preds, tmp_path / "figs" / "chips.png", n=2, chip_size=32)
    assert png == tmp_path / "figs" / "chips.png" and _is_png(png)
    assert [p.name for p in png.parent.iterdir()] == ["chips.png"]  # no temp file left
    wide = mpimg.imread(png)
    narrow = mpimg.imread(chip_figure(run["chips"], {}, tmp_path / "few.png", n=2, chip_size=32))
    assert wide.shape[1] > narrow.shape[1]  # one column per prediction folder
    # each column shows its own folder: pointing "ours" at the source maps changes the figure
    again = mpimg.imread(chip_figure(run["chips"], preds, tmp_path / "again.png", n=2,
                                     chip_size=32))
    swapped = mpimg.imread(chip_figure(run["chips"], {"source": run["source"],
                                                      "ours": run["source"]},
                                       tmp_path / "swapped.png", n=2, chip_size=32))
    np.testing.assert_array_equal(again, wide)  # rendering is deterministic
    assert swapped.shape == wide.shape and not np.array_equal(swapped, wide)
    cs = ChipSet.load(run["chips"])
    cs.with_(pseudo=None).save(tmp_path / "nopseudo.npz")
    with pytest.raises(ValueError, match="holds no pseudo-labels"):
        chip_figure(tmp_path / "nopseudo.npz", preds, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_tile_figures_write_pngs(
    run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((4, 20, 30)).astype(np.float32)
    truth = rng.integers(0, 5, (20, 30)).astype(np.uint8)
    png = tile_figure(image, truth, {"a": truth, "b": np.full_like(truth, 255)},
                      tmp_path / "tile.png", title="t")
    assert _is_png(png)
    png2 = tile_figure_for(run["root"], TARGET_CITY, "test",
                           {"source": run["source"], "ours": run["ours"]}, tmp_path / "t2.png")
    assert _is_png(png2)
    # big tiles are read decimated for figures (memory of a figure, not of a tile)
    monkeypatch.setattr("landprior.landcover.report.FIGURE_MAX_SIDE", 50)
    png3 = tile_figure_for(run["root"], TARGET_CITY, "test", {"ours": run["ours"]},
                           tmp_path / "t4.png")
    assert _is_png(png3)
    classes = np.arange(120 * 70, dtype=np.uint8).reshape(120, 70) % 5
    small = _read_for_figure(
        write_class_map(tmp_path / "m.tif", classes, crs="EPSG:32617",
                        transform=Affine(1, 0, 500000, 0, -1, 4000000)), max_side=50)
    assert small.shape == (1, 40, 23)
    assert set(np.unique(small)) <= set(range(5))  # class values, never interpolated
    with pytest.raises(ValueError, match=r"no split 'val'"):
        tile_figure_for(run["root"], TARGET_CITY, "val", {}, tmp_path / "t3.png")


def test_write_report_tables_and_relative_links(tmp_path: Path) -> None:
    cities = ["synthgreen_nc-2012", "synthdry_tx-2012"]
    rows = []
    for i, city in enumerate(cities):
        for j, method in enumerate(["source supervised", "ours fine-tuned"]):
            ious = [0.5, float("nan"), 0.25, 0.75, 0.1 * (i + j)]
            rows.append(metrics_row(method, city, {
                "accuracy": 0.6 + 0.1 * j + 0.01 * i, "miou": 0.3 + 0.1 * j, "pixels": 100,
                "tiles": 1, "iou": dict(zip(CLASS_NAMES, ious, strict=True))}))
    csv = write_csv_atomic(rows, tmp_path / "results" / "metrics.csv")
    summary = tmp_path / "results" / "pseudo" / "green.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"city": cities[0], "chips": 64, "weak_label_accuracy": 70.1,
                                   "pseudo_label_accuracy": 75.2, "chips_per_second": 1.5}))
    figures = [tmp_path / "results" / "figures" / "green_chips.png"]
    figures[0].parent.mkdir(parents=True)
    figures[0].write_bytes(PNG_MAGIC)
    out = tmp_path / "results" / "report" / "report.md"
    md_path = write_report(csv, out, methods=["source supervised", "ours fine-tuned", "absent"],
                           cities=cities, pseudo_summaries=[summary], figures=figures,
                           extra="Notes go here.")
    assert md_path == out
    md = out.read_text()
    assert "| method | synthgreen_nc-2012 | synthdry_tx-2012 |" in md
    assert "| source supervised | 60.0 / 30.0 | 61.0 / 30.0 |" in md
    assert "| ours fine-tuned | 70.0 / 40.0 | 71.0 / 40.0 |" in md
    assert "| absent | - | - |" in md
    assert "| method | city | " + " | ".join(CLASS_NAMES) + " |" in md
    # NaN IoU (an absent class) shows as "-"
    assert "| source supervised | synthgreen_nc-2012 | 50.0 | - | 25.0 | 75.0 | 0.0 |" in md
    assert "| synthgreen_nc-2012 | 64 | 70.1 | 75.2 | 1.5 |" in md
    links = re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", md)
    assert links == [("green_chips", os.path.join("..", "figures", "green_chips.png"))]
    assert (out.parent / links[0][1]).resolve() == figures[0].resolve()
    assert md.rstrip().endswith("Notes go here.")
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.md"]
