"""Weak-label prior (paper section 4, PAPER_NOTES "prior_from_cooccurrences_101_31")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from rasterio.transform import from_origin
from scipy import ndimage

from landprior.landcover.classes import (
    CHESAPEAKE_MAPPING,
    CLASS_NAMES,
    IGNORE_INDEX,
    NLCD_CODES,
    nlcd_codes_to_index,
    remap,
)
from landprior.landcover.weak_labels import (
    IMPERVIOUS,
    WATER,
    estimate_cooccurrence,
    gaussian_kernel1d,
    load_cooccurrence,
    nlcd_default_cooccurrence,
    prior_from_uint8,
    prior_to_uint8,
    save_cooccurrence,
    source_cooccurrence,
    weak_label_prior,
    weak_label_raster,
    write_weak_label_geotiff,
)
from tests.conftest import shared_data_path

SMALL = {"blur_kernel": 21, "blur_sigma": 6.0}
CRS = "EPSG:32617"
TRANSFORM = from_origin(500_000.0, 4_400_000.0, 1.0, 1.0)


def blocky_nlcd(h: int, w: int, seed: int = 0, block: int = 30) -> np.ndarray:
    """NLCD-like indices: 30 px blocks (30 m pixels resampled to 1 m)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, len(NLCD_CODES), size=(h // block + 1, w // block + 1))
    return np.kron(coarse, np.ones((block, block), dtype=np.int64))[:h, :w].astype(np.uint8)


def random_cooc(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(5), size=len(NLCD_CODES))


def as_raster(a: np.ndarray, nodata: float | None = None) -> xr.DataArray:
    h, w = a.shape
    x = xr.DataArray(
        a[None],
        dims=("band", "y", "x"),
        coords={
            "band": [1],
            "y": 4_400_000.0 - np.arange(h) - 0.5,
            "x": 500_000.0 + np.arange(w) + 0.5,
        },
        attrs={"source": "test"},
    )
    x = x.rio.write_crs(CRS).rio.write_transform(TRANSFORM)
    return x.rio.write_nodata(nodata) if nodata is not None else x


# --------------------------------------------------------------------------- co-occurrence


def test_cooccurrence_counts_and_rows() -> None:
    nl = np.array([[1, 1, 1, 3], [3, 3, 3, 0]])
    lab = np.array([[0, 0, 4, 1], [1, 4, IGNORE_INDEX, 4]])
    c = estimate_cooccurrence(nl, lab, fallback="uniform")
    assert c.shape == (17, 5) and c.dtype == np.float64
    np.testing.assert_allclose(c.sum(axis=1), 1.0)
    np.testing.assert_allclose(c[1], [2 / 3, 0, 0, 0, 1 / 3])
    np.testing.assert_allclose(c[3], [0, 2 / 3, 0, 0, 1 / 3])  # the ignored pixel is skipped
    np.testing.assert_allclose(c[5], 0.2)  # no data -> uniform fallback
    assert (c >= 0).all()


def test_cooccurrence_lists_fallbacks_and_smoothing() -> None:
    rng = np.random.default_rng(3)
    nls = [blocky_nlcd(60, 50, seed=s) for s in range(3)]
    labs = [rng.integers(0, 5, size=(60, 50)) for _ in range(3)]
    pooled = estimate_cooccurrence(
        np.concatenate([n.ravel() for n in nls]), np.concatenate([lab.ravel() for lab in labs])
    )
    np.testing.assert_allclose(estimate_cooccurrence(nls, labs), pooled)
    only_forest = estimate_cooccurrence(np.full((4, 4), 8), np.full((4, 4), 3))
    np.testing.assert_allclose(only_forest[8], [0, 0, 0, 1, 0])
    np.testing.assert_allclose(only_forest[1], nlcd_default_cooccurrence()[1])  # water row
    assert nlcd_default_cooccurrence()[NLCD_CODES.index(11)].argmax() == WATER
    marg = estimate_cooccurrence(
        np.full((2, 2), 8), np.array([[3, 3], [4, 0]]), fallback="marginal"
    )
    np.testing.assert_allclose(marg[2], [0.25, 0, 0, 0.5, 0.25])
    smooth = estimate_cooccurrence(np.full((4, 4), 8), np.full((4, 4), 3), smoothing=16.0)
    np.testing.assert_allclose(smooth[8], 0.5 * np.eye(5)[3] + 0.5 * nlcd_default_cooccurrence()[8])
    for rows in (only_forest, marg, smooth):
        np.testing.assert_allclose(rows.sum(axis=1), 1.0)


def test_cooccurrence_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        estimate_cooccurrence(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="nlcd_codes_to_index"):
        estimate_cooccurrence(np.full((2, 2), 41), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="pairs"):
        estimate_cooccurrence([np.zeros((2, 2), int)], [])
    with pytest.raises(ValueError, match="fallback"):
        estimate_cooccurrence(np.zeros((2, 2), int), np.zeros((2, 2), int), fallback="nope")


# --------------------------------------------------------------------------- the prior


def test_prior_is_a_distribution_and_constant_input_gives_the_row() -> None:
    cooc = random_cooc()
    p = weak_label_prior(blocky_nlcd(90, 70), cooc, **SMALL)
    assert p.shape == (5, 90, 70) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-5)
    flat = weak_label_prior(np.full((40, 50), 8, np.uint8), cooc)  # default 101 / 31 blur
    np.testing.assert_allclose(flat, np.broadcast_to(cooc[8][:, None, None], flat.shape), atol=1e-5)


def test_prior_equals_blurred_one_hot_through_the_matrix() -> None:
    """Mapping before the blur is the recipe's blur(one-hot) @ C, by linearity."""
    nl = blocky_nlcd(64, 48, seed=5, block=8)
    cooc = random_cooc(2)
    onehot = (nl[None] == np.arange(17)[:, None, None]).astype(np.float64)
    k = gaussian_kernel1d(21, 6.0).astype(np.float64)
    blurred = ndimage.correlate1d(onehot, k, axis=1, mode="mirror")
    blurred = ndimage.correlate1d(blurred, k, axis=2, mode="mirror")
    ref = np.einsum("nhw,nc->chw", blurred, cooc)
    ref /= ref.sum(axis=0)
    np.testing.assert_allclose(weak_label_prior(nl, cooc, **SMALL), ref, atol=1e-5)


def test_prior_responds_to_roads_water_buildings() -> None:
    nl = np.full((48, 48), 8, np.uint8)  # forest everywhere
    cooc = nlcd_default_cooccurrence()
    base = weak_label_prior(nl, cooc, **SMALL)
    mask = np.zeros((48, 48), np.uint8)
    mask[20:28, :] = 1
    roads = weak_label_prior(nl, cooc, roads=mask, **SMALL)
    water = weak_label_prior(nl, cooc, water=mask, **SMALL)
    both = weak_label_prior(nl, cooc, roads=mask, buildings=mask, **SMALL)
    assert roads[IMPERVIOUS, 24].min() > base[IMPERVIOUS, 24].max() + 0.3
    assert (roads.argmax(0)[24] == IMPERVIOUS).all() and (base.argmax(0) == 3).all()
    assert (water.argmax(0)[24] == WATER).all()
    assert both[IMPERVIOUS, 24].mean() > roads[IMPERVIOUS, 24].mean()
    # the road window (r = 4) reaches 4 px beyond the road, not further
    assert roads[IMPERVIOUS, 16].max() > base[IMPERVIOUS, 16].max()
    np.testing.assert_allclose(roads[:, :15], base[:, :15], atol=1e-6)
    for p in (roads, water, both):
        np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)


def test_prior_bad_input() -> None:
    cooc = random_cooc()
    nl = blocky_nlcd(20, 20)
    with pytest.raises(ValueError, match="roads raster has shape"):
        weak_label_prior(nl, cooc, roads=np.zeros((20, 21)))
    with pytest.raises(ValueError, match="raw codes"):
        weak_label_prior(np.full((20, 20), 41), cooc)
    with pytest.raises(ValueError, match="co-occurrence matrix has shape"):
        weak_label_prior(nl, cooc[:, :4])
    with pytest.raises(ValueError, match="NaN"):
        weak_label_prior(np.full((20, 20), np.nan), cooc)
    with pytest.raises(ValueError, match="odd"):
        weak_label_prior(nl, cooc, blur_kernel=20)


def test_uint8_round_trip() -> None:
    p = weak_label_prior(blocky_nlcd(30, 30), random_cooc(), **SMALL)
    u = prior_to_uint8(p)
    assert u.dtype == np.uint8 and u.shape == p.shape
    assert np.abs(u.astype(int).sum(0) - 255).max() <= 3
    np.testing.assert_allclose(prior_from_uint8(u), p, atol=3 / 255)
    assert (prior_to_uint8(np.full((5, 1, 1), np.nan)) == 0).all()


# --------------------------------------------------------------------------- xarray / dask


def test_raster_numpy_equals_dask_and_keeps_georeferencing() -> None:
    h, w = 150, 130
    nl = blocky_nlcd(h, w, seed=7)
    nl[40:60, 30:70] = 255  # nodata hole
    rng = np.random.default_rng(0)
    roads = (rng.random((h, w)) < 0.05).astype(np.uint8)
    water = np.zeros((h, w), np.uint8)
    water[100:, :20] = 1
    cooc = random_cooc(4)
    kw = {"blur_kernel": 31, "blur_sigma": 9.0}
    nl_x, roads_x, water_x = as_raster(nl, 255), as_raster(roads), as_raster(water)
    eager = weak_label_raster(nl_x, cooc, roads=roads_x, water=water_x, **kw)
    # chunks smaller than the 15 px overlap are merged, not an error
    lazy = weak_label_raster(
        nl_x.chunk({"y": 40, "x": 12}),
        cooc,
        roads=roads_x.chunk({"y": 40, "x": 12}),
        water=water_x.chunk({"y": 40, "x": 12}),
        **kw,
    )
    assert hasattr(lazy.data, "dask") and not hasattr(eager.data, "dask")
    ref = weak_label_prior(nl, cooc, roads=roads, water=water, valid=nl != 255, **kw)
    np.testing.assert_allclose(eager.values, ref, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(lazy.values, eager.values, atol=1e-6, equal_nan=True)
    for out in (eager, lazy):
        assert list(out.band.values) == list(CLASS_NAMES)
        assert out.dims == ("band", "y", "x")
        assert out.rio.crs == nl_x.rio.crs
        assert out.rio.transform() == TRANSFORM
        assert out.attrs["source"] == "test"
        np.testing.assert_array_equal(out.x.values, nl_x.x.values)
    vals = eager.values
    assert np.isnan(vals[:, 40:60, 30:70]).all()
    ok = ~np.isnan(vals[0])
    np.testing.assert_allclose(vals[:, ok].sum(0), 1.0, atol=1e-5)
    u8 = weak_label_raster(nl_x.chunk({"y": 64, "x": 64}), cooc, as_uint8=True, **kw)
    assert u8.dtype == np.uint8 and (u8.values[:, 45, 50] == 0).all()


def test_raster_raw_codes_and_grid_checks() -> None:
    codes = np.array(NLCD_CODES, dtype=np.uint8)[blocky_nlcd(40, 40, seed=2) % 17]
    raw = weak_label_raster(as_raster(codes), random_cooc(), nlcd_is_raw=True, **SMALL)
    idx = weak_label_raster(as_raster(nlcd_codes_to_index(codes)), random_cooc(), **SMALL)
    np.testing.assert_allclose(raw.values, idx.values)
    with pytest.raises(ValueError, match="nlcd_is_raw"):
        weak_label_raster(as_raster(codes), random_cooc(), **SMALL)
    other = as_raster(np.zeros((40, 40), np.uint8)).rio.write_crs("EPSG:32618")
    with pytest.raises(ValueError, match="roads raster CRS"):
        weak_label_raster(as_raster(codes), random_cooc(), roads=other, nlcd_is_raw=True)
    with pytest.raises(ValueError, match="buildings raster has shape"):
        weak_label_raster(
            as_raster(codes), random_cooc(), buildings=as_raster(np.zeros((40, 41), np.uint8))
        )
    with pytest.raises(ValueError, match="single-band"):
        weak_label_raster(as_raster(codes).pipe(lambda a: xr.concat([a, a], "band")), random_cooc())
    with pytest.raises(TypeError, match="DataArray"):
        weak_label_raster(codes, random_cooc())


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_chesapeake_weak_labels_leave_one_out() -> None:
    """Real NLCD (raw codes, ch 9) and labels (ch 8) of the 8 Chesapeake patches.

    The co-occurrence for each patch comes from the OTHER patches (leave-one-out), so no
    patch's own labels are used for its weak labels.
    """
    folder = shared_data_path("chesapeake", "train_patches")
    arrs = [np.load(f)["arr_0"][0] for f in sorted(folder.glob("*.npz"))]
    assert len(arrs) == 8
    labs = [remap(a[8].astype(np.int64), CHESAPEAKE_MAPPING) for a in arrs]
    nls = [nlcd_codes_to_index(a[9]) for a in arrs]
    correct = total = trees = 0
    for i in range(8):
        others = [j for j in range(8) if j != i]
        cooc = estimate_cooccurrence([nls[j] for j in others], [labs[j] for j in others])
        pred = weak_label_prior(nls[i], cooc, buildings=arrs[i][28]).argmax(0)
        ok = labs[i] != IGNORE_INDEX
        correct += int((pred[ok] == labs[i][ok]).sum())
        trees += int((labs[i][ok] == CLASS_NAMES.index("trees")).sum())
        total += int(ok.sum())
    # 83.0 % measured; always answering "trees" (the majority) scores 80.6 %
    assert correct / total > 0.8
    assert correct > trees


# --------------------------------------------------------------------------- files


def _write(path: Path, data: np.ndarray, nodata: float | None = None, crs: str = CRS) -> Path:
    data = data[None] if data.ndim == 2 else data
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=TRANSFORM,
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return path


def test_write_weak_label_geotiff_lazily(tmp_path: Path) -> None:
    h, w = 200, 170
    nl = blocky_nlcd(h, w, seed=11)
    nl[:30, :40] = 255
    roads = np.zeros((h, w), np.uint8)
    roads[90:95] = 1
    cooc = random_cooc(6)
    kw = {"blur_kernel": 31, "blur_sigma": 9.0}
    out = write_weak_label_geotiff(
        tmp_path / "prior.tif",
        _write(tmp_path / "nlcd.tif", nl, nodata=255),
        cooc,
        roads=_write(tmp_path / "roads.tif", roads),
        chunk=64,
        **kw,
    )
    with rasterio.open(out) as src:
        got = src.read()
        assert src.crs.to_string() == CRS and src.transform == TRANSFORM
        assert src.count == 5 and src.dtypes[0] == "uint8"
        assert "water" in src.descriptions[0]
    ref = prior_to_uint8(weak_label_prior(nl, cooc, roads=roads, valid=nl != 255, **kw))
    assert np.abs(got.astype(int) - ref).max() <= 1
    assert (got[:, :30, :40] == 0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nlcd.tif", "prior.tif", "roads.tif"]


def test_write_weak_label_geotiff_bad_input_leaves_nothing(tmp_path: Path) -> None:
    nl = _write(tmp_path / "nlcd.tif", blocky_nlcd(64, 64))
    with pytest.raises(FileNotFoundError, match=r"roads raster .*missing\.tif"):
        write_weak_label_geotiff(
            tmp_path / "a.tif", nl, random_cooc(), roads=tmp_path / "missing.tif"
        )
    other = _write(tmp_path / "water.tif", np.zeros((64, 64), np.uint8), crs="EPSG:32618")
    # the error names the companion file that is wrong, not the NLCD
    with pytest.raises(ValueError, match=r"water\.tif: water raster CRS .*\(NLCD: .*nlcd\.tif\)"):
        write_weak_label_geotiff(tmp_path / "b.tif", nl, random_cooc(), water=other)
    four = _write(tmp_path / "four.tif", np.zeros((4, 64, 64), np.uint8))
    with pytest.raises(ValueError, match=r"four\.tif: roads raster has 4 bands"):
        write_weak_label_geotiff(tmp_path / "d.tif", nl, random_cooc(), roads=four)
    raw = _write(tmp_path / "raw.tif", np.full((64, 64), 41, np.uint8))
    with pytest.raises(ValueError, match="raw codes"):
        write_weak_label_geotiff(tmp_path / "c.tif", raw, random_cooc())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "four.tif", "nlcd.tif", "raw.tif", "water.tif"
    ]


def test_cooccurrence_files(tmp_path: Path) -> None:
    cooc = random_cooc(8)
    path = save_cooccurrence(tmp_path / "cooc.json", cooc, source="test")
    np.testing.assert_allclose(load_cooccurrence(path), cooc)
    np.save(tmp_path / "cooc.npy", cooc)
    np.testing.assert_allclose(load_cooccurrence(tmp_path / "cooc.npy"), cooc)
    (tmp_path / "bad.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match=r"bad\.json: not a co-occurrence file"):
        load_cooccurrence(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        load_cooccurrence(tmp_path / "nope.json")
    (tmp_path / "list.json").write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match=r"list\.json: not a co-occurrence file"):
        load_cooccurrence(tmp_path / "list.json")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"objects\.npy: cannot read"):
        load_cooccurrence(tmp_path / "objects.npy")
    (tmp_path / "garbage.npy").write_bytes(b"\x00\x01 not numpy")
    with pytest.raises(ValueError, match=r"garbage\.npy"):
        load_cooccurrence(tmp_path / "garbage.npy")
    (tmp_path / "codes.json").write_text('{"nlcd_codes": 5, "matrix": []}')
    with pytest.raises(ValueError, match=r"codes\.json: field 'nlcd_codes' differs"):
        load_cooccurrence(tmp_path / "codes.json")
    (tmp_path / "ragged.json").write_text('{"matrix": [[0.5, 0.5], [1.0]]}')
    with pytest.raises(ValueError, match=r"ragged\.json: not a co-occurrence file"):
        load_cooccurrence(tmp_path / "ragged.json")
    (tmp_path / "shape.json").write_text('{"matrix": [[0.5, 0.5]]}')
    with pytest.raises(ValueError, match=r"shape\.json: "):
        load_cooccurrence(tmp_path / "shape.json")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from landprior.landcover.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", size="tiny", seed=0)


def test_source_cooccurrence_from_a_synthetic_dataset(
    tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from landprior.landcover.enviroatlas import EnviroAtlas

    dataset = EnviroAtlas(tiny_dataset)
    source = next(c for c, role in dataset.roles.items() if role == "source")
    cooc = source_cooccurrence(tiny_dataset, source)
    assert cooc.shape == (17, 5)
    np.testing.assert_allclose(cooc.sum(1), 1.0)
    tiles = dataset.tiles(source, "train")
    ref = estimate_cooccurrence(
        [dataset.read(t, "nlcd")[0] for t in tiles], [dataset.read_labels(t) for t in tiles]
    )
    np.testing.assert_allclose(cooc, ref)
    # counted in blocks of rows (memory bounded by the block): same matrix with tiny blocks
    monkeypatch.setattr("landprior.landcover.weak_labels.COUNT_BLOCK_ROWS", 7)
    np.testing.assert_allclose(source_cooccurrence(tiny_dataset, source), ref)
    with pytest.raises(ValueError, match="unknown city"):
        source_cooccurrence(tiny_dataset, "atlantis")


def test_cli_weak_labels(tiny_dataset: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from landprior.cli import main
    from landprior.landcover.enviroatlas import EnviroAtlas

    dataset = EnviroAtlas(tiny_dataset)
    target = next(c for c, role in dataset.roles.items() if role == "target")
    runner = CliRunner()
    args = ["data", "weak-labels", "--root", str(tiny_dataset), "--city", target]
    res = runner.invoke(
        main,
        [*args, "--out", str(tmp_path / "wl"), "--save-cooccurrence", str(tmp_path / "c.json")],
    )
    assert res.exit_code == 0, res.output
    tile = dataset.tiles(target)[0]
    made = tmp_path / "wl" / target / f"{tile.tile_id}_weak_labels.tif"
    with rasterio.open(made) as src, rasterio.open(dataset.path(tile, "prior")) as ref:
        # the synthetic writer's prior layer uses the same source-only recipe
        np.testing.assert_array_equal(src.read(), ref.read())
        assert src.crs == ref.crs and src.transform == ref.transform
    one = tmp_path / "one.tif"
    res = runner.invoke(
        main,
        ["data", "weak-labels", "--nlcd", str(dataset.path(tile, "nlcd")), "--cooccurrence",
         str(tmp_path / "c.json"), "--out", str(one)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert one.is_file()
    leak = runner.invoke(main, [*args, "--out", str(tmp_path / "x"), "--source-city", target])
    assert leak.exit_code != 0 and "leaks" in leak.output
    both = runner.invoke(
        main, [*args, "--nlcd", str(dataset.path(tile, "nlcd")), "--out", str(tmp_path / "y")]
    )
    assert both.exit_code != 0 and "exactly one" in both.output
    ignored = runner.invoke(
        main, [*args, "--roads", str(dataset.path(tile, "roads")), "--out", str(tmp_path / "z")]
    )
    assert ignored.exit_code == 2 and "go with --nlcd" in ignored.output
    assert not (tmp_path / "z").exists()


def test_masks_must_be_zero_one_and_radii_non_negative() -> None:
    nl = blocky_nlcd(20, 20)
    blds = np.zeros((20, 20), np.uint8)
    blds[5:9, 5:9] = 255
    with pytest.raises(ValueError, match=r"buildings raster spans 0\.\.255"):
        weak_label_prior(nl, random_cooc(), buildings=blds)
    with pytest.raises(ValueError, match="radii"):
        weak_label_prior(nl, random_cooc(), road_radius=-1)
