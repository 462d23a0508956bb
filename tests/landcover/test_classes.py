import numpy as np
import pytest

from landprior.landcover import classes


def test_prior_mapping_merges_shrub_wetlands_and_agriculture() -> None:
    raw = np.array([[0, 10, 20, 30], [40, 52, 70, 80], [82, 91, 92, 99]], dtype=np.uint8)
    out = classes.remap(raw, "prior")
    assert out.dtype == np.uint8
    assert out.tolist() == [[255, 0, 1, 2], [3, 3, 4, 4], [4, 3, 3, 255]]


def test_strict_mapping_ignores_the_ambiguous_codes() -> None:
    raw = np.array([10, 20, 30, 40, 52, 70, 80, 82, 91, 92, 0])
    out = classes.remap(raw, "strict")
    assert out.tolist() == [0, 1, 2, 3, 255, 4, 255, 255, 255, 255, 255]


def test_unknown_mapping_names_the_choices() -> None:
    with pytest.raises(ValueError, match="prior"):
        classes.remap(np.zeros(3, dtype=np.uint8), "loose")


def test_nan_labels_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        classes.remap(np.array([10.0, np.nan]))


def test_chesapeake_and_nlcd_tables() -> None:
    out = classes.remap(np.array([1, 2, 3, 4, 5, 6, 15]), classes.CHESAPEAKE_MAPPING)
    assert out.tolist() == [0, 3, 4, 2, 1, 1, 255]
    idx = classes.nlcd_codes_to_index(np.array([11, 21, 41, 95, 0]))
    assert idx.tolist() == [1, 3, 8, 16, 0]
    assert len(classes.NLCD_CODES) == 17
    assert len(classes.CLASS_COLORS) == classes.NUM_CLASSES
