"""Chip sets: random chips of a city at the prior's label resolution, with georeference.

A :class:`ChipSet` holds, for N chips of ``size`` x ``size`` pixels at 1 m sampled from a
city's tiles (paper section 4: random 256 x 256 patches, x1/4 -> 64 x 64):

* ``image`` (N, 4, h, w) float32 NAIP / 255 average-pooled by ``factor``;
* ``weak`` (N, L, h, w) float32 weak-label distributions (the prior layer), pooled;
* ``truth`` (N, h, w) uint8 mode-downsampled labels (255 = ignore) when the city has them.
  Truth is used only to *report* pseudo-label quality, never by the method;
* where each chip came from: tile id, pixel offset (1 m) and the chip's own geotransform at
  the pooled resolution, plus the city's CRS (WKT);
* later stages add ``clusters`` (N, K, h, w) and ``pseudo`` (N, h, w) pseudo-labels.

Chip sets are saved as compressed ``.npz`` written atomically.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from landprior.fileio import atomic_output
from landprior.landcover.classes import MappingName
from landprior.landcover.enviroatlas import EnviroAtlas
from landprior.landcover.tiling import (
    average_pool,
    downsample_transform,
    mode_downsample,
    random_chips,
)
from landprior.landcover.weak_source import weak_reader

log = logging.getLogger(__name__)

_OPTIONAL = ("truth", "clusters", "pseudo", "pseudo_probs")
INPUT_KINDS = ("image", "image+weak")


@dataclass
class ChipSet:
    """Chips of one city (see the module docstring for shapes)."""

    city: str
    crs: str
    factor: int
    image: np.ndarray
    weak: np.ndarray
    tile_ids: np.ndarray
    offsets: np.ndarray
    transforms: np.ndarray
    truth: np.ndarray | None = None
    clusters: np.ndarray | None = None
    pseudo: np.ndarray | None = None
    pseudo_probs: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.image.shape[0]
        if self.image.ndim != 4 or self.weak.ndim != 4:
            raise ValueError(
                f"chip set image and weak labels must be (N, C, h, w); got "
                f"{self.image.shape} and {self.weak.shape}"
            )
        grid = self.image.shape[-2:]
        if min(grid) < 1:
            raise ValueError(f"chip set chips are {grid[0]} x {grid[1]} pixels; expected at "
                             "least 1 x 1 (an empty chip cannot be labelled)")
        for name in ("weak", "tile_ids", "offsets", "transforms", *_OPTIONAL):
            value = getattr(self, name)
            if value is None:
                continue
            if value.shape[0] != n:
                raise ValueError(f"chip set field {name!r} has {value.shape[0]} chips, not {n}")
            if name in ("weak", *_OPTIONAL) and value.shape[-2:] != grid:
                raise ValueError(f"chip set field {name!r} grid {value.shape[-2:]} != {grid}")

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def training_tensors(
        self, *, target: str = "truth", inputs: str = "image"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Segmenter inputs (N, 4 or 9, h, w) and targets (N, h, w) long.

        ``target``: "truth" (the source city's labels) or "pseudo" (pseudo-labels);
        ``inputs``: "image" or "image+weak" (the weak labels as 5 extra channels).
        """
        if target not in ("truth", "pseudo"):
            raise ValueError(f"unknown target {target!r}; expected 'truth' or 'pseudo'")
        if inputs not in INPUT_KINDS:
            raise ValueError(f"unknown segmenter inputs {inputs!r}; expected one of {INPUT_KINDS}")
        labels = getattr(self, target)
        if labels is None:
            raise ValueError(f"chip set of {self.city} has no {target!r} labels")
        x = self.image if inputs == "image" else np.concatenate([self.image, self.weak], axis=1)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(labels.astype(np.int64))

    def with_(self, **changes: object) -> ChipSet:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a compressed .npz atomically (temp file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None
        }
        arrays["city"] = np.array(self.city)
        arrays["crs"] = np.array(self.crs)
        arrays["factor"] = np.array(self.factor)
        with atomic_output(path, suffix=".npz") as tmp:  # numpy would append .npz otherwise
            np.savez_compressed(tmp, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ChipSet:
        """Read a chip set written by :meth:`save`; a missing field names the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"chip set not found: {path}")
        with open(path, "rb") as fh:
            if fh.read(2) != b"PK":  # every .npz is a zip archive
                raise ValueError(f"{path} is not a chip set (an .npz archive written by "
                                 "`landcover chips`)")
        try:
            with np.load(path, allow_pickle=False) as data:
                values = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"cannot read chip set {path}: {err}") from err
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            if f.name in values:
                kwargs[f.name] = values[f.name]
            elif f.name not in _OPTIONAL:
                raise ValueError(f"chip set {path} lacks the field {f.name!r}")
        kwargs["city"] = str(kwargs["city"])
        kwargs["crs"] = str(kwargs["crs"])
        kwargs["factor"] = int(kwargs["factor"])  # type: ignore[call-overload]
        return cls(**kwargs)  # type: ignore[arg-type]


def _split_count(n: int, parts: int, rng: np.random.Generator) -> list[int]:
    base = [n // parts] * parts
    for i in rng.permutation(parts)[: n % parts]:
        base[i] += 1
    return base


def sample_city_chips(
    dataset: EnviroAtlas,
    city: str,
    split: str,
    n: int,
    *,
    size: int = 128,
    factor: int = 4,
    seed: int = 0,
    weak_layer: str = "prior",
    mapping: MappingName = "prior",
    with_truth: bool = True,
) -> ChipSet:
    """``n`` random chips spread evenly over the tiles of ``city``/``split``.

    Args:
        size: chip size in 1 m pixels (divisible by ``factor``).
        factor: pooling to the prior's resolution (4 in the paper).
        weak_layer: a prior layer of the dataset ("prior", "prior_no_osm_no_buildings")
            or a folder written by ``landprior data weak-labels`` (see ``weak_source``).
        with_truth: read the high-res labels when the tiles have them (for reporting).
    """
    if n < 1:
        raise ValueError(f"number of chips must be >= 1, got {n}")
    if size % factor:
        raise ValueError(f"chip size {size} is not divisible by the factor {factor}")
    tiles = dataset.tiles(city, split)
    if not tiles:
        raise ValueError(f"city {city!r} has no tiles in split {split!r} under {dataset.root}")
    read_weak = weak_reader(dataset, weak_layer)
    rng = np.random.default_rng(seed)
    images, weaks, truths, ids, offsets, transforms = [], [], [], [], [], []
    crs = None
    for tile, count in zip(tiles, _split_count(n, len(tiles), rng), strict=True):
        if count == 0:
            continue
        profile = dataset.profile(tile, "naip")
        crs = crs or profile["crs"].to_wkt()
        chips = random_chips(
            profile["height"], profile["width"], size, count,
            generator=rng, transform=profile["transform"], name=tile.key,
        )
        has_truth = with_truth and "lc" in tile.paths and Path(tile.paths["lc"]).is_file()
        if has_truth:  # truth shifted against the imagery would score the wrong pixels
            dataset.grid(tile, ["naip", "lc"])
        for chip in chips:
            naip = dataset.read(tile, "naip", chip.window).astype(np.float32) / 255.0
            images.append(average_pool(naip, factor))
            weak = average_pool(read_weak(tile, chip.window), factor)
            weaks.append(weak / np.maximum(weak.sum(axis=0, keepdims=True), 1e-8))
            if has_truth:
                labels = dataset.read_labels(tile, mapping, chip.window)
                truths.append(mode_downsample(labels, factor))
            ids.append(tile.tile_id)
            offsets.append((chip.row, chip.col))
            transforms.append(tuple(downsample_transform(chip.transform, factor))[:6])
    truth = np.stack(truths) if truths and len(truths) == len(images) else None
    log.info("sampled %d chips of %s/%s (%d tiles)", len(images), city, split, len(tiles))
    return ChipSet(
        city=city,
        crs=str(crs),
        factor=factor,
        image=np.stack(images).astype(np.float32),
        weak=np.stack(weaks).astype(np.float32),
        tile_ids=np.array(ids),
        offsets=np.array(offsets, dtype=np.int64),
        transforms=np.array(transforms, dtype=np.float64),
        truth=truth,
    )
