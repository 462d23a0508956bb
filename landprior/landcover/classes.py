"""The five land-cover classes and the mappings from raw label codes to them.

Paper section 4 / PAPER_NOTES: water, impervious, soil/barren, trees/forest,
grass/herbaceous. Two EnviroAtlas mappings exist and both are offered:

* ``"prior"`` (the authors' prior data): shrub (52) and woody/emergent wetlands (91, 92)
  count as trees, agriculture (80) and orchards (82) as grass; 0 is ignored.
* ``"strict"`` (the implicit-posterior evaluation): only 10/20/30/40/70 are kept;
  shrub, agriculture, orchards, wetlands and unclassified are ignored.

landprior's default for training and evaluation is ``"prior"`` (every labelled pixel is
scored); pass ``mapping="strict"`` to reproduce the baselines' ignore protocol.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("water", "impervious", "barren", "trees", "grass")
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_INDEX = 255
"""Label value for pixels that are unlabelled or ignored; also the nodata of class maps."""

CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 112, 255),  # water
    (156, 156, 156),  # impervious
    (255, 170, 0),  # barren
    (38, 115, 0),  # trees
    (163, 255, 115),  # grass
)

MappingName = Literal["prior", "strict"]
MAPPING_NAMES: tuple[str, ...] = get_args(MappingName)

ENVIROATLAS_RAW_NAMES: dict[int, str] = {
    0: "unclassified",
    10: "water",
    20: "impervious surface",
    30: "soil and barren",
    40: "trees and forest",
    52: "shrubs",
    70: "grass and herbaceous",
    80: "agriculture",
    82: "orchards",
    91: "woody wetlands",
    92: "emergent wetlands",
}

ENVIROATLAS_MAPPINGS: dict[str, dict[int, int]] = {
    "prior": {10: 0, 20: 1, 30: 2, 40: 3, 52: 3, 91: 3, 92: 3, 70: 4, 80: 4, 82: 4},
    "strict": {10: 0, 20: 1, 30: 2, 40: 3, 70: 4},
}

CHESAPEAKE_MAPPING: dict[int, int] = {1: 0, 5: 1, 6: 1, 4: 2, 2: 3, 3: 4}
"""Chesapeake Land Cover 7-class codes -> five classes; 15 (no data) is ignored."""

NLCD_CODES: tuple[int, ...] = (
    0, 11, 12, 21, 22, 23, 24, 31, 41, 42, 43, 52, 71, 81, 82, 90, 95,
)  # fmt: skip
"""Raw NLCD codes in index order: EnviroAtlas ``b_nlcd`` stores the index 0..16."""


def lookup_table(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """A uint8 lookup table: raw code -> class index, IGNORE_INDEX elsewhere."""
    lut = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    for code, cls in mapping.items():
        lut[code] = cls
    return lut


def enviroatlas_mapping(name: str) -> dict[int, int]:
    """The named raw-code mapping; a wrong name lists the allowed ones."""
    try:
        return ENVIROATLAS_MAPPINGS[name]
    except KeyError:
        raise ValueError(
            f"unknown class mapping {name!r}; expected one of {MAPPING_NAMES}"
        ) from None


def remap(raw: np.ndarray, mapping: dict[int, int] | str = "prior") -> np.ndarray:
    """Map raw label codes (any integer array) to class indices (uint8, 255 = ignore)."""
    if isinstance(mapping, str):
        mapping = enviroatlas_mapping(mapping)
    raw = np.asarray(raw)
    if not np.issubdtype(raw.dtype, np.integer):
        if np.isnan(raw).any():
            raise ValueError("label raster contains NaN; expected integer class codes")
        raw = raw.astype(np.int64)
    out = np.full(raw.shape, IGNORE_INDEX, dtype=np.uint8)
    valid = (raw >= 0) & (raw < 256)
    out[valid] = lookup_table(mapping)[raw[valid]]
    return out


def nlcd_codes_to_index(codes: np.ndarray) -> np.ndarray:
    """Raw NLCD codes (11, 21, ...) -> EnviroAtlas index 0..16 (unknown codes -> 0)."""
    lut = np.zeros(256, dtype=np.uint8)
    for i, code in enumerate(NLCD_CODES):
        lut[code] = i
    codes = np.asarray(codes).astype(np.int64)
    return lut[np.clip(codes, 0, 255)]
