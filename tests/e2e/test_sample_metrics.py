"""The detection and segmentation samples' pieces on hand-made inputs: IoU, NMS, VOC AP / mAP, anchor matching
and box encoding, mIoU, and the synthetic random-shapes data."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from examples.object_detection.metrics import average_precision, iou_matrix, mean_average_precision, nms  # noqa: E402
from examples.semantic_segmentation.metrics import confusion_matrix, iou_per_class, mean_iou  # noqa: E402


def test_iou_matrix_of_hand_made_boxes():
    a = np.array([[0, 0, 2, 2], [0, 0, 4, 4]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], np.float32)
    expected = np.array([[1 / 7, 1.0, 0.0], [4 / 16, 4 / 16, 0.0]])
    np.testing.assert_allclose(iou_matrix(a, b), expected, rtol=1e-6)


def test_nms_suppresses_overlaps_of_the_same_class_only():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.6, 0.9, 0.8, 0.5])
    classes = np.array([1, 1, 2, 1])
    # box 0 overlaps box 1 (IoU 9/11) of its class and loses; box 2 has another class; box 3 overlaps nothing
    assert nms(boxes, scores, classes, 0.5).tolist() == [1, 2, 3]
    assert nms(boxes, scores, classes, 0.9).tolist() == [1, 2, 0, 3]  # 9/11 < 0.9: both kept


def test_average_precision_all_point_interpolation():
    # scores 0.9 TP, 0.8 FP, 0.7 TP over 2 gt: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    assert average_precision(np.array([True, False, True]), np.array([0.9, 0.8, 0.7]), 2) == pytest.approx(
        0.5 * 1.0 + 0.5 * 2 / 3)
    # the envelope: a late TP lifts the precision of the earlier recall levels
    assert average_precision(np.array([False, True]), np.array([0.9, 0.5]), 1) == pytest.approx(0.5)
    assert average_precision(np.array([True, True]), np.array([0.1, 0.2]), 4) == pytest.approx(0.5)
    assert average_precision(np.zeros(0, bool), np.zeros(0), 3) == 0.0


def test_mean_average_precision_counts_duplicates_and_low_iou_as_false_positives():
    gt_boxes = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)]
    gt_labels = [np.array([1, 2])]
    det_boxes = np.array([
        [0, 0, 10, 10],  # class 1, exact: TP
        [0, 0, 10, 10],  # class 1, duplicate: FP
        [20, 20, 30, 36],  # class 2, IoU 100/160 = 0.625 >= 0.5 but scored below the FP
        [20, 25, 30, 35],  # class 2, IoU 50/150 = 1/3: FP
        [40, 40, 50, 50],  # class 3: no gt of that class anywhere, left out of the mean
    ], np.float32)
    detections = [(det_boxes, np.array([0.9, 0.8, 0.6, 0.7, 0.9]), np.array([1, 1, 2, 2, 3]))]
    m, per_class = mean_average_precision(detections, gt_boxes, gt_labels, num_classes=3)
    assert per_class == pytest.approx({1: 1.0, 2: 0.5})  # class 2: FP at 0.7 then TP at 0.6 -> precision 1/2
    assert m == pytest.approx(0.75)


def test_mean_average_precision_iou_threshold_is_inclusive_and_per_image():
    gt_boxes = [np.array([[0, 0, 10, 10]], np.float32), np.array([[0, 0, 10, 10]], np.float32)]
    gt_labels = [np.array([1]), np.array([1])]
    half = np.array([[0, 0, 10, 20]], np.float32)  # IoU exactly 0.5 with the gt
    detections = [(half, np.array([0.9]), np.array([1])), (np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int))]
    m, _ = mean_average_precision(detections, gt_boxes, gt_labels, num_classes=1)
    assert m == pytest.approx(0.5)  # one of two gt found, with precision 1
    m, _ = mean_average_precision(detections, gt_boxes, gt_labels, num_classes=1, iou_threshold=0.51)
    assert m == 0.0


def test_anchor_matching_and_box_encoding():
    from examples.object_detection.model import decode, encode, make_anchors, match, xyxy

    anchors = make_anchors(64)
    assert anchors.shape == (8 * 8 * 6 + 4 * 4 * 6, 4)
    first = xyxy(anchors[:1])[0].tolist()  # cell (0, 0) of the stride-8 map, 12 px, ratio 1
    assert first == pytest.approx([-2.0, -2.0, 10.0, 10.0])
    gt = torch.tensor([[[-2.0, -2.0, 10.0, 10.0], [40.0, 40.0, 43.0, 43.0], [0, 0, 0, 0]]])
    labels = torch.tensor([[3, 1, 0]])
    cls, matched = match(anchors, gt, labels)
    assert cls[0, 0] == 3 and torch.equal(matched[0, 0], gt[0, 0])
    # the 3x3 box overlaps every anchor by < 0.5 but still takes its best anchor
    assert int((cls[0] == 1).sum()) == 1
    assert int((cls[0] > 0).sum()) == 1 + int((cls[0] == 3).sum())
    boxes = torch.tensor([[5.0, 6.0, 20.0, 30.0], [33.0, 1.0, 40.0, 9.0]])
    pair = anchors[[10, 300]]
    torch.testing.assert_close(decode(encode(boxes, pair), pair), boxes, rtol=1e-5, atol=1e-4)


def test_confusion_matrix_and_miou_of_hand_made_masks():
    target = np.array([[[0, 0], [1, 1]], [[2, 2], [0, 0]]])
    pred = np.array([[[0, 1], [1, 1]], [[2, 0], [0, 0]]])
    cm = confusion_matrix(pred, target, 4)
    assert cm.tolist() == [[3, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    ious = iou_per_class(cm)
    np.testing.assert_allclose(ious[:3], [3 / 5, 2 / 3, 1 / 2])
    assert np.isnan(ious[3])  # class 3 in neither mask: left out of the mean
    m, _ = mean_iou(pred, target, 4)
    assert m == pytest.approx((3 / 5 + 2 / 3 + 1 / 2) / 3)
    assert mean_iou(target, target, 4)[0] == 1.0
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix(np.array([5]), np.array([0]), 4)


def test_random_shapes_are_deterministic_and_boxes_masks_labels_agree():
    pytest.importorskip("skimage")
    from examples.common.shapes import make_shapes

    a, b = make_shapes(40, seed=3), make_shapes(40, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(make_shapes(40, seed=4).images, a.images)
    assert a.images.shape == (40, 3, 64, 64) and 0.0 <= float(a.images.min()) and float(a.images.max()) <= 1.0
    for i in range(40):
        for box, label in zip(a.boxes[i].long(), a.labels[i]):
            if label == 0:
                continue
            x0, y0, x1, y1 = box.tolist()
            inside = a.masks[i, y0:y1, x0:x1] == label
            # the box is the tight box of the shape's pixels: every border row and column touches the shape
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        # every foreground pixel belongs to a box of its class
        covered = torch.zeros(64, 64, dtype=torch.bool)
        for box, label in zip(a.boxes[i].long(), a.labels[i]):
            x0, y0, x1, y1 = box.tolist()
            covered[y0:y1, x0:x1] |= (a.masks[i, y0:y1, x0:x1] == label) & (label > 0)
        assert torch.equal(covered, a.masks[i] > 0)
    assert set(a.labels[a.labels > 0].tolist()) == {1, 2, 3, 4}


def test_full_mode_table_row_from_a_run_log():
    from examples.common.full_mode import row

    result = {"fp32_map50": 0.9, "init_map50": 0.8, "epochs": [{"map50": 0.85}, {"map50": 0.88}], "final_map50": 0.88,
              "export_map50": 0.87, "max_abs_diff": 0.25, "mean_abs_diff": 0.001, "output_scale": 20.0}
    log = ("│ FLOPs (M): full / current      │ 26.690 / 20.671 (22.5 % removed) │\n"
           "│ FLOPs (M): full / current      │ 26.690 / 18.000 (32.6 % removed) │\n"
           f"RESULT {json.dumps(result)}\n")
    assert row("ssd_filter_pruning", log, "map50") == (
        "| `ssd_filter_pruning` | 0.900 | 0.800 | 0.850, 0.880 | 0.880 | -2.0 | 0.870 (0.25 / 0.001 of 20) | "
        "MFLOPs 26.690 / 18.000 (32.6 % removed) |")
