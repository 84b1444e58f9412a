"""Detection metrics in numpy: IoU, class-aware NMS and VOC-style mAP (all-point interpolated AP per class)."""

from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [P, 4] with boxes b [Q, 4] (x0, y0, x1, y1) -> [P, Q]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy per-class NMS, highest score first.

    Boxes of different classes never suppress each other: one IoU matrix over all candidates, with
    cross-class pairs zeroed.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, classes = boxes[order], classes[order]
    overlap = (iou_matrix(boxes, boxes) > iou_threshold) & (classes[:, None] == classes[None, :])
    suppressed = np.zeros(len(order), bool)
    for i in range(len(order)):
        if not suppressed[i]:
            suppressed[i + 1 :] |= overlap[i, i + 1 :]
    return order[~suppressed]


def average_precision(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> float:
    """VOC (2010+) all-point interpolated AP of detections flagged true/false positive, over ``num_gt`` boxes."""
    if num_gt == 0:
        raise ValueError("average_precision needs at least one ground-truth box")
    order = np.argsort(-scores, kind="stable")
    hits = tp[order].astype(np.float64)
    tps, fps = np.cumsum(hits), np.cumsum(1.0 - hits)
    recall = np.concatenate([[0.0], tps / num_gt])
    precision = np.concatenate([[1.0], tps / np.maximum(tps + fps, 1e-12)])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
    return float(np.sum((recall[1:] - recall[:-1]) * envelope[1:]))


def _flag_image(boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray, iou_threshold: float) -> np.ndarray:
    """True positives among one image's detections of one class: in score order, each detection takes the
    unmatched gt box it overlaps most (IoU >= threshold); a gt box matched once makes later duplicates false."""
    tp = np.zeros(len(boxes), bool)
    if len(gt) == 0 or len(boxes) == 0:
        return tp
    iou = iou_matrix(boxes, gt)
    taken = np.zeros(len(gt), bool)
    for d in np.argsort(-scores, kind="stable"):
        candidates = np.where(taken, -1.0, iou[d])
        j = int(candidates.argmax())
        if candidates[j] >= iou_threshold:
            tp[d], taken[j] = True, True
    return tp


def mean_average_precision(detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                           gt_boxes: list[np.ndarray], gt_labels: list[np.ndarray], num_classes: int,
                           iou_threshold: float = 0.5) -> tuple[float, dict[int, float]]:
    """(mAP, {class: AP}) over images; ``detections[i]`` = (boxes, scores, labels) of image i, classes 1..C.

    Classes without any ground-truth box are left out of the mean (as VOC's evaluation does).
    """
    per_class: dict[int, float] = {}
    for c in range(1, num_classes + 1):
        flags, scores, num_gt = [], [], 0
        for (boxes, sc, labels), gb, gl in zip(detections, gt_boxes, gt_labels):
            mine, gt = labels == c, gb[gl == c]
            num_gt += len(gt)
            flags.append(_flag_image(boxes[mine], sc[mine], gt, iou_threshold))
            scores.append(sc[mine])
        if num_gt:
            per_class[c] = average_precision(np.concatenate(flags), np.concatenate(scores), num_gt)
    return (float(np.mean(list(per_class.values()))) if per_class else 0.0), per_class
