"""Synthetic cities: written in the EnviroAtlas layout, read back through the reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pyproj import Transformer
from shapely.geometry import Polygon

from landprior.cli import main
from landprior.landcover import synthetic
from landprior.landcover.classes import ENVIROATLAS_RAW_NAMES, remap
from landprior.landcover.enviroatlas import EnviroAtlas
from landprior.landcover.weak_labels import (
    estimate_cooccurrence,
    prior_to_uint8,
    weak_label_prior,
)

SOURCE, GREEN, DRY, DESERT = synthetic.CITY_NAMES


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "tiny", size="tiny")


@pytest.fixture(scope="module")
def ds(root: Path) -> EnviroAtlas:
    return EnviroAtlas(root)


def test_plan() -> None:
    plan = synthetic.plan_tiles("small")
    per_city = {c: [p for p in plan if p.city.name == c] for c in synthetic.CITY_NAMES}
    assert [p.split for p in per_city[SOURCE]] == ["train"] * 4 + ["val", "test"]
    for target in (GREEN, DRY, DESERT):
        assert [p.split for p in per_city[target]] == ["test"] * 3
    assert {p.size for p in plan} == {512}
    assert len({(p.city.name, p.tile_id) for p in plan}) == len(plan)
    assert len({c.epsg for c in synthetic.CITIES}) == 4  # one UTM zone per city
    with pytest.raises(ValueError, match="expected one of"):
        synthetic.plan_tiles("huge")  # type: ignore[arg-type]


def test_layout_read_back(ds: EnviroAtlas) -> None:
    assert ds.cities == synthetic.CITY_NAMES
    assert ds.roles == {SOURCE: "source", GREEN: "target", DRY: "target", DESERT: "target"}
    assert ds.splits(SOURCE) == ("train", "val", "test")
    for target in (GREEN, DRY, DESERT):
        assert ds.splits(target) == ("test",)
    assert len(ds.tiles(SOURCE, "train")) == 2
    epsg = {c.name: c.epsg for c in synthetic.CITIES}
    for tile in ds:
        folder = tile.paths["naip"].parent.name
        assert folder == f"{tile.city}_1m-{tile.split}_tiles-debuffered"
        grid = ds.grid(tile)  # every layer present, right bands/dtype, one grid
        assert grid.crs.to_epsg() == epsg[tile.city]
        assert (grid.height, grid.width) == (128, 128) and grid.transform.a == 1.0
        for name, spec in ds.layout.layers.items():
            path = tile.paths[name]
            assert path.name == f"{tile.tile_id}_{spec.suffix}.tif"
            data = ds.read(tile, name)
            assert data.shape[0] == spec.bands and data.dtype == np.uint8
            if spec.values is not None:
                assert set(np.unique(data).tolist()) <= set(spec.values), name


def test_layer_contents(ds: EnviroAtlas) -> None:
    for tile in ds:
        lc = ds.read(tile, "lc")[0]
        assert set(np.unique(lc).tolist()) <= set(ENVIROATLAS_RAW_NAMES) - {0}
        naip = ds.read(tile, "naip")
        assert naip.std() > 10  # real texture, not a flat fill
        for name in ("prior", "prior_no_osm_no_buildings"):
            total = ds.read(tile, name).astype(int).sum(0)
            assert np.abs(total - 255).max() <= 4  # x255 probabilities, rounded per band
        water, ways, bodies = (ds.read(tile, n)[0] for n in ("water", "waterways", "waterbodies"))
        np.testing.assert_array_equal(water, ways | bodies)
        # OSM-like layers agree with the labels where they say something
        roads, buildings = ds.read(tile, "roads")[0], ds.read(tile, "buildings")[0]
        assert (lc[roads == 1] == 20).all()
        if buildings.any():
            assert (lc[buildings == 1] == 20).mean() > 0.8


def test_index_footprints_contain_tiles(ds: EnviroAtlas) -> None:
    assert ds.layout.index_crs == "EPSG:3857"
    for tile in ds:
        grid = ds.grid(tile, ["naip"])
        left, bottom, right, top = grid.bounds
        t = np.linspace(0.0, 1.0, 9)
        along_x, along_y = left + (right - left) * t, bottom + (top - bottom) * t
        xs = np.concatenate([along_x, np.full(9, right), along_x[::-1], np.full(9, left)])
        ys = np.concatenate([np.full(9, bottom), along_y, np.full(9, top), along_y[::-1]])
        to_web = Transformer.from_crs(grid.crs, "EPSG:3857", always_xy=True)
        footprint = Polygon(zip(*to_web.transform(xs, ys), strict=True))
        assert tile.geometry.buffer(1e-6).contains(footprint)
        assert tile.geometry.area < footprint.area * 1.05  # and not much more


def test_cooccurrence_from_source_train_only(ds: EnviroAtlas, root: Path) -> None:
    train = ds.tiles(SOURCE, "train")
    cooc = estimate_cooccurrence(
        [ds.read(t, "nlcd")[0] for t in train], [ds.read_labels(t) for t in train]
    )
    meta = json.loads((root / "synthetic.json").read_text())
    np.testing.assert_allclose(np.array(meta["cooccurrence"]), cooc, atol=1e-6)
    assert SOURCE in meta["cooccurrence_source"] and "train" in meta["cooccurrence_source"]
    # the same matrix is behind the prior layers of every city (here: the desert)
    tile = ds.tiles(DESERT)[0]
    nlcd, roads, water, bld = (ds.read(tile, n)[0] for n in ("nlcd", "roads", "water", "buildings"))
    expected = prior_to_uint8(weak_label_prior(nlcd, cooc, roads=roads, water=water, buildings=bld))
    assert np.abs(ds.read(tile, "prior").astype(int) - expected).max() <= 1
    plain = prior_to_uint8(weak_label_prior(nlcd, cooc))
    assert np.abs(ds.read(tile, "prior_no_osm_no_buildings").astype(int) - plain).max() <= 1


def _mix(city: str, n: int = 3, size: int = 256) -> np.ndarray:
    style = next(c for c in synthetic.CITIES if c.name == city)
    labels = [
        remap(synthetic.generate_tile(style, size, np.random.default_rng([7, i])).labels)
        for i in range(n)
    ]
    counts = sum(np.bincount(lab[lab < 5], minlength=5) for lab in labels)
    return counts / counts.sum()


def test_city_class_mixes(root: Path) -> None:
    meta = json.loads((root / "synthetic.json").read_text())
    for city in meta["cities"].values():
        assert abs(sum(city["class_fractions"].values()) - 1) < 1e-3
    # water, impervious, barren, trees, grass over a few 256 px tiles per city
    source, desert = _mix(SOURCE), _mix(DESERT)
    assert desert[2] > 0.25 and source[2] < 0.05  # lots of barren in the desert only
    assert desert[3] < 0.5 * source[3]  # few trees
    assert desert[0] < 0.05  # little water
    assert source[3] > 0.15 and source[4] > 0.15 and source[1] > 0.15


def test_appearance_shift(ds: EnviroAtlas) -> None:
    """A pixel classifier fitted on the source city fails on the desert city."""
    from sklearn.neighbors import KNeighborsClassifier

    def pixels(city: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for tile in ds.tiles(city, split):
            xs.append(ds.read(tile, "naip").reshape(4, -1).T.astype(np.float32))
            ys.append(ds.read_labels(tile).ravel())
        x, y = np.concatenate(xs), np.concatenate(ys)
        return x[y < 5], y[y < 5]

    x, y = pixels(SOURCE, "train")
    pick = np.random.default_rng(0).choice(len(y), 4000, replace=False)
    knn = KNeighborsClassifier(15).fit(x[pick], y[pick])

    def scores(city: str) -> tuple[float, float]:
        x, y = pixels(city, "test")
        keep = np.random.default_rng(1).choice(len(y), min(len(y), 6000), replace=False)
        x, y = x[keep], y[keep]
        pred = knn.predict(x)
        present = [c for c in range(5) if ((pred == c) | (y == c)).any()]
        ious = [((pred == c) & (y == c)).sum() / ((pred == c) | (y == c)).sum() for c in present]
        return float((pred == y).mean()), float(np.mean(ious))

    (acc_src, iou_src), (acc_des, iou_des) = scores(SOURCE), scores(DESERT)
    assert acc_src > 0.9 and iou_src > 0.7, (acc_src, iou_src)
    assert acc_src - acc_des > 0.3 and iou_src - iou_des > 0.4, (acc_des, iou_des)


def test_desert_sensor_calibration(ds: EnviroAtlas) -> None:
    """The desert's calibrated sensor (synthetic.py): a bright NIR band over visible bands
    kept at the source city's level, and under 1 % of any band clipped at 0 or 255 (the
    rule it was chosen by)."""

    def bands(city: str) -> np.ndarray:
        return np.concatenate(
            [ds.read(t, "naip").reshape(4, -1) for t in ds.tiles(city)], axis=1
        )

    source, desert = bands(SOURCE), bands(DESERT)
    src_mean, des_mean = source.mean(1), desert.mean(1)
    assert des_mean[3] > 1.4 * src_mean[3], (src_mean, des_mean)
    assert (np.abs(des_mean[:3] - src_mean[:3]) < 0.3 * src_mean[:3]).all(), (src_mean, des_mean)
    # NIR over the visible bands' mean: ~1.3 in the source, ~2 in the desert
    ratio = lambda m: m[3] / m[:3].mean()  # noqa: E731
    assert ratio(des_mean) > ratio(src_mean) + 0.5, (src_mean, des_mean)
    clipped = ((desert == 0) | (desert == 255)).mean(1)
    assert (clipped < 0.01).all(), clipped


def test_deterministic_per_seed(tmp_path: Path, root: Path) -> None:
    again = synthetic.write_synthetic_dataset(tmp_path / "again", size="tiny", seed=0)
    for rel in (
        "spatial_index.geojson",
        "synthetic.json",
        "synthdesert_az-2010_1m-test_tiles-debuffered/3311201_nw_a_naip.tif",
        "synthsource_pa-2010_1m-train_tiles-debuffered/4007901_nw_prior_from_cooccurrences_101_31.tif",
    ):
        assert (again / rel).read_bytes() == (root / rel).read_bytes(), rel
    style = synthetic.CITIES[0]
    a, b, c = (
        synthetic.generate_tile(style, 64, np.random.default_rng(seed)) for seed in (0, 0, 1)
    )
    np.testing.assert_array_equal(a.naip, b.naip)
    assert not np.array_equal(a.naip, c.naip)


def test_atomic_and_refuses_to_clobber(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        synthetic.write_synthetic_dataset(out, size="tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]

    calls = {"n": 0}
    real = synthetic.generate_tile

    def failing(*args: object, **kwargs: object) -> synthetic.TileArrays:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(synthetic, "generate_tile", failing)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="disk on fire"):
        synthetic.write_synthetic_dataset(fresh, size="tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no half-written dataset
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="disk on fire"):
        synthetic.write_synthetic_dataset(out, size="tiny", overwrite=True)
    assert (out / "keep.txt").read_text() == "precious"  # the old one survives a failure
    monkeypatch.setattr(synthetic, "generate_tile", real)
    synthetic.write_synthetic_dataset(out, size="tiny", overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "spatial_index.geojson").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected one of"):
        synthetic.write_synthetic_dataset(tmp_path / "x", size="large")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        synthetic.write_synthetic_dataset(tmp_path / "x", seed=-1)
    assert list(tmp_path.iterdir()) == []


def test_cli_info_and_synth(root: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["data", "info", str(root), "--validate"])
    assert result.exit_code == 0, result.output
    assert "synthdesert_az-2010" in result.output and "EPSG:26912" in result.output
    assert "validated 7 tiles" in result.output
    result = runner.invoke(main, ["data", "info", str(root), "--json"])
    rows = json.loads(result.output)["splits"]
    assert {(r["city"], r["split"]): r["tiles"] for r in rows}[(SOURCE, "train")] == 2
    result = runner.invoke(main, ["data", "synth", "--out", str(root), "--size", "tiny"])
    assert result.exit_code != 0 and "--overwrite" in result.output
    result = runner.invoke(main, ["data", "info", str(tmp_path)])
    assert result.exit_code != 0 and "landprior data synth" in result.output
