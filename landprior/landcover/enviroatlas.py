"""A declarative reader for the EnviroAtlas land-cover layout (and the synthetic cities).

The layout is data (``data_manifests/enviroatlas.yaml``): the index file and its CRS, the
regex that splits a ``split`` property into city and split, the folder and file patterns,
and one entry per layer (suffix, band count, dtype, meaning). :class:`Layout` holds it,
:class:`EnviroAtlas` opens a root through its ``spatial_index.geojson`` and reads layers:

>>> ds = EnviroAtlas("data/enviroatlas_lotp")        # doctest: +SKIP
>>> tile = ds.tiles(city="pittsburgh_pa-2010", split="train")[0]
>>> naip = ds.read(tile, "naip")                     # (4, H, W) uint8
>>> labels = ds.read_labels(tile, mapping="prior")   # (H, W) uint8, 255 = ignore
>>> lazy = ds.open_xarray(tile, chunks=512)          # xarray.Dataset backed by dask

Every failure names the file: a missing layer (:class:`MissingLayerError`), a wrong band
count or dtype, layers of one tile on different grids or CRS, a corrupt file
(:class:`DataError`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import rasterio
import rasterio.errors
import yaml
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from landprior.landcover.classes import MappingName, remap

if TYPE_CHECKING:
    import xarray as xr

logger = logging.getLogger(__name__)

MANIFEST_DIR = Path(
    os.environ.get("LANDPRIOR_MANIFESTS", Path(__file__).resolve().parents[2] / "data_manifests")
)
"""Folder of the data manifests (override with the LANDPRIOR_MANIFESTS environment variable)."""

LayerKind = Literal["image", "categorical", "mask", "probabilities"]
LAYER_KINDS: tuple[str, ...] = ("image", "categorical", "mask", "probabilities")

SYNTHETIC_METADATA = "synthetic.json"
"""Extra file the synthetic writer leaves at the root (city roles, seed, class mix)."""


class DataError(ValueError):
    """A dataset file or index is not what the layout says; the message names the file."""


class MissingLayerError(DataError, FileNotFoundError):
    """A layer file the layout requires is absent."""


def load_manifest(name: str | os.PathLike[str] = "enviroatlas") -> dict[str, Any]:
    """Load a data manifest by name (``data_manifests/<name>.yaml``) or by path."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = MANIFEST_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"data manifest {path} not found; expected data_manifests/ next to the landprior "
            "package (a source checkout) or set LANDPRIOR_MANIFESTS to its folder"
        )
    with open(path, encoding="utf-8") as f:
        manifest = yaml.safe_load(f)
    if not isinstance(manifest, dict) or "layout" not in manifest or "layers" not in manifest:
        raise DataError(f"{path}: not a dataset manifest (needs 'layout' and 'layers' sections)")
    return manifest


@dataclass(frozen=True)
class LayerSpec:
    """One per-tile layer: file suffix, bands, dtype and what it holds."""

    name: str
    suffix: str
    bands: int
    dtype: str
    kind: LayerKind
    band_names: tuple[str, ...] = ()
    nodata: float | None = None
    values: tuple[int, ...] | None = None
    property: str | None = None
    meaning: str = ""

    @classmethod
    def from_dict(cls, name: str, spec: Mapping[str, Any]) -> LayerSpec:
        """Build from one ``layers:`` entry of a manifest, checking every field."""
        for key in ("suffix", "bands", "dtype", "kind"):
            if key not in spec:
                raise DataError(f"layer {name!r}: manifest entry lacks {key!r}")
        kind = spec["kind"]
        if kind not in LAYER_KINDS:
            raise DataError(f"layer {name!r}: kind {kind!r} is not one of {LAYER_KINDS}")
        np.dtype(spec["dtype"])  # raises TypeError on nonsense
        band_names = tuple(spec.get("band_names") or ())
        if band_names and len(band_names) != int(spec["bands"]):
            raise DataError(
                f"layer {name!r}: {len(band_names)} band_names for {spec['bands']} bands"
            )
        values = spec.get("values")
        return cls(
            name=name,
            suffix=str(spec["suffix"]),
            bands=int(spec["bands"]),
            dtype=str(np.dtype(spec["dtype"])),
            kind=kind,
            band_names=band_names,
            nodata=spec.get("nodata"),
            values=None if values is None else tuple(int(v) for v in values),
            property=spec.get("property"),
            meaning=str(spec.get("meaning", "")).strip(),
        )


@dataclass(frozen=True)
class Layout:
    """Where tiles and layers live under a root, as declared by a manifest."""

    index: str
    index_crs: str
    split_property: str
    split_regex: str
    folder: str
    file: str
    layers: Mapping[str, LayerSpec]
    resolution_m: float = 1.0
    archive_folder: str | None = None

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any] | str | os.PathLike[str]) -> Layout:
        """The layout of a manifest (a loaded dict, a manifest name or a path)."""
        if not isinstance(manifest, Mapping):
            manifest = load_manifest(manifest)
        lay = manifest["layout"]
        for key in ("index", "index_crs", "split_property", "split_regex", "folder", "file"):
            if key not in lay:
                raise DataError(f"manifest layout lacks {key!r}")
        layers = {
            name: LayerSpec.from_dict(name, spec) for name, spec in manifest["layers"].items()
        }
        regex = re.compile(lay["split_regex"])
        if not {"city", "split"} <= set(regex.groupindex):
            raise DataError("layout split_regex needs named groups 'city' and 'split'")
        return cls(
            index=lay["index"],
            index_crs=lay["index_crs"],
            split_property=lay["split_property"],
            split_regex=lay["split_regex"],
            folder=lay["folder"],
            file=lay["file"],
            layers=layers,
            resolution_m=float(lay.get("resolution_m", 1.0)),
            archive_folder=(manifest.get("archive") or {}).get("extracts_to"),
        )

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Layer names in manifest order."""
        return tuple(self.layers)

    def layer(self, name: str) -> LayerSpec:
        """The spec of a layer by name (``"naip"``) or by file suffix (``"a_naip"``)."""
        if name in self.layers:
            return self.layers[name]
        for spec in self.layers.values():
            if spec.suffix == name:
                return spec
        raise ValueError(f"unknown layer {name!r}; expected one of {self.layer_names}")

    def split_value(self, city: str, split: str) -> str:
        """The index ``split`` property for a city and split, e.g. ``x_pa-2010_1m-train``."""
        return self.folder.format(city=city, split=split).removesuffix("_tiles-debuffered")

    def parse_split(self, value: str) -> tuple[str, str]:
        """(city, split) from an index ``split`` property; a mismatch raises DataError."""
        m = re.match(self.split_regex, value)
        if m is None:
            raise DataError(
                f"split property {value!r} does not match the layout regex {self.split_regex!r}"
            )
        return m.group("city"), m.group("split")

    def relative_path(self, city: str, split: str, tile_id: str, layer: str) -> str:
        """Relative path (POSIX) of one layer file of a tile."""
        spec = self.layer(layer)
        folder = self.folder.format(city=city, split=split)
        return f"{folder}/{self.file.format(tile_id=tile_id, suffix=spec.suffix)}"


@dataclass(frozen=True)
class Tile:
    """One tile of the index: its city, split, id, layer paths and EPSG:3857 footprint."""

    city: str
    split: str
    tile_id: str
    paths: Mapping[str, Path] = field(repr=False, compare=False)
    geometry: Any = field(repr=False, compare=False, default=None)

    @property
    def key(self) -> str:
        """``city/split/tile_id`` - unique within a dataset."""
        return f"{self.city}/{self.split}/{self.tile_id}"


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and shape (height, width)."""

    crs: CRS
    transform: Affine
    height: int
    width: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        west, south, east, north = rasterio.transform.array_bounds(
            self.height, self.width, self.transform
        )
        return west, south, east, north


def _open(path: Path) -> rasterio.io.DatasetReader:
    if not path.exists():
        raise MissingLayerError(f"missing layer file {path}")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioError as exc:
        raise DataError(f"cannot read {path}: not a readable GeoTIFF ({exc})") from exc


def check_layer_header(src: rasterio.io.DatasetReader, spec: LayerSpec, path: Path) -> None:
    """Raise DataError naming ``path`` when band count or dtype differ from ``spec``."""
    if src.count != spec.bands:
        raise DataError(
            f"{path}: layer {spec.name!r} has {src.count} band(s); expected {spec.bands}"
        )
    if src.dtypes[0] != spec.dtype:
        raise DataError(
            f"{path}: layer {spec.name!r} has dtype {src.dtypes[0]}; expected {spec.dtype}"
        )
    if src.crs is None:
        raise DataError(f"{path}: layer {spec.name!r} has no CRS")


class EnviroAtlas:
    """A root in the EnviroAtlas layout, opened through its spatial index.

    ``root`` may be the folder holding ``spatial_index.geojson`` or its parent (the
    download folder, holding ``enviroatlas_lotp/``). ``layout`` defaults to the one of
    ``data_manifests/enviroatlas.yaml``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        layout: Layout | None = None,
    ) -> None:
        self.layout = layout if layout is not None else Layout.from_manifest("enviroatlas")
        self.root = self._resolve_root(Path(root))
        self.index_path = self.root / self.layout.index
        self._tiles = self._read_index()

    # --- opening -------------------------------------------------------------------
    def _resolve_root(self, root: Path) -> Path:
        if (root / self.layout.index).is_file():
            return root
        if (
            self.layout.archive_folder
            and (root / self.layout.archive_folder / self.layout.index).is_file()
        ):
            return root / self.layout.archive_folder
        raise FileNotFoundError(
            f"no {self.layout.index} in {root}"
            + (f" or {root / self.layout.archive_folder}" if self.layout.archive_folder else "")
            + "; run `landprior data download --root DIR` for the real data or "
            "`landprior data synth --out DIR` for the synthetic cities"
        )

    def _read_index(self) -> list[Tile]:
        import geopandas as gpd

        try:
            frame = gpd.read_file(self.index_path)
        except Exception as exc:  # pyogrio raises its own types for broken JSON
            raise DataError(f"cannot read the spatial index {self.index_path}: {exc}") from exc
        if frame.crs is None or CRS.from_user_input(frame.crs) != CRS.from_user_input(
            self.layout.index_crs
        ):
            raise DataError(
                f"{self.index_path}: index CRS is {frame.crs}; expected {self.layout.index_crs}"
            )
        prop = self.layout.split_property
        if prop not in frame.columns:
            raise DataError(f"{self.index_path}: no {prop!r} property in the index")
        tiles: list[Tile] = []
        seen: set[str] = set()
        for row in frame.itertuples(index=False):
            record = row._asdict()
            city, split = self.layout.parse_split(str(record[prop]))
            tile_id = self._tile_id(record, city, split)
            paths: dict[str, Path] = {}
            for name, spec in self.layout.layers.items():
                rel = record.get(spec.property) if spec.property else None
                if not isinstance(rel, str) or not rel:
                    rel = self.layout.relative_path(city, split, tile_id, name)
                paths[name] = self.root / rel
            tile = Tile(city, split, tile_id, paths, record.get("geometry"))
            if tile.key in seen:
                raise DataError(f"{self.index_path}: tile {tile.key} is listed twice")
            seen.add(tile.key)
            tiles.append(tile)
        if not tiles:
            raise DataError(f"{self.index_path}: the spatial index lists no tiles")
        logger.info(
            "opened %s: %d tiles in %d cities", self.root, len(tiles), len(self.cities_of(tiles))
        )
        return tiles

    def _tile_id(self, record: Mapping[str, Any], city: str, split: str) -> str:
        # the tile id comes from the first layer whose path is in the index
        for spec in self.layout.layers.values():
            rel = record.get(spec.property) if spec.property else None
            if isinstance(rel, str) and rel:
                ending = self.layout.file.format(tile_id="", suffix=spec.suffix)
                base = Path(rel).name
                if not base.endswith(ending):
                    raise DataError(
                        f"{self.index_path}: {spec.property}={rel!r} does not end in {ending!r}"
                    )
                return base[: -len(ending)]
        if "tile_id" in record:
            return str(record["tile_id"])
        raise DataError(
            f"{self.index_path}: a row of split {city}/{split} has no layer path and no tile_id"
        )

    @staticmethod
    def cities_of(tiles: Iterable[Tile]) -> tuple[str, ...]:
        """Distinct cities of some tiles, in first-seen order."""
        return tuple(dict.fromkeys(t.city for t in tiles))

    # --- listing -------------------------------------------------------------------
    @property
    def cities(self) -> tuple[str, ...]:
        """Cities in index order."""
        return self.cities_of(self._tiles)

    def splits(self, city: str | None = None) -> tuple[str, ...]:
        """Splits present (for one city, or overall), in index order."""
        if city is not None:
            self._check_city(city)
        return tuple(dict.fromkeys(t.split for t in self._tiles if city in (None, t.city)))

    def tiles(self, city: str | None = None, split: str | None = None) -> list[Tile]:
        """Tiles of a city and/or split (all when both are None)."""
        if city is not None:
            self._check_city(city)
        if split is not None and split not in self.splits(city):
            raise ValueError(
                f"no split {split!r}"
                + (f" for city {city!r}" if city else "")
                + f"; expected one of {self.splits(city)}"
            )
        return [t for t in self._tiles if city in (None, t.city) and split in (None, t.split)]

    def tile(self, tile_id: str, city: str | None = None, split: str | None = None) -> Tile:
        """One tile by id (city/split narrow it down when ids repeat)."""
        found = [t for t in self.tiles(city, split) if t.tile_id == tile_id]
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise KeyError(f"{what} tile with id {tile_id!r} (city={city}, split={split})")
        return found[0]

    def __len__(self) -> int:
        return len(self._tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self._tiles)

    @cached_property
    def roles(self) -> dict[str, str]:
        """City -> ``"source"``/``"target"``: from the synthetic metadata or the manifest."""
        meta = self.root / SYNTHETIC_METADATA
        roles: dict[str, str] = {}
        if meta.is_file():
            with open(meta, encoding="utf-8") as f:
                info = json.load(f)
            roles = {c: v.get("role", "") for c, v in info.get("cities", {}).items()}
        else:
            try:
                cities = load_manifest("enviroatlas").get("cities", {})
                roles = {c: v.get("role", "") for c, v in cities.items()}
            except FileNotFoundError:
                pass
        return {c: roles.get(c, "unknown") for c in self.cities}

    def _check_city(self, city: str) -> None:
        if city not in self.cities:
            raise ValueError(f"unknown city {city!r}; expected one of {self.cities}")

    # --- reading -------------------------------------------------------------------
    def path(self, tile: Tile, layer: str) -> Path:
        """The file of one layer of a tile."""
        return tile.paths[self.layout.layer(layer).name]

    def read(
        self,
        tile: Tile,
        layer: str,
        window: Window | tuple[tuple[int, int], tuple[int, int]] | None = None,
        *,
        boundless: bool = False,
    ) -> np.ndarray:
        """Read a layer (whole or a rasterio ``Window``) as ``(bands, h, w)`` after checking it.

        Raises MissingLayerError for an absent file and DataError for a wrong band count or
        dtype, a window outside the tile, or a file that cannot be decoded.
        """
        spec = self.layout.layer(layer)
        path = tile.paths[spec.name]
        with _open(path) as src:
            check_layer_header(src, spec, path)
            if window is not None and not boundless:
                win = window if isinstance(window, Window) else Window.from_slices(*window)
                full = Window(0, 0, src.width, src.height)
                if (
                    win.col_off < 0
                    or win.row_off < 0
                    or win.col_off + win.width > full.width
                    or win.row_off + win.height > full.height
                ):
                    raise DataError(
                        f"{path}: window {win} lies outside the tile ({src.height}x{src.width})"
                    )
            try:
                return src.read(window=window, boundless=boundless)
            except rasterio.errors.RasterioError as exc:
                raise DataError(f"cannot decode {path}: corrupt or truncated ({exc})") from exc

    def read_labels(
        self,
        tile: Tile,
        mapping: MappingName | Mapping[int, int] = "prior",
        window: Window | None = None,
    ) -> np.ndarray:
        """High-res labels as class indices ``(h, w)`` uint8 (255 = ignore), via classes.remap."""
        raw = self.read(tile, "lc", window)[0]
        return remap(raw, dict(mapping) if isinstance(mapping, Mapping) else mapping)

    def profile(self, tile: Tile, layer: str) -> dict[str, Any]:
        """The rasterio profile of one layer file (header only)."""
        spec = self.layout.layer(layer)
        path = tile.paths[spec.name]
        with _open(path) as src:
            return dict(src.profile)

    def grid(self, tile: Tile, layers: Sequence[str] | None = None) -> Grid:
        """The grid shared by the given layers (all by default), checking headers on the way.

        Layers on different CRS, transforms or shapes raise DataError naming both files.
        """
        names = [self.layout.layer(n).name for n in (layers or self.layout.layer_names)]
        ref: tuple[Grid, Path] | None = None
        for name in names:
            spec = self.layout.layers[name]
            path = tile.paths[name]
            with _open(path) as src:
                check_layer_header(src, spec, path)
                grid = Grid(src.crs, src.transform, src.height, src.width)
            if ref is None:
                ref = (grid, path)
                continue
            base, base_path = ref
            if grid.crs != base.crs:
                raise DataError(
                    f"tile {tile.key}: {path.name} is in {grid.crs.to_string()} but "
                    f"{base_path.name} is in {base.crs.to_string()}; all layers must share one CRS"
                )
            same_shape = (grid.height, grid.width) == (base.height, base.width)
            if not same_shape or not grid.transform.almost_equals(base.transform, 1e-6):
                raise DataError(
                    f"tile {tile.key}: {path.name} ({grid.height}x{grid.width}, "
                    f"origin {grid.transform.c:.3f},{grid.transform.f:.3f}, pixel "
                    f"{grid.transform.a:g}) is not on the grid of {base_path.name} "
                    f"({base.height}x{base.width}, origin {base.transform.c:.3f},"
                    f"{base.transform.f:.3f}, pixel {base.transform.a:g})"
                )
        assert ref is not None
        return ref[0]

    def validate(
        self, tiles: Iterable[Tile] | None = None, layers: Sequence[str] | None = None
    ) -> int:
        """Check headers and grids of every layer of the tiles (all by default); returns a count."""
        n = 0
        for tile in self._tiles if tiles is None else tiles:
            self.grid(tile, layers)
            n += 1
        return n

    def open_xarray(
        self,
        tile: Tile,
        layers: Sequence[str] | None = None,
        *,
        chunks: int | Mapping[str, int] | None = 512,
    ) -> xr.Dataset:
        """A tile as a lazy ``xarray.Dataset`` (dask chunks, via rioxarray).

        One variable per layer with dims ``(band_<layer>, y, x)`` (band coordinate = band
        names); x/y coordinates, ``spatial_ref`` and the CRS are shared because the grid is
        checked first. ``chunks=None`` reads eagerly.
        """
        import rioxarray
        import xarray as xr

        names = [self.layout.layer(n).name for n in (layers or self.layout.layer_names)]
        grid = self.grid(tile, names)
        if isinstance(chunks, int):
            chunk_spec: Mapping[str, int] | None = {"band": -1, "y": chunks, "x": chunks}
        else:
            chunk_spec = chunks
        arrays = {}
        for name in names:
            spec = self.layout.layers[name]
            path = tile.paths[name]
            try:
                da = rioxarray.open_rasterio(path, chunks=chunk_spec, lock=False, cache=False)
            except rasterio.errors.RasterioError as exc:
                raise DataError(f"cannot read {path}: not a readable GeoTIFF ({exc})") from exc
            band_dim = f"band_{name}"
            da = da.rename({"band": band_dim})
            if spec.band_names:
                da = da.assign_coords({band_dim: list(spec.band_names)})
            da.attrs.update(layer=name, source=str(path), meaning=spec.meaning)
            arrays[name] = da
        ds = xr.Dataset(arrays)
        ds.attrs.update(city=tile.city, split=tile.split, tile_id=tile.tile_id)
        return ds.rio.write_crs(grid.crs)

    def summary(self) -> list[dict[str, Any]]:
        """One row per (city, split): role, tile count and CRS read from the NAIP headers."""
        rows = []
        for city in self.cities:
            for split in self.splits(city):
                tiles = self.tiles(city, split)
                crs = set()
                for t in tiles:
                    path = t.paths.get("naip") or next(iter(t.paths.values()))
                    try:
                        with _open(path) as src:
                            crs.add(src.crs.to_string() if src.crs else "none")
                    except (MissingLayerError, DataError) as exc:
                        crs.add(f"unreadable ({exc.__class__.__name__})")
                rows.append(
                    {
                        "city": city,
                        "role": self.roles.get(city, "unknown"),
                        "split": split,
                        "tiles": len(tiles),
                        "crs": ", ".join(sorted(crs)),
                    }
                )
        return rows
