"""Knowledge distillation stacked with each training-time algorithm: builds, trains a step, its loss is the
distillation loss of the student's and the original model's outputs on the same inputs, strip removes it."""

import copy
import pickle

import pytest
import torch

import nncompress as nncf
from nncompress.training.knowledge_distillation.builder import KnowledgeDistillationController
from nncompress.training.knowledge_distillation.loss import distillation_loss
from tests.unit.training.models import SmallCNN

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

KD_SOFTMAX = {"algorithm": "knowledge_distillation", "type": "softmax", "temperature": 2.0, "scale": 0.5}
KD_MSE = {"algorithm": "knowledge_distillation", "type": "mse", "scale": 3.0}
STACKS = {
    "alone": [],
    "quantization": [{"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}}],
    "magnitude_sparsity": [{"algorithm": "magnitude_sparsity", "sparsity_init": 0.5}],
    "rb_sparsity": [{"algorithm": "rb_sparsity", "sparsity_init": 0.3}],
    "filter_pruning": [{"algorithm": "filter_pruning", "pruning_init": 0.25}],
    "pruning+quantization": [{"algorithm": "filter_pruning", "pruning_init": 0.25},
                             {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}}],
}


def _build(others: list, kd: dict):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": [*others, kd]})
    ctrl, compressed = nncf.create_compressed_model(model, config)
    return model, ctrl, compressed


def _kd_child(ctrl) -> KnowledgeDistillationController:
    children = getattr(ctrl, "children", [ctrl])
    return next(c for c in children if isinstance(c, KnowledgeDistillationController))


@pytest.mark.parametrize("stack", list(STACKS))
@pytest.mark.parametrize("kd", [KD_SOFTMAX, KD_MSE], ids=["softmax", "mse"])
def test_stack_builds_trains_a_step_and_its_loss_is_the_distillation_loss(stack, kd):
    model, ctrl, compressed = _build(STACKS[stack], kd)
    reference = copy.deepcopy(model.state_dict())
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    compressed.train()
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.step()
    student = compressed(x)
    with torch.no_grad():
        teacher = model.eval()(x)  # the original model on the same input is the teacher
    expected = distillation_loss(student, teacher, kd["type"], kd["scale"], kd.get("temperature", 1.0))
    assert float(_kd_child(ctrl).loss()) == pytest.approx(float(expected), rel=1e-5)
    assert float(expected) > 1e-4  # train-mode BatchNorm and compression make the student differ: not trivially zero
    children = getattr(ctrl, "children", [])
    others = sum(float(c.loss()) for c in children if not isinstance(c, KnowledgeDistillationController))
    assert float(ctrl.loss()) == pytest.approx(float(expected) + others, rel=1e-5)  # the composite sums it

    optimizer = torch.optim.SGD(compressed.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in compressed.state_dict().items()}
    (torch.nn.functional.cross_entropy(student, torch.zeros(4, dtype=torch.long)) + ctrl.loss()).backward()
    optimizer.step()
    assert any(not torch.equal(before[k], v) for k, v in compressed.state_dict().items())
    teacher_model = _kd_child(ctrl).teacher
    assert not teacher_model.training and not any(p.requires_grad for p in teacher_model.parameters())
    assert all(torch.equal(reference[k], v) for k, v in teacher_model.state_dict().items())  # frozen
    assert all(torch.equal(reference[k], v) for k, v in model.state_dict().items())  # user's model untouched
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert not any("teacher" in k for k in compressed.state_dict())  # the teacher is not part of the model


def test_only_training_forwards_with_gradients_compute_the_loss():
    _, ctrl, compressed = _build([], KD_MSE)
    x = torch.rand(2, 1, 8, 8)
    compressed.eval()
    compressed(x)
    assert float(ctrl.loss()) == 0.0
    compressed.train()
    with torch.no_grad():
        compressed(x)
    assert float(ctrl.loss()) == 0.0
    compressed(x)
    first = ctrl.loss()
    assert first.requires_grad and float(first) == pytest.approx(float(first))  # computed
    compressed(x * 2)  # each forward replaces the previous one's loss
    assert float(ctrl.loss()) != pytest.approx(float(first))


def test_strip_removes_the_teacher_and_copies_are_inert():
    _, ctrl, compressed = _build(STACKS["quantization"], KD_SOFTMAX)
    stripped = ctrl.strip()
    assert all(not getattr(stripped, d) for d in ("_forward_hooks", "_forward_pre_hooks"))
    x = torch.rand(2, 1, 8, 8)
    stripped.train()
    stripped(x)
    assert float(_kd_child(ctrl).loss()) == 0.0  # the stripped model does not feed the controller
    for clone in (copy.deepcopy(compressed), pickle.loads(pickle.dumps(compressed))):
        clone.train()
        clone(x)
        assert float(_kd_child(ctrl).loss()) == 0.0
    compressed.train()
    compressed(x)
    assert float(_kd_child(ctrl).loss()) > 0.0


def test_resume_from_compression_state():
    model, ctrl, compressed = _build(STACKS["filter_pruning"], KD_MSE)
    config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]},
                                        "compression": [*STACKS["filter_pruning"], KD_MSE]})
    ctrl2, resumed = nncf.create_compressed_model(model, config, compression_state=ctrl.get_compression_state())
    nncf.load_state(resumed, compressed.state_dict(), is_resume=True)
    x = torch.rand(2, 1, 8, 8)
    resumed.train()
    compressed.train()
    torch.testing.assert_close(resumed(x), compressed(x))
    assert float(ctrl2.loss()) == pytest.approx(float(ctrl.loss()), rel=1e-6)
