"""GeoTIFF output: COG class maps and probabilities reopened and checked; atomic writes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from landprior.landcover import geotiff
from landprior.landcover.classes import CHESAPEAKE_MAPPING, CLASS_COLORS, CLASS_NAMES, remap
from tests.conftest import shared_data_path

CRS = "EPSG:26917"
TRANSFORM = from_origin(585_000.0, 4_477_000.0, 1.0, 1.0)


@pytest.fixture
def classes() -> np.ndarray:
    rng = np.random.default_rng(0)
    # blocky classes so that mode overviews are meaningful, plus a nodata strip
    coarse = rng.integers(0, 5, (20, 25)).astype(np.uint8)
    out = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)  # 160 x 200
    out[:6] = 255
    return out


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_class_map_roundtrip(tmp_path: Path, classes: np.ndarray) -> None:
    path = geotiff.write_class_map(tmp_path / "lc.tif", classes, crs=CRS, transform=TRANSFORM)
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 26917
        assert src.transform.almost_equals(TRANSFORM)
        assert src.nodata == 255
        assert src.dtypes == ("uint8",)
        assert src.profile["tiled"]
        assert src.profile["compress"] == "deflate"
        assert src.overviews(1) == [2]  # 200 px: one level above the 64 px floor
        assert src.descriptions == ("land cover class",)
        cmap = src.colormap(1)
        np.testing.assert_array_equal(src.read(1), classes)
        if geotiff.cog_driver_available():
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        overview = src.read(1, out_shape=(80, 100))
    for value, rgb in enumerate(CLASS_COLORS):
        assert cmap[value] == (*rgb, 255)
    assert cmap[255][3] == 0  # nodata transparent
    # mode resampling never invents a value between classes
    assert set(np.unique(overview)) <= set(range(5)) | {255}
    assert geotiff.read_categories(path) == CLASS_NAMES
    aux = ET.parse(tmp_path / "lc.tif.aux.xml").getroot()
    cats = [c.text for c in aux.findall("./PAMRasterBand/CategoryNames/Category")]
    assert tuple(cats) == CLASS_NAMES
    rows = aux.findall("./PAMRasterBand/GDALRasterAttributeTable/Row")
    assert [r.findall("F")[1].text for r in rows] == list(CLASS_NAMES)
    back = geotiff.read_class_map(path)
    assert back.names == CLASS_NAMES and back.nodata == 255
    assert _leftovers(tmp_path) == ["lc.tif", "lc.tif.aux.xml"]


def test_gdal_reads_the_sidecar(tmp_path: Path, classes: np.ndarray) -> None:
    path = geotiff.write_class_map(tmp_path / "lc.tif", classes, crs=CRS, transform=TRANSFORM)
    with rasterio.open(path) as src:
        assert str(path) + ".aux.xml" in src.files  # GDAL PAM picked up the categories


def test_gtiff_fallback_without_cog(tmp_path: Path, classes: np.ndarray) -> None:
    path = geotiff.write_class_map(
        tmp_path / "lc.tif", classes, crs=CRS, transform=TRANSFORM, cog=False
    )
    with rasterio.open(path) as src:
        assert src.overviews(1) == [2]
        assert src.profile["tiled"] and src.nodata == 255
        np.testing.assert_array_equal(src.read(1), classes)


def test_probabilities(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    p = rng.random((5, 96, 130)).astype(np.float32)
    p /= p.sum(0)
    path = geotiff.write_probabilities(tmp_path / "p.tif", p, crs=CRS, transform=TRANSFORM)
    with rasterio.open(path) as src:
        assert src.count == 5 and src.dtypes == ("uint8",) * 5
        assert src.descriptions == tuple(f"p({n})" for n in CLASS_NAMES)
        assert src.overviews(1) == [2]
        assert src.crs.to_epsg() == 26917
        # band scale 1/255 survives the COG copy: GIS tools show probabilities in [0, 1]
        assert src.scales == pytest.approx((1 / 255,) * 5) and src.offsets == (0.0,) * 5
        stored = src.read()
    np.testing.assert_array_equal(stored, np.rint(p * 255).astype(np.uint8))


def test_write_raster_generic_and_windowed(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    data = rng.integers(0, 255, (4, 150, 170), dtype=np.uint8)
    profile = {"crs": CRS, "transform": TRANSFORM, "dtype": "uint8", "nodata": None}
    geotiff.write_raster(tmp_path / "naip.tif", data, profile, band_descriptions=list("RGBN"))
    back, prof = geotiff.read_raster(tmp_path / "naip.tif")
    np.testing.assert_array_equal(back, data)
    assert prof["count"] == 4 and prof["transform"].almost_equals(TRANSFORM)
    # window by window gives the same file content
    full = {**profile, "count": 4, "height": 150, "width": 170}
    with geotiff.open_raster_writer(tmp_path / "win.tif", full) as writer:
        windows = list(writer.windows(64))
        assert len(windows) == 9
        for win in windows:
            sl = win.toslices()
            writer.write(data[:, sl[0], sl[1]], win)
    back2, _ = geotiff.read_raster(tmp_path / "win.tif")
    np.testing.assert_array_equal(back2, data)
    part, prof2 = geotiff.read_raster(tmp_path / "win.tif", Window(10, 20, 30, 40))
    assert part.shape == (4, 40, 30)
    assert prof2["transform"].c == TRANSFORM.c + 10 and prof2["transform"].f == TRANSFORM.f - 20


def test_windowed_class_map_writer(tmp_path: Path, classes: np.ndarray) -> None:
    h, w = classes.shape
    with geotiff.open_class_map_writer(
        tmp_path / "lc.tif", crs=CRS, transform=TRANSFORM, height=h, width=w
    ) as writer:
        for win in writer.windows(48):
            sl = win.toslices()
            writer.write(classes[sl], win)
    back = geotiff.read_class_map(tmp_path / "lc.tif")
    np.testing.assert_array_equal(back.classes, classes)
    assert back.names == CLASS_NAMES


@pytest.mark.parametrize("when", ["inside", "bad_value", "bad_shape"])
def test_failed_write_leaves_nothing(tmp_path: Path, classes: np.ndarray, when: str) -> None:
    out = tmp_path / "lc.tif"
    h, w = classes.shape
    with pytest.raises((RuntimeError, ValueError)):
        with geotiff.open_class_map_writer(
            out, crs=CRS, transform=TRANSFORM, height=h, width=w
        ) as writer:
            writer.write(classes[:50], Window(0, 0, w, 50))
            if when == "inside":
                raise RuntimeError("crash in the middle of a write")
            if when == "bad_value":
                writer.write(np.full((10, w), 7, np.uint8), Window(0, 50, w, 10))
            if when == "bad_shape":
                writer.write(np.zeros((10, 10), np.uint8), Window(0, 50, w, 10))
    assert _leftovers(tmp_path) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path: Path, classes: np.ndarray) -> None:
    out = geotiff.write_class_map(tmp_path / "lc.tif", classes, crs=CRS, transform=TRANSFORM)
    before = out.read_bytes()
    bad = classes.copy()
    bad[10, 10] = 9
    with pytest.raises(ValueError, match=r"outside 0\.\.4"):
        geotiff.write_class_map(out, bad, crs=CRS, transform=TRANSFORM)
    assert out.read_bytes() == before
    assert _leftovers(tmp_path) == ["lc.tif", "lc.tif.aux.xml"]


def test_bad_arguments(tmp_path: Path, classes: np.ndarray) -> None:
    with pytest.raises(ValueError, match="no CRS"):
        geotiff.write_raster(tmp_path / "x.tif", classes, {"transform": TRANSFORM})
    with pytest.raises(ValueError, match="expected one of"):
        geotiff.write_class_map(
            tmp_path / "x.tif", classes, crs=CRS, transform=TRANSFORM, overview_resampling="x"
        )
    with pytest.raises(ValueError, match=r"\(5, H, W\)"):
        geotiff.write_probabilities(
            tmp_path / "x.tif", np.zeros((3, 8, 8)), crs=CRS, transform=TRANSFORM
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        geotiff.write_class_map(tmp_path / "no" / "x.tif", classes, crs=CRS, transform=TRANSFORM)
    with pytest.raises(ValueError, match="float"):
        geotiff.probabilities_to_uint8(np.zeros((5, 2, 2), np.int32))
    assert _leftovers(tmp_path) == []


def test_overview_factors() -> None:
    assert geotiff.overview_factors(100, 100) == []
    assert geotiff.overview_factors(128, 100) == [2]
    assert geotiff.overview_factors(10_000, 10_000) == [2, 4, 8, 16, 32, 64, 128]


@pytest.mark.realdata
def test_real_chesapeake_tile_keeps_crs_and_transform(tmp_path: Path) -> None:
    folder = shared_data_path("chesapeake", "test_tile")
    with rasterio.open(folder / "m_3907833_nw_17_1_lc.tif") as src:
        lc = src.read(1)
        crs, transform = src.crs, src.transform
    classes = remap(lc, CHESAPEAKE_MAPPING)
    out = geotiff.write_class_map(tmp_path / "lc.tif", classes, crs=crs, transform=transform)
    back = geotiff.read_class_map(out)
    assert back.crs == crs and back.crs.to_epsg() == 26917
    assert back.transform.almost_equals(transform)
    np.testing.assert_array_equal(back.classes, classes)
    assert {int(v) for v in np.unique(classes)} <= {0, 1, 2, 3, 4, 255}


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name",
    [
        "m_3008501_ne_16_1_20110815.tif",
        "m_3211605_ne_11_060_20200415.tif",
        "m_4208701_ne_16_060_20200902.tif",
    ],
)
def test_real_naip_rewritten(tmp_path: Path, name: str) -> None:
    path = shared_data_path("naip", name)
    with rasterio.open(path) as src:
        naip, profile = src.read(), dict(src.profile)
    assert naip.shape[0] == 4 and naip.dtype == np.uint8
    out = geotiff.write_raster(tmp_path / name, naip, profile, band_descriptions=list("RGBN"))
    with rasterio.open(out) as dst:
        assert dst.crs == profile["crs"]
        assert dst.transform.almost_equals(profile["transform"])
        np.testing.assert_array_equal(dst.read(), naip)
    # a class map on the NAIP grid (NDVI threshold) keeps it too
    nir, red = naip[3].astype(float), naip[0].astype(float)
    veg = ((nir - red) / (nir + red + 1e-6) > 0.2).astype(np.uint8) * 4
    cm = geotiff.write_class_map(
        tmp_path / "veg.tif", veg, crs=profile["crs"], transform=profile["transform"]
    )
    back = geotiff.read_class_map(cm)
    assert back.crs == profile["crs"] and back.transform.almost_equals(profile["transform"])
