"""Distillation losses against values computed by hand on fixed logits."""

import math

import pytest
import torch

from nncompress.errors import ValidationError
from nncompress.training.knowledge_distillation.loss import distillation_loss, softmax_kd_loss


def _softmax(values, t):
    exps = [math.exp(v / t) for v in values]
    return [e / sum(exps) for e in exps]


def test_softmax_loss_is_t_squared_times_the_cross_entropy_of_tempered_softmaxes():
    student = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, -0.5]])
    teacher = torch.tensor([[3.0, 2.0, 1.0], [0.0, 1.0, 0.0]])
    t = 2.0
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p, q = _softmax(s_row, t), _softmax(t_row, t)
        expected += -sum(qi * math.log(pi) for pi, qi in zip(p, q))
    expected = t * t * expected / 2
    assert float(softmax_kd_loss(student, teacher, t)) == pytest.approx(expected, rel=1e-6)
    # the reference's form: scale * T^2 * C * mean(-log_softmax(s/T) * softmax(t/T))
    ref = 0.5 * t * t * 3 * float((-torch.log_softmax(student / t, 1) * torch.softmax(teacher / t, 1)).mean())
    assert float(distillation_loss(student, teacher, "softmax", 0.5, t)) == pytest.approx(ref, rel=1e-6)


def test_softmax_loss_on_maps_uses_dimension_1_as_classes():
    student, teacher = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(2, 4, 3, 3)
    flat_s = student.permute(0, 2, 3, 1).reshape(-1, 4)
    flat_t = teacher.permute(0, 2, 3, 1).reshape(-1, 4)
    assert float(softmax_kd_loss(student, teacher, 1.0)) == pytest.approx(float(softmax_kd_loss(flat_s, flat_t, 1.0)))
    # uniform teacher: cross-entropy = mean over positions of logsumexp(s) - mean(s)
    expected = float((torch.logsumexp(flat_s, 1) - flat_s.mean(1)).mean())
    assert float(softmax_kd_loss(student, teacher, 1.0)) == pytest.approx(expected, rel=1e-6)


def test_mse_loss_and_output_structures():
    s = {"a": torch.tensor([1.0, 2.0]), "b": (torch.tensor([[0.0]]), torch.tensor([3]))}
    t = {"a": torch.tensor([0.0, 0.0]), "b": (torch.tensor([[2.0]]), torch.tensor([5]))}
    # a: (1 + 4) / 2 = 2.5; b[0]: 4; the integer tensor is skipped
    assert float(distillation_loss(s, t, "mse", 2.0, 1.0)) == pytest.approx(2 * (2.5 + 4.0))


def test_errors_name_the_problem():
    with pytest.raises(ValidationError, match=r"at least 2-D.*shape \(3,\).*\"mse\""):
        distillation_loss(torch.zeros(3), torch.zeros(3), "softmax", 1.0, 1.0)
    with pytest.raises(ValidationError, match="differ in structure"):
        distillation_loss((torch.zeros(1, 2),), torch.zeros(1, 2), "mse", 1.0, 1.0)
    with pytest.raises(ValidationError, match=r"shape \(1, 2\) meets a teacher output of shape \(1, 3\)"):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 3), "mse", 1.0, 1.0)
