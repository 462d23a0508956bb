"""Evaluation of class-map GeoTIFFs against a city's labels, and the results table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from landprior.landcover.classes import CLASS_NAMES
from landprior.landcover.enviroatlas import EnviroAtlas, Tile
from landprior.landcover.evaluate import (
    METRIC_COLUMNS,
    evaluate_class_maps,
    evaluate_weak_labels,
    metrics_row,
    one_decimal,
    read_metrics_csv,
    table1_markdown,
    write_csv_atomic,
)
from landprior.landcover.geotiff import write_class_map
from landprior.landcover.weak_labels import prior_from_uint8
from tests.landcover.conftest import SOURCE_CITY, TARGET_CITY


def _write(path: Path, classes: np.ndarray, ds: EnviroAtlas, tile: Tile, **grid: object) -> Path:
    profile = ds.profile(tile, "lc")
    return write_class_map(path, classes, crs=grid.get("crs", profile["crs"]),
                           transform=grid.get("transform", profile["transform"]))


def _manual_scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, int]:
    """Accuracy and class-mean IoU pooled over (pred, truth) pairs, written out by hand."""
    correct = total = 0
    inter = np.zeros(5)
    union = np.zeros(5)
    for pred, truth in pairs:
        keep = truth != 255
        p, t = pred[keep].astype(int), truth[keep].astype(int)
        correct += int((p == t).sum())
        total += t.size
        for k in range(5):
            inter[k] += np.sum((p == k) & (t == k))
            union[k] += np.sum((p == k) | (t == k))
    ious = [inter[k] / union[k] for k in range(5) if union[k] > 0]
    return correct / total, float(np.mean(ious)), total


def test_perfect_prediction_scores_100(tiny_dataset: EnviroAtlas, tmp_path: Path) -> None:
    ds = tiny_dataset
    tiles = ds.tiles(SOURCE_CITY, "train")  # two tiles: scores pool over both
    preds = {t: _write(tmp_path / f"{t.tile_id}.tif", ds.read_labels(t), ds, t) for t in tiles}
    scores = evaluate_class_maps(ds, preds)
    assert scores["accuracy"] == 1.0 and scores["miou"] == 1.0
    assert scores["tiles"] == 2
    truth = [ds.read_labels(t) for t in tiles]
    assert scores["pixels"] == sum(int((lab != 255).sum()) for lab in truth)
    cm = np.asarray(scores["confusion"])
    assert cm.shape == (5, 5) and cm.sum() == scores["pixels"]
    assert (cm == np.diag(np.diag(cm))).all()
    row = metrics_row("perfect", SOURCE_CITY, scores)
    assert row["accuracy"] == 100.0 and row["miou"] == 100.0
    # a string path works as well as a Path
    assert evaluate_class_maps(ds, {t: str(p) for t, p in preds.items()})["accuracy"] == 1.0


def test_scores_are_pooled_over_tiles(tiny_dataset: EnviroAtlas, tmp_path: Path) -> None:
    ds = tiny_dataset
    tiles = ds.tiles(SOURCE_CITY, "train")
    rng = np.random.default_rng(0)
    pairs, preds = [], {}
    for t in tiles:
        truth = ds.read_labels(t)
        pred = np.where(rng.random(truth.shape) < 0.3, rng.integers(0, 5, truth.shape),
                        np.where(truth == 255, 0, truth)).astype(np.uint8)
        preds[t] = _write(tmp_path / f"{t.tile_id}.tif", pred, ds, t)
        pairs.append((pred, truth))
    scores = evaluate_class_maps(ds, preds)
    acc, miou, total = _manual_scores(pairs)
    assert scores["accuracy"] == pytest.approx(acc)
    assert scores["miou"] == pytest.approx(miou)
    assert scores["pixels"] == total
    assert 0.5 < scores["accuracy"] < 0.95
    strict = evaluate_class_maps(ds, preds, mapping="strict")
    assert strict["pixels"] <= scores["pixels"]


def test_grid_crs_and_missing_file_errors(tiny_dataset: EnviroAtlas, tmp_path: Path) -> None:
    ds = tiny_dataset
    tile = ds.tiles(TARGET_CITY, "test")[0]
    truth = ds.read_labels(tile)
    t = ds.profile(tile, "lc")["transform"]
    # shifted by whole pixels (north, then east): same pixel array, wrong place on the ground
    for dx, dy in ((0, 3), (1, 0)):
        shifted = _write(tmp_path / f"shifted{dx}{dy}.tif", truth, ds, tile,
                         transform=Affine(t.a, t.b, t.c + dx, t.d, t.e, t.f + dy))
        with pytest.raises(ValueError, match=r"shifted..\.tif: grid .* differs from the labels'"):
            evaluate_class_maps(ds, {tile: shifted})
    cropped = _write(tmp_path / "cropped.tif", truth[:, :100], ds, tile)
    with pytest.raises(ValueError, match=r"cropped\.tif: grid 128x100"):
        evaluate_class_maps(ds, {tile: cropped})
    other_crs = _write(tmp_path / "crs.tif", truth, ds, tile, crs=CRS.from_epsg(32618))
    with pytest.raises(ValueError, match=r"crs\.tif: CRS .* differs from the labels' CRS"):
        evaluate_class_maps(ds, {tile: other_crs})
    with pytest.raises(FileNotFoundError, match=rf"prediction for {tile.key} not found: .*nope"):
        evaluate_class_maps(ds, {tile: tmp_path / "nope.tif"})
    with pytest.raises(ValueError, match="no predictions"):
        evaluate_class_maps(ds, {})


def test_evaluate_weak_labels(tiny_dataset: EnviroAtlas) -> None:
    ds = tiny_dataset
    tiles = ds.tiles(SOURCE_CITY, "train")
    scores = evaluate_weak_labels(ds, tiles)
    pairs = [(prior_from_uint8(ds.read(t, "prior")).argmax(0), ds.read_labels(t)) for t in tiles]
    acc, miou, total = _manual_scores(pairs)
    assert scores["accuracy"] == pytest.approx(acc)
    assert scores["miou"] == pytest.approx(miou)
    assert scores["pixels"] == total and scores["tiles"] == 2 and scores["unmapped_pixels"] == 0
    assert 0.2 < acc < 1.0
    other = evaluate_weak_labels(ds, tiles, weak_layer="prior_no_osm_no_buildings")
    assert other["pixels"] == total
    with pytest.raises(ValueError, match="no tiles"):
        evaluate_weak_labels(ds, [])


# --------------------------------------------------------------------------- table


def _scores(acc: float, miou: float, ious: list[float]) -> dict:
    return {"accuracy": acc, "miou": miou, "pixels": 1234, "tiles": 2,
            "iou": dict(zip(CLASS_NAMES, ious, strict=True))}


def test_metrics_row_percent_and_nan() -> None:
    row = metrics_row("ours", "c", _scores(0.123456, 0.5, [0.1, float("nan"), 0.33333, 1, 0]))
    assert row == {
        "method": "ours", "city": "c", "accuracy": 12.35, "miou": 50.0, "pixels": 1234,
        "tiles": 2, "iou_water": 10.0, "iou_impervious": "", "iou_barren": 33.33,
        "iou_trees": 100, "iou_grass": 0,
    }
    assert set(row) == set(METRIC_COLUMNS)


def test_csv_round_trip_and_errors(tmp_path: Path) -> None:
    rows = [
        metrics_row("a", "city1", _scores(0.8, 0.4, [0.5, 0.2, float("nan"), 0.7, 0.2])),
        metrics_row("b", "city1", _scores(0.9, 0.6, [0.6, 0.3, 0.4, 0.8, 0.9])),
    ]
    path = write_csv_atomic(rows, tmp_path / "out" / "metrics.csv")
    assert path.read_text().splitlines()[0] == ",".join(METRIC_COLUMNS)
    back = read_metrics_csv(path)
    assert len(back) == 2
    for got, want in zip(back, rows, strict=True):
        assert got == {k: str(v) for k, v in want.items()}
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.csv"]
    # an unknown key fails before anything is written; the old file stays
    with pytest.raises(ValueError, match="extra_column"):
        write_csv_atomic([{**rows[0], "extra_column": 1}], path)
    assert len(read_metrics_csv(path)) == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.csv"]
    bad = tmp_path / "bad.csv"
    bad.write_text("method,city,accuracy\nx,y,1\n")
    with pytest.raises(ValueError, match=r"bad\.csv lacks the columns .*'miou'"):
        read_metrics_csv(bad)


def test_table1_markdown_format() -> None:
    rows = [
        {"method": "source supervised", "city": "durham", "accuracy": "74.2", "miou": "35.94"},
        {"method": "ours", "city": "durham", "accuracy": 79.84, "miou": 46.36},
        {"method": "ours", "city": "austin", "accuracy": "79.5", "miou": "45.4"},
    ]
    md = table1_markdown(rows, ["source supervised", "ours"], ["durham", "austin"])
    assert md == (
        "| method | durham | austin |\n"
        "|---|---|---|\n"
        "| source supervised | 74.2 / 35.9 | - |\n"
        "| ours | 79.8 / 46.4 | 79.5 / 45.4 |\n"
    )


def test_one_decimal_rounds_the_csv_text_half_up() -> None:
    # 66.85 as a float is 66.8499...: f"{66.85:.1f}" gives 66.8, a reader of the CSV 66.9
    assert f"{66.85:.1f}" == "66.8"
    assert [one_decimal(v) for v in ("66.85", 47.55, "52.55", 75.84, "100", "-0.05")] == [
        "66.9", "47.6", "52.6", "75.8", "100.0", "-0.1"
    ]
    assert one_decimal("") == "-" and one_decimal(float("nan")) == "-"


def test_bad_prediction_values_name_the_tile_and_unknown_truth_codes_warn(
    tiny_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    import rasterio

    ds = EnviroAtlas(shutil.copytree(tiny_root, tmp_path / "ds"))
    tile = ds.tiles(TARGET_CITY, "test")[0]
    truth = ds.read_labels(tile)
    bad = truth.copy()
    bad[bad != 255] = 4
    bad[0, 0] = 9  # not a class; pixel (0, 0) must be a scored one
    assert truth[0, 0] != 255
    path = tmp_path / "bad.tif"
    profile = ds.profile(tile, "lc")
    with rasterio.open(path, "w", driver="GTiff", height=bad.shape[0], width=bad.shape[1],
                       count=1, dtype="uint8", crs=profile["crs"],
                       transform=profile["transform"]) as dst:
        dst.write(bad[None])
    expected = rf"bad\.tif \(tile {tile.key}\): prediction has labels \[9\]"
    with pytest.raises(ValueError, match=expected):
        evaluate_class_maps(ds, {tile: path})
    # raw label codes outside the EnviroAtlas table: not scored, and said so
    lc = ds.path(tile, "lc")
    with rasterio.open(lc) as src:
        lc_profile, raw = src.profile, src.read()
    raw[:, :32] = 77
    with rasterio.open(lc, "w", **lc_profile) as dst:
        dst.write(raw)
    perfect = _write(tmp_path / "p.tif", ds.read_labels(tile), ds, tile)
    with caplog.at_level("WARNING", logger="landprior.landcover.evaluate"):
        scores = evaluate_class_maps(ds, {tile: perfect})
    assert scores["accuracy"] == 1.0
    assert scores["pixels"] == int((ds.read_labels(tile) != 255).sum())
    (message,) = [r.getMessage() for r in caplog.records]
    assert f"tile {tile.key}: {32 * raw.shape[2]} labelled pixels carry codes [77]" in message


def test_map_nodata_on_labelled_pixels_is_left_out_and_counted(
    tiny_dataset: EnviroAtlas, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A map with a no-data collar (imagery without data there) over labelled ground: those
    pixels are not scored, counted in ``unmapped_pixels`` and warned about - the rest is
    scored as usual (here: perfectly)."""
    ds = tiny_dataset
    tile = ds.tiles(TARGET_CITY, "test")[0]
    truth = ds.read_labels(tile)
    pred = truth.copy()
    pred[:, :10] = 255
    path = _write(tmp_path / "collar.tif", pred, ds, tile)
    with caplog.at_level("WARNING", logger="landprior.landcover.evaluate"):
        scores = evaluate_class_maps(ds, {tile: path})
    unmapped = int((truth[:, :10] != 255).sum())
    assert unmapped > 0 and scores["unmapped_pixels"] == unmapped
    assert scores["accuracy"] == 1.0
    assert scores["pixels"] == int((truth != 255).sum()) - unmapped
    (message,) = [r.getMessage() for r in caplog.records]
    assert f"tile {tile.key}: {unmapped} labelled pixels are no data (255) in {path}" in message
    perfect = _write(tmp_path / "perfect.tif", truth, ds, tile)
    assert evaluate_class_maps(ds, {tile: perfect})["unmapped_pixels"] == 0
