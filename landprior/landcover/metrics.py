"""Accuracy and class-mean IoU pooled over a city's tiles (the baselines' protocol).

Per PAPER_NOTES: argmax per pixel; accuracy over non-ignored pixels pooled over all
test tiles; IoU per class with intersection and union summed over tiles, then the mean
over classes. A class with an empty union in both prediction and truth (absent from the
city and never predicted) is left out of the mean and reported as NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from landprior.landcover.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES


def confusion_matrix(
    pred: np.ndarray,
    truth: np.ndarray,
    n_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """(n_classes, n_classes) int64 counts, rows = truth, columns = prediction.

    Pixels whose truth equals ``ignore_index`` are skipped; a prediction outside
    ``[0, n_classes)`` on a scored pixel is an error.
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}")
    keep = truth != ignore_index
    t = truth[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= n_classes):
        raise ValueError(f"truth has labels outside [0, {n_classes}) other than {ignore_index}")
    if p.size and (p.min() < 0 or p.max() >= n_classes):
        bad = np.unique(p[(p < 0) | (p >= n_classes)])[:5].tolist()
        raise ValueError(f"prediction has labels {bad} outside [0, {n_classes}) on scored pixels")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def scores_from_confusion(cm: np.ndarray, class_names: tuple[str, ...] = CLASS_NAMES) -> dict:
    """Accuracy, per-class IoU and class-mean IoU (fractions in [0, 1]) from counts."""
    cm = np.asarray(cm, dtype=np.int64)
    total = cm.sum()
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return {
        "accuracy": float(inter.sum() / total) if total else float("nan"),
        "miou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "iou": {name: float(v) for name, v in zip(class_names, iou, strict=True)},
        "pixels": int(total),
    }


@dataclass
class ConfusionAccumulator:
    """Pool a confusion matrix tile by tile, so a city never needs to be in memory."""

    n_classes: int = NUM_CLASSES
    ignore_index: int = IGNORE_INDEX
    matrix: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        """Add the confusion counts of one (pred, truth) pair of class maps."""
        self.matrix += confusion_matrix(pred, truth, self.n_classes, self.ignore_index)

    def scores(self) -> dict:
        """Accuracy, per-class and mean IoU of everything added so far."""
        return scores_from_confusion(self.matrix, CLASS_NAMES[: self.n_classes])
