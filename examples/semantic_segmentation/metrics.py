"""Segmentation metrics in numpy: the confusion matrix, per-class IoU and mIoU."""

from __future__ import annotations

import numpy as np


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [num_classes, num_classes]: rows are the true class, columns the predicted class (any shapes)."""
    pred, target = np.asarray(pred).ravel().astype(np.int64), np.asarray(target).ravel().astype(np.int64)
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.size} pixels and target {target.size}; they must match")
    bad = (target < 0) | (target >= num_classes) | (pred < 0) | (pred >= num_classes)
    if bad.any():
        found = np.unique(np.concatenate([pred[bad], target[bad]]))[:5]
        raise ValueError(f"class ids must lie in [0, {num_classes}); found {found.tolist()}")
    return np.bincount(num_classes * target + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of every class (TP / (TP + FP + FN)); NaN for a class absent from both prediction and target."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(pred: np.ndarray, target: np.ndarray, num_classes: int) -> tuple[float, np.ndarray]:
    """(mIoU, IoU per class): the mean over the classes present in the prediction or the target, background
    included, from one confusion matrix over every pixel of every image."""
    ious = iou_per_class(confusion_matrix(pred, target, num_classes))
    return float(np.nanmean(ious)), ious
