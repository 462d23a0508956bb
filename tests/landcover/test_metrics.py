import numpy as np
import pytest

from landprior.landcover.metrics import (
    ConfusionAccumulator,
    confusion_matrix,
    scores_from_confusion,
)


def test_hand_computed_scores() -> None:
    truth = np.array([0, 0, 1, 1, 255, 2])
    pred = np.array([0, 1, 1, 1, 3, 2])
    cm = confusion_matrix(pred, truth, n_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    s = scores_from_confusion(cm, ("a", "b", "c"))
    assert s["accuracy"] == pytest.approx(4 / 5)
    assert s["iou"] == pytest.approx({"a": 0.5, "b": 2 / 3, "c": 1.0})
    assert s["miou"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)


def test_pooling_over_tiles_differs_from_averaging_tiles() -> None:
    acc = ConfusionAccumulator(n_classes=2)
    acc.update(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1]))  # 75 %
    acc.update(np.array([1]), np.array([0]))  # 0 %
    assert acc.scores()["accuracy"] == pytest.approx(3 / 5)


def test_absent_class_is_nan_and_left_out_of_mean() -> None:
    s = scores_from_confusion(np.array([[3, 0, 0], [0, 1, 0], [0, 0, 0]]), ("a", "b", "c"))
    assert np.isnan(s["iou"]["c"])
    assert s["miou"] == pytest.approx(1.0)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([7]), np.array([0]))
