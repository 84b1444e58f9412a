"""Distillation losses between student and teacher outputs (reference §1.2), on any output structure."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F
from torch.utils import _pytree as pytree

from nncompress.errors import ValidationError

KD_TYPES = ("softmax", "mse")


def softmax_kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · mean over samples of the cross-entropy between softmax(teacher/T) and softmax(student/T)``:
    NNCF's ``T² · C · mean(-log_softmax(s/T) · softmax(t/T))``. Classes are dimension 1; outputs with more
    dimensions (e.g. segmentation maps) count every position as a sample."""
    if student.dim() < 2:
        raise ValidationError(
            f"the softmax distillation loss needs logits with a class dimension (at least 2-D, classes on dimension "
            f"1); got an output of shape {tuple(student.shape)}: use \"type\": \"mse\" for this model"
        )
    classes = student.shape[1]
    s = student.movedim(1, -1).reshape(-1, classes).float()
    t = teacher.movedim(1, -1).reshape(-1, classes).float()
    log_p = F.log_softmax(s / temperature, dim=-1)
    q = F.softmax(t / temperature, dim=-1)
    return temperature * temperature * (-(q * log_p).sum(dim=-1)).mean()


def mse_kd_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the outputs."""
    return F.mse_loss(student.float(), teacher.float())


def distillation_loss(student_out: Any, teacher_out: Any, kind: str, scale: float, temperature: float) -> torch.Tensor:
    """``scale`` times the sum of the per-tensor losses over the floating-point tensors of the two outputs
    (tensors, or tuples/lists/dicts of them, paired in order)."""
    s_leaves, s_spec = pytree.tree_flatten(student_out)
    t_leaves, t_spec = pytree.tree_flatten(teacher_out)
    if s_spec != t_spec:
        raise ValidationError(f"the student's and the teacher's outputs differ in structure ({s_spec} vs {t_spec}); "
                              "knowledge distillation pairs them tensor by tensor")
    total = None
    for s, t in zip(s_leaves, t_leaves):
        if not (isinstance(s, torch.Tensor) and s.is_floating_point()):
            continue
        if s.shape != t.shape:
            raise ValidationError(f"a student output of shape {tuple(s.shape)} meets a teacher output of shape "
                                  f"{tuple(t.shape)}; knowledge distillation needs equal shapes")
        term = softmax_kd_loss(s, t, temperature) if kind == "softmax" else mse_kd_loss(s, t)
        total = term if total is None else total + term
    if total is None:
        raise ValidationError("the model's output has no floating-point tensor to distil")
    return scale * total
