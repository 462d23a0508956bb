"""Evaluation of class maps against a city's labels, and the Table-1-shaped report table.

Protocol (PAPER_NOTES): argmax per pixel; accuracy over non-ignored pixels pooled over the
city's test tiles; IoU per class with intersection and union summed over tiles, averaged
over the classes. The label mapping ("prior" or "strict") decides which raw codes are
ignored. Tiles are read in row blocks, so memory stays bounded on large tiles.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from landprior.fileio import write_text_atomic
from landprior.landcover.classes import (
    CLASS_NAMES,
    ENVIROATLAS_RAW_NAMES,
    IGNORE_INDEX,
    MappingName,
    remap,
)
from landprior.landcover.enviroatlas import EnviroAtlas, Tile
from landprior.landcover.geotiff import CLASS_NODATA
from landprior.landcover.metrics import ConfusionAccumulator
from landprior.landcover.weak_source import weak_reader

log = logging.getLogger(__name__)

BLOCK_ROWS = 1024

METRIC_COLUMNS: tuple[str, ...] = (
    "method", "city", "accuracy", "miou", *[f"iou_{c}" for c in CLASS_NAMES], "pixels", "tiles",
)


def _row_blocks(height: int, width: int, rows: int = BLOCK_ROWS) -> Iterable[Window]:
    for r in range(0, height, rows):
        yield Window(0, r, width, min(rows, height - r))


def _check_grid(path: Path, src: rasterio.io.DatasetReader, profile: Mapping) -> None:
    if src.crs != profile["crs"]:
        raise ValueError(f"{path}: CRS {src.crs} differs from the labels' CRS {profile['crs']}")
    # Absolute tolerance in map units (a millionth of a pixel): a relative one scales with
    # the coordinates (rtol 1e-5 of a UTM northing is ~40 m) and lets shifted maps through.
    atol = 1e-6 * abs(profile["transform"].a)
    if (src.height, src.width) != (profile["height"], profile["width"]) or not np.allclose(
        tuple(src.transform)[:6], tuple(profile["transform"])[:6], rtol=0, atol=atol
    ):
        raise ValueError(
            f"{path}: grid {src.height}x{src.width} {tuple(src.transform)[:6]} differs from "
            f"the labels' grid {profile['height']}x{profile['width']} "
            f"{tuple(profile['transform'])[:6]}"
        )


def evaluate_class_maps(
    dataset: EnviroAtlas,
    predictions: Mapping[Tile, str | os.PathLike[str]],
    *,
    mapping: MappingName = "prior",
) -> dict:
    """Pooled scores of class-map GeoTIFFs (one per tile) against the tiles' labels.

    Label codes outside the EnviroAtlas class table (not merely ignored ones such as 0,
    unclassified) are left out of the scores with a warning naming the tile and codes.
    Labelled pixels the map marks as no data (255: the imagery had none there) are not
    scored either: they are counted in ``unmapped_pixels`` and warned about per tile.
    """
    if not predictions:
        raise ValueError("no predictions to evaluate")
    acc = ConfusionAccumulator()
    unmapped_total = 0
    for tile, path in predictions.items():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"prediction for {tile.key} not found: {path}")
        profile = dataset.profile(tile, "lc")
        unknown: dict[int, int] = {}
        unmapped = 0
        with rasterio.open(path) as src:
            _check_grid(path, src, profile)
            for win in _row_blocks(profile["height"], profile["width"]):
                raw = dataset.read(tile, "lc", win)[0]
                _count_unknown_codes(raw, unknown)
                pred, truth = src.read(1, window=win), remap(raw, mapping)
                no_data = (pred == CLASS_NODATA) & (truth != IGNORE_INDEX)
                if no_data.any():
                    unmapped += int(no_data.sum())
                    truth = np.where(no_data, IGNORE_INDEX, truth)
                try:
                    acc.update(pred, truth)
                except ValueError as err:
                    raise ValueError(f"{path} (tile {tile.key}): {err}") from None
        if unknown:
            log.warning(
                "tile %s: %d labelled pixels carry codes %s outside the class table %s; "
                "they are not scored", tile.key, sum(unknown.values()), sorted(unknown),
                sorted(ENVIROATLAS_RAW_NAMES),
            )
        if unmapped:
            log.warning("tile %s: %d labelled pixels are no data (%d) in %s; they are not "
                        "scored", tile.key, unmapped, CLASS_NODATA, path)
        unmapped_total += unmapped
    scores = acc.scores()
    scores["unmapped_pixels"] = unmapped_total
    scores["tiles"] = len(predictions)
    scores["confusion"] = acc.matrix.tolist()
    return scores


def _count_unknown_codes(raw: np.ndarray, counts: dict[int, int]) -> None:
    """Add the pixels of ``raw`` whose code is not in the EnviroAtlas table to ``counts``."""
    if raw.dtype == np.uint8:  # the layout's dtype: a histogram is much cheaper than unique
        hist = np.bincount(raw.ravel(), minlength=256)
        codes, n = np.flatnonzero(hist), hist[hist > 0]
    else:
        codes, n = np.unique(raw, return_counts=True)
    for code, k in zip(codes.tolist(), n.tolist(), strict=True):
        if code not in ENVIROATLAS_RAW_NAMES:
            counts[code] = counts.get(code, 0) + k


def evaluate_weak_labels(
    dataset: EnviroAtlas,
    tiles: Sequence[Tile],
    *,
    weak_layer: str = "prior",
    mapping: MappingName = "prior",
) -> dict:
    """Pooled scores of the weak-label argmax (a baseline row of the table)."""
    if not tiles:
        raise ValueError("no tiles to evaluate")
    read_weak = weak_reader(dataset, weak_layer)
    acc = ConfusionAccumulator()
    for tile in tiles:
        profile = dataset.profile(tile, "lc")
        for win in _row_blocks(profile["height"], profile["width"]):
            weak = read_weak(tile, win)
            acc.update(weak.argmax(axis=0), dataset.read_labels(tile, mapping, win))
    scores = acc.scores()
    scores["unmapped_pixels"] = 0  # the weak labels cover every pixel: same keys as maps
    scores["tiles"] = len(tiles)
    scores["confusion"] = acc.matrix.tolist()
    return scores


def metrics_row(method: str, city: str, scores: Mapping) -> dict:
    """One CSV row (percent figures) from :func:`evaluate_class_maps` output."""
    row = {
        "method": method,
        "city": city,
        "accuracy": round(100 * scores["accuracy"], 2),
        "miou": round(100 * scores["miou"], 2),
        "pixels": scores["pixels"],
        "tiles": scores["tiles"],
    }
    for name in CLASS_NAMES:
        value = scores["iou"][name]
        row[f"iou_{name}"] = "" if math.isnan(value) else round(100 * value, 2)
    return row


def one_decimal(value: object) -> str:
    """``value`` (a number or the CSV's decimal text) rounded half up to one decimal.

    The CSV keeps two decimals; formatting its float with ``:.1f`` would round 66.85 down
    (66.85 is 66.8499... in binary), so tables would disagree with a reader rounding the
    CSV by hand.
    """
    try:
        number = Decimal(str(value).strip())
    except ArithmeticError:  # empty cell or text: not a score
        return "-"
    if not number.is_finite():
        return "-"
    return str(number.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def write_csv_atomic(rows: Sequence[Mapping], path: str | os.PathLike[str],
                     columns: Sequence[str] = METRIC_COLUMNS) -> Path:
    """Write rows as CSV through a temp file and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="raise")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(buf.getvalue(), path)
    return path


def read_metrics_csv(path: str | os.PathLike[str]) -> list[dict]:
    """Rows of a metrics CSV; a missing column names the file."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = set(METRIC_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path} lacks the columns {sorted(missing)}")
        return list(reader)


def table1_markdown(rows: Sequence[Mapping], methods: Sequence[str],
                    cities: Sequence[str]) -> str:
    """A Table-1-shaped Markdown table: methods x cities, "accuracy / mIoU" in percent."""
    by_key = {(r["method"], r["city"]): r for r in rows}
    head = "| method | " + " | ".join(cities) + " |"
    sep = "|---|" + "---|" * len(cities)
    lines = [head, sep]
    for m in methods:
        cells = []
        for c in cities:
            r = by_key.get((m, c))
            cells.append(f"{one_decimal(r['accuracy'])} / {one_decimal(r['miou'])}" if r else "-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
