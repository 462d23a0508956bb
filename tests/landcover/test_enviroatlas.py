"""The declarative EnviroAtlas reader on a tiny dataset made here, and its bad-input errors."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window
from shapely.geometry import box

from landprior.landcover import classes as cls
from landprior.landcover.enviroatlas import (
    DataError,
    EnviroAtlas,
    LayerSpec,
    Layout,
    MissingLayerError,
    load_manifest,
)

SIZE = 40
# (city, split, tile id, EPSG, origin)
TILES = [
    ("alpha_pa-2010", "train", "4007901_nw", 26917, (585_000.0, 4_477_000.0)),
    ("alpha_pa-2010", "test", "4007901_ne", 26917, (585_100.0, 4_477_000.0)),
    ("beta_az-2010", "test", "3311201_nw", 26912, (400_000.0, 3_700_000.0)),
]


def _layer_data(name: str, spec: LayerSpec, rng: np.random.Generator) -> np.ndarray:
    shape = (spec.bands, SIZE, SIZE)
    if name == "lc":
        codes = np.array(sorted(cls.ENVIROATLAS_RAW_NAMES), np.uint8)
        return codes[rng.integers(0, len(codes), shape)]
    if name == "nlcd":
        return rng.integers(0, 17, shape).astype(np.uint8)
    if spec.kind == "mask":
        return rng.integers(0, 2, shape).astype(np.uint8)
    return rng.integers(0, 256, shape).astype(np.uint8)


def make_dataset(root: Path, *, with_prior_properties: bool = False) -> Path:
    """A three-tile dataset in the EnviroAtlas layout (torchgeo tests/data style)."""
    layout = Layout.from_manifest("enviroatlas")
    rng = np.random.default_rng(0)
    rows, geoms = [], []
    for city, split, tile_id, epsg, (x0, y0) in TILES:
        transform = from_origin(x0, y0, 1.0, 1.0)
        row = {"split": layout.split_value(city, split)}
        for name, spec in layout.layers.items():
            rel = layout.relative_path(city, split, tile_id, name)
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(
                path, "w", driver="GTiff", width=SIZE, height=SIZE, count=spec.bands,
                dtype=spec.dtype, crs=f"EPSG:{epsg}", transform=transform,
            ) as dst:  # fmt: skip
                dst.write(_layer_data(name, spec, rng))
            if spec.property and (with_prior_properties or spec.kind != "probabilities"):
                row[spec.property] = rel
        rows.append(row)
        footprint = gpd.GeoSeries([box(x0, y0 - SIZE, x0 + SIZE, y0)], crs=f"EPSG:{epsg}")
        geoms.append(footprint.to_crs("EPSG:3857").envelope.iloc[0])
    gpd.GeoDataFrame(rows, geometry=geoms, crs="EPSG:3857").to_file(
        root / "spatial_index.geojson", driver="GeoJSON"
    )
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "enviroatlas_lotp")


@pytest.fixture
def ds(root: Path) -> EnviroAtlas:
    return EnviroAtlas(root)


def _rewrite(path: Path, **changes: object) -> None:
    with rasterio.open(path) as src:
        profile, data = dict(src.profile), src.read()
    count = int(changes.pop("count", profile["count"]))
    profile.update(changes, count=count)
    data = np.resize(data, (count, *data.shape[1:])).astype(profile["dtype"])
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


# --- the manifest ------------------------------------------------------------------------
def test_manifest_agrees_with_class_table() -> None:
    m = load_manifest("enviroatlas")
    assert tuple(m["classes"]["names"]) == cls.CLASS_NAMES
    assert [tuple(c) for c in m["classes"]["colors"]] == list(cls.CLASS_COLORS)
    assert m["classes"]["ignore_index"] == cls.IGNORE_INDEX
    for name in cls.MAPPING_NAMES:
        assert m["mappings"][name] == cls.ENVIROATLAS_MAPPINGS[name]
    assert tuple(row["code"] for row in m["nlcd_index"]) == cls.NLCD_CODES
    assert [row["index"] for row in m["nlcd_index"]] == list(range(17))
    assert {int(k) for k in m["raw_classes"]} == set(cls.ENVIROATLAS_RAW_NAMES)
    md5s = {c["md5"] for c in m["archive"]["md5"]}
    assert {"bfe601be21c7c001315fc6154be8ef14", "6142f8d1ebfc7f8ad888337f0683dc7a"} <= md5s
    assert all(c["version"] for c in m["archive"]["md5"])


def test_layout_from_manifest() -> None:
    layout = Layout.from_manifest("enviroatlas")
    assert layout.layer_names == (
        "naip", "nlcd", "roads", "water", "waterways", "waterbodies", "buildings", "lc",
        "prior", "prior_no_osm_no_buildings",
    )  # fmt: skip
    assert layout.layer("a_naip").bands == 4 and layout.layer("naip").dtype == "uint8"
    assert layout.layer("prior").bands == 5
    assert layout.parse_split("pittsburgh_pa-2010_1m-train") == ("pittsburgh_pa-2010", "train")
    assert layout.relative_path("austin_tx-2012", "test", "3009726_sw", "prior") == (
        "austin_tx-2012_1m-test_tiles-debuffered/3009726_sw_prior_from_cooccurrences_101_31.tif"
    )
    with pytest.raises(ValueError, match="expected one of"):
        layout.layer("landsat")
    with pytest.raises(DataError, match="does not match"):
        layout.parse_split("pittsburgh-train")


# --- listing and reading -----------------------------------------------------------------
def test_open_root_or_download_folder(root: Path) -> None:
    a, b = EnviroAtlas(root), EnviroAtlas(root.parent)
    assert a.root == b.root == root
    with pytest.raises(FileNotFoundError, match="landprior data"):
        EnviroAtlas(root / "alpha_pa-2010_1m-train_tiles-debuffered")


def test_listing(ds: EnviroAtlas) -> None:
    assert ds.cities == ("alpha_pa-2010", "beta_az-2010")
    assert ds.splits("alpha_pa-2010") == ("train", "test")
    assert len(ds) == 3
    assert [t.tile_id for t in ds.tiles(split="test")] == ["4007901_ne", "3311201_nw"]
    tile = ds.tile("3311201_nw")
    assert tile.city == "beta_az-2010" and tile.key == "beta_az-2010/test/3311201_nw"
    assert len(set(ds.tiles())) == 3  # tiles are hashable (city, split, id)
    with pytest.raises(ValueError, match="expected one of"):
        ds.tiles("gamma_tx-2012")
    with pytest.raises(ValueError, match="no split 'val'"):
        ds.tiles("beta_az-2010", "val")
    rows = ds.summary()
    assert [(r["city"], r["split"], r["tiles"]) for r in rows] == [
        ("alpha_pa-2010", "train", 1),
        ("alpha_pa-2010", "test", 1),
        ("beta_az-2010", "test", 1),
    ]
    assert rows[2]["crs"] == "EPSG:26912"


def test_read_layers_and_windows(ds: EnviroAtlas) -> None:
    tile = ds.tiles("alpha_pa-2010", "train")[0]
    for name, spec in ds.layout.layers.items():
        data = ds.read(tile, name)
        assert data.shape == (spec.bands, SIZE, SIZE) and data.dtype == spec.dtype
    naip = ds.read(tile, "naip")
    part = ds.read(tile, "a_naip", Window(5, 10, 20, 15))
    np.testing.assert_array_equal(part, naip[:, 10:25, 5:25])
    with pytest.raises(DataError, match="outside the tile"):
        ds.read(tile, "naip", Window(30, 30, 20, 20))
    grid = ds.grid(tile)
    assert grid.crs.to_epsg() == 26917 and (grid.height, grid.width) == (SIZE, SIZE)
    assert ds.validate() == 3


def test_read_labels_remaps(ds: EnviroAtlas) -> None:
    tile = ds.tiles()[0]
    raw = ds.read(tile, "lc")[0]
    prior = ds.read_labels(tile)
    strict = ds.read_labels(tile, mapping="strict")
    np.testing.assert_array_equal(prior, cls.remap(raw, "prior"))
    assert (prior[raw == 52] == 3).all() and (strict[raw == 52] == 255).all()
    assert (prior[raw == 0] == 255).all()
    with pytest.raises(ValueError, match="expected one of"):
        ds.read_labels(tile, mapping="bogus")


def test_prior_paths_come_from_the_pattern(tmp_path: Path) -> None:
    # the real index has no prior properties; a synthetic one may: both resolve the same
    a = EnviroAtlas(make_dataset(tmp_path / "a"))
    b = EnviroAtlas(make_dataset(tmp_path / "b", with_prior_properties=True))
    for ta, tb in zip(a.tiles(), b.tiles(), strict=True):
        assert ta.paths["prior"].relative_to(a.root) == tb.paths["prior"].relative_to(b.root)
        assert ta.paths["prior"].exists()


def test_index_footprints_contain_tiles(ds: EnviroAtlas) -> None:
    from pyproj import Transformer

    for tile in ds.tiles():
        grid = ds.grid(tile, ["naip"])
        left, bottom, right, top = grid.bounds
        to_web = Transformer.from_crs(grid.crs, "EPSG:3857", always_xy=True)
        xs, ys = to_web.transform([left, right, right, left], [bottom, bottom, top, top])
        for x, y in zip(xs, ys, strict=True):
            assert tile.geometry.buffer(1e-6).contains(box(x, y, x, y).centroid)


def test_open_xarray_is_lazy_and_equal(ds: EnviroAtlas) -> None:
    import dask.array as da

    tile = ds.tiles()[0]
    lazy = ds.open_xarray(tile, ["naip", "lc", "prior"], chunks=16)
    assert isinstance(lazy["naip"].data, da.Array)
    assert lazy["naip"].data.chunksize == (4, 16, 16)
    assert list(lazy["naip"]["band_naip"].values) == ["red", "green", "blue", "nir"]
    assert lazy.rio.crs.to_epsg() == 26917
    np.testing.assert_array_equal(lazy["naip"].values, ds.read(tile, "naip"))
    np.testing.assert_array_equal(lazy["lc"].values, ds.read(tile, "lc"))
    assert lazy.attrs["tile_id"] == tile.tile_id
    eager = ds.open_xarray(tile, ["naip"], chunks=None)
    assert isinstance(eager["naip"].data, np.ndarray)


# --- bad input ---------------------------------------------------------------------------
def test_missing_layer_names_the_file(ds: EnviroAtlas) -> None:
    tile = ds.tiles()[0]
    path = tile.paths["buildings"]
    path.unlink()
    with pytest.raises(MissingLayerError, match=path.name) as err:
        ds.read(tile, "buildings")
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(MissingLayerError, match=path.name):
        ds.validate()


def test_wrong_band_count(ds: EnviroAtlas) -> None:
    tile = ds.tiles()[0]
    _rewrite(tile.paths["naip"], count=3)
    with pytest.raises(DataError, match=r"a_naip\.tif.*3 band\(s\); expected 4"):
        ds.read(tile, "naip")


def test_wrong_dtype(ds: EnviroAtlas) -> None:
    tile = ds.tiles()[0]
    _rewrite(tile.paths["prior"], dtype="float32")
    with pytest.raises(
        DataError, match=r"prior_from_cooccurrences_101_31\.tif.*float32; expected uint8"
    ):
        ds.read(tile, "prior")


def test_layers_on_different_grids(ds: EnviroAtlas) -> None:
    tile = ds.tiles()[0]
    _rewrite(tile.paths["nlcd"], transform=from_origin(585_003.0, 4_477_000.0, 1.0, 1.0))
    with pytest.raises(DataError, match=r"b_nlcd\.tif.*is not on the grid of"):
        ds.grid(tile)
    with pytest.raises(DataError, match="not on the grid"):
        ds.open_xarray(tile)


def test_layers_in_different_crs(ds: EnviroAtlas) -> None:
    tile = ds.tiles()[0]
    _rewrite(tile.paths["lc"], crs="EPSG:26918")
    with pytest.raises(DataError, match=r"h_highres_labels\.tif is in EPSG:26918.*one CRS"):
        ds.grid(tile)


def test_corrupt_file_names_the_file(ds: EnviroAtlas) -> None:
    tile = ds.tiles()[0]
    path = tile.paths["roads"]
    path.write_bytes(b"II*\x00 this is not a tiff")
    with pytest.raises(DataError, match=path.name):
        ds.read(tile, "roads")
    with pytest.raises(DataError, match=path.name):
        ds.grid(tile)


def test_truncated_file_names_the_file(ds: EnviroAtlas) -> None:
    tile = ds.tiles()[0]
    path = tile.paths["naip"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=path.name):
        ds.read(tile, "naip")


def test_bad_index(root: Path) -> None:
    index = root / "spatial_index.geojson"
    frame = gpd.read_file(index)
    frame.to_crs("EPSG:4326").to_file(index, driver="GeoJSON")
    with pytest.raises(DataError, match=r"index CRS .*expected EPSG:3857"):
        EnviroAtlas(root)
    frame["split"] = "not-a-split"
    frame.to_file(index, driver="GeoJSON")
    with pytest.raises(DataError, match="'not-a-split' does not match"):
        EnviroAtlas(root)
    index.write_text("{ not json")
    with pytest.raises(DataError, match="spatial index"):
        EnviroAtlas(root)
