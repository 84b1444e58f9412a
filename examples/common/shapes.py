"""Synthetic images of shapes with boxes and per-pixel masks, drawn by scikit-image's ``draw.random_shapes``.

Each image is RGB on a white background with 1 to ``max_shapes`` non-overlapping shapes (rectangle, circle,
triangle, ellipse), each in its own random colour. Image ``i`` of a split is drawn from the random generator
seeded with ``(seed, i)``, so a split is the same on every machine and run. ``random_shapes`` returns each
shape's kind and box; the mask is recovered from the colours (every shape has its own colour and shapes do
not overlap), and the box is the tight box of the shape's pixels (skimage's box clipped to what was drawn).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch

CLASSES = ("rectangle", "circle", "triangle", "ellipse")  # class k + 1; 0 is the background
BACKGROUND = 255


class Shapes(NamedTuple):
    """images float32 [N, 3, S, S] in [0, 1]; boxes float32 [N, M, 4] (x0, y0, x1, y1, pixels, end exclusive);
    labels int64 [N, M] (1..4, 0 = no shape in that slot); masks int64 [N, S, S] (0 background, 1..4)."""

    images: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [P, 4] with boxes b [Q, 4] (x0, y0, x1, y1)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def draw_one(rng: np.random.Generator, size: int, max_shapes: int, min_size: int, max_size: int):
    """(image uint8 [S, S, 3], boxes [K, 4], labels [K], mask [S, S]) of one random image."""
    from skimage.draw import random_shapes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Could not fit any shapes": fewer shapes is fine
        image, found = random_shapes((size, size), max_shapes=max_shapes, min_shapes=1, min_size=min_size,
                                     max_size=max_size, intensity_range=((0, 180),) * 3, allow_overlap=False, rng=rng)
    key = (image.astype(np.int64) * np.array([65536, 256, 1])).sum(-1)
    colours = np.unique(key[key != BACKGROUND * (65536 + 256 + 1)])
    if not found or len(colours) != len(found):
        return None  # two shapes share a colour (vanishingly rare) or none was drawn: the caller redraws
    tight = []
    for colour in colours:
        rows, cols = np.nonzero(key == colour)
        tight.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    tight = np.array(tight, np.float32)
    given = np.array([[c0, r0, c1, r1] for _, ((r0, r1), (c0, c1)) in found], np.float32)
    match = _iou(tight, np.clip(given, 0, size)).argmax(1)  # the skimage label of each colour
    labels = np.array([CLASSES.index(found[j][0]) + 1 for j in match], np.int64)
    mask = np.zeros((size, size), np.int64)
    for colour, label in zip(colours, labels):
        mask[key == colour] = label
    return image, tight, labels, mask


def make_shapes(n: int, seed: int, size: int = 64, max_shapes: int = 3, min_size: int = 12,
                max_size: int = 32) -> Shapes:
    """``n`` images of split ``seed`` (image ``i`` from ``default_rng([seed, i, attempt])``)."""
    images = np.zeros((n, size, size, 3), np.uint8)
    boxes = np.zeros((n, max_shapes, 4), np.float32)
    labels = np.zeros((n, max_shapes), np.int64)
    masks = np.zeros((n, size, size), np.int64)
    for i in range(n):
        drawn, attempt = None, 0
        while drawn is None:
            drawn = draw_one(np.random.default_rng([seed, i, attempt]), size, max_shapes, min_size, max_size)
            attempt += 1
        image, b, lab, mask = drawn
        images[i], boxes[i, : len(b)], labels[i, : len(lab)], masks[i] = image, b, lab, mask
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return Shapes(x, torch.from_numpy(boxes), torch.from_numpy(labels), torch.from_numpy(masks))


def train_test(settings: dict) -> tuple[Shapes, Shapes]:
    """The training and held-out splits of a sample's settings (``train_images``, ``test_images``, ``seed``,
    ``image_size``); the held-out images come from another seed than the training images."""
    kw = {"size": int(settings.get("image_size", 64)), "max_shapes": int(settings.get("max_shapes", 3))}
    seed = int(settings.get("data_seed", 0))
    return (make_shapes(int(settings["train_images"]), 2 * seed, **kw),
            make_shapes(int(settings["test_images"]), 2 * seed + 1, **kw))
