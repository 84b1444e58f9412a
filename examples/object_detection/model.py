"""A small SSD-style single-shot detector: a conv backbone, anchors on two feature maps (strides 8 and 16),
classification and box-regression heads; anchor matching and box encoding, the multibox loss with hard-negative
mining, and decoding (softmax, box decode, per-class NMS).

The model's forward returns the raw heads ``(class_logits [N, A, C + 1], box_deltas [N, A, 4])`` so that the
exported ONNX / OpenVINO model is compared with PyTorch output for output; decoding runs after the model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from examples.object_detection.metrics import nms

VARIANCES = (0.1, 0.2)  # SSD's centre / size scaling of the regression targets


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class TinySSD(nn.Module):
    """Backbone to a stride-8 map (48 channels) and a stride-16 map (64 channels), about 0.14M parameters and
    13M multiply-adds on a 64x64 image; a 3x3 class head and box head on each, ``anchors_per_cell`` anchors per cell."""

    def __init__(self, num_classes: int = 4, anchors_per_cell: int = 6) -> None:
        super().__init__()
        self.num_classes, self.k = num_classes, anchors_per_cell
        self.stage1 = nn.Sequential(
            _conv_bn_relu(3, 16, 2), _conv_bn_relu(16, 24), _conv_bn_relu(24, 32, 2), _conv_bn_relu(32, 32),
            _conv_bn_relu(32, 48, 2), _conv_bn_relu(48, 48),
        )
        self.stage2 = nn.Sequential(_conv_bn_relu(48, 64, 2), _conv_bn_relu(64, 64))
        self.cls_heads = nn.ModuleList(nn.Conv2d(ch, self.k * (num_classes + 1), 3, padding=1) for ch in (48, 64))
        self.box_heads = nn.ModuleList(nn.Conv2d(ch, self.k * 4, 3, padding=1) for ch in (48, 64))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f1 = self.stage1(x)
        f2 = self.stage2(f1)
        cls, box = [], []
        for f, ch, bh in zip((f1, f2), self.cls_heads, self.box_heads):
            cls.append(ch(f).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.num_classes + 1))
            box.append(bh(f).permute(0, 2, 3, 1).reshape(x.shape[0], -1, 4))
        return torch.cat(cls, 1), torch.cat(box, 1)


def make_anchors(image_size: int = 64, strides=(8, 16), sizes=((12, 18), (26, 38)),
                 ratios=(1.0, 2.0, 0.5)) -> torch.Tensor:
    """Anchors [A, 4] (cx, cy, w, h) in pixels, in the heads' order: map, row, column, size, ratio."""
    out = []
    for stride, scales in zip(strides, sizes):
        n = image_size // stride
        centres = (torch.arange(n, dtype=torch.float32) + 0.5) * stride
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        shapes = torch.tensor([[s * r**0.5, s / r**0.5] for s in scales for r in ratios])  # (w, h)
        cell = torch.stack([cx, cy], -1).reshape(-1, 1, 2).expand(-1, len(shapes), 2)
        out.append(torch.cat([cell, shapes.expand(n * n, -1, -1)], -1).reshape(-1, 4))
    return torch.cat(out)


def xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x0, y0, x1, y1)."""
    return torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], -1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of a [..., P, 4] with b [..., Q, 4] (x0, y0, x1, y1) -> [..., P, Q]."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).prod(-1)
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter).clamp(min=1e-9)


def encode(gt: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Regression targets of gt boxes (x0, y0, x1, y1) [..., A, 4] against anchors (cx, cy, w, h) [A, 4]."""
    wh = (gt[..., 2:] - gt[..., :2]).clamp(min=1e-3)
    centre = (gt[..., :2] + gt[..., 2:]) / 2
    return torch.cat([(centre - anchors[:, :2]) / anchors[:, 2:] / VARIANCES[0],
                      torch.log(wh / anchors[:, 2:]) / VARIANCES[1]], -1)


def decode(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Boxes (x0, y0, x1, y1) from regression outputs [..., A, 4]; the inverse of :func:`encode`."""
    centre = anchors[:, :2] + deltas[..., :2] * VARIANCES[0] * anchors[:, 2:]
    wh = anchors[:, 2:] * torch.exp(deltas[..., 2:] * VARIANCES[1])
    return torch.cat([centre - wh / 2, centre + wh / 2], -1)


def match(anchors: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
          threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD matching for a batch: (anchor class targets [B, A] (0 background), matched gt boxes [B, A, 4]).

    An anchor takes the gt box it overlaps most when IoU >= ``threshold``; every gt box also takes its
    best anchor, whatever the IoU. ``labels`` 0 marks padding slots of ``boxes`` [B, M, 4].
    """
    b, a = boxes.shape[0], anchors.shape[0]
    valid = labels > 0
    iou = box_iou(xyxy(anchors).expand(b, -1, -1), boxes).masked_fill(~valid[:, None, :], -1.0)  # [B, A, M]
    best_iou, best_gt = iou.max(2)
    best_anchor = iou.argmax(1)  # [B, M]
    # padding slots write into a dummy column A, dropped after the scatter
    target = torch.where(valid, best_anchor, torch.full_like(best_anchor, a))
    slots = torch.arange(boxes.shape[1], device=boxes.device).expand(b, -1)
    forced_gt = torch.full((b, a + 1), -1, dtype=torch.long).scatter_(1, target, slots)[:, :a]
    best_gt = torch.where(forced_gt >= 0, forced_gt, best_gt)
    positive = (best_iou >= threshold) | (forced_gt >= 0)
    cls = torch.where(positive, labels.gather(1, best_gt), torch.zeros_like(best_gt))
    matched = boxes.gather(1, best_gt[..., None].expand(-1, -1, 4))
    return cls, matched


def multibox_loss(cls_logits: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, boxes: torch.Tensor,
                  labels: torch.Tensor, neg_pos_ratio: int = 3) -> torch.Tensor:
    """Smooth-L1 box loss on positive anchors plus cross-entropy on positives and the ``neg_pos_ratio`` x
    hardest negatives of each image, both divided by the number of positives."""
    target_cls, matched = match(anchors, boxes, labels)
    positive = target_cls > 0
    num_pos = positive.sum(1, keepdim=True)
    ce = F.cross_entropy(cls_logits.reshape(-1, cls_logits.shape[-1]), target_cls.reshape(-1),
                         reduction="none").reshape(target_cls.shape)
    neg_loss = ce.detach().masked_fill(positive, -1.0)
    rank = neg_loss.argsort(1, descending=True).argsort(1)
    hard_negative = rank < neg_pos_ratio * num_pos
    cls_loss = (ce * (positive | hard_negative)).sum()
    loc = F.smooth_l1_loss(deltas, encode(matched, anchors), reduction="none").sum(-1)
    loc_loss = (loc * positive).sum()
    return (cls_loss + loc_loss) / num_pos.sum().clamp(min=1)


def detect(cls_logits: np.ndarray, deltas: np.ndarray, anchors: torch.Tensor, score_threshold: float = 0.05,
           iou_threshold: float = 0.45, max_per_image: int = 20,
           top_k: int = 200) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image (boxes [K, 4], scores [K], labels [K]) after softmax, decoding and per-class NMS of the
    ``top_k`` best (anchor, class) scores above ``score_threshold``."""
    probs = torch.softmax(torch.from_numpy(cls_logits).float(), -1).numpy()
    boxes = decode(torch.from_numpy(deltas).float(), anchors).numpy()
    out = []
    for p, bx in zip(probs, boxes):
        anchor_idx, cls = np.nonzero(p[:, 1:] > score_threshold)
        scores = p[anchor_idx, cls + 1]
        best = np.argsort(-scores, kind="stable")[:top_k]
        anchor_idx, cls, scores = anchor_idx[best], cls[best], scores[best]
        cand = bx[anchor_idx]
        keep = nms(cand, scores, cls, iou_threshold)[:max_per_image]
        out.append((cand[keep], scores[keep], cls[keep] + 1))
    return out
