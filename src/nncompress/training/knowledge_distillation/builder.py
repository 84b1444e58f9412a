"""The knowledge distillation builder and controller.

The teacher is a frozen copy (eval mode, no gradients) of the float model given to
``create_compressed_model``; the user's model object is never touched. Two hooks on the compressed model
(not on the user's model) make the teacher see exactly the student's inputs: a forward pre-hook runs the
teacher on the forward's arguments before the student can change them in place, and a forward hook pairs
its output with the student's. Only training-mode forwards with gradients enabled compute the loss;
every forward replaces the previous one's, so ``ctrl.loss()`` is the last training forward's loss.
"""

from __future__ import annotations

import weakref
from typing import Any

from nncompress.errors import UnsupportedBackendError
from nncompress.training.controller import CompressionAlgorithmController, Statistics

_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
               "_forward_hooks_always_called")


class KnowledgeDistillationBuilder:
    """No edits; the controller holds the teacher and hooks the compressed model's forward."""

    name = "knowledge_distillation"

    def __init__(self, spec: Any, builder_state: dict | None = None):
        section = dict(getattr(spec, "section", None) or {})
        self.kind = section["type"]
        self.scale = float(section.get("scale", 1.0))
        self.temperature = float(section.get("temperature", 1.0))
        self.original = None

    def bind_model(self, model: Any, adapter: Any) -> None:
        self.original = model

    def edits(self, graph: Any, names: dict, capabilities: Any) -> list:
        if not getattr(capabilities, "trainable", False):
            raise UnsupportedBackendError(f"knowledge_distillation trains PyTorch models only; got a "
                                          f"{getattr(capabilities, 'name', '?')} model")
        return []

    def build_controller(self, model: Any) -> KnowledgeDistillationController:
        from nncompress.backends.torch.inputs import copy_model

        teacher = copy_model(self.original).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return KnowledgeDistillationController(model, teacher, self.kind, self.scale, self.temperature)


class _Hook:
    """Calls back into its controller through a weak reference; a copied or pickled model gets an inert hook
    (a copy of the compressed model is not the controller's model)."""

    def __init__(self, ctrl: KnowledgeDistillationController, method: str):
        self.ctrl_ref, self.method = weakref.ref(ctrl), method

    def __call__(self, *args: Any) -> Any:
        ctrl = self.ctrl_ref() if self.ctrl_ref is not None else None
        return None if ctrl is None else getattr(ctrl, self.method)(*args)

    def __deepcopy__(self, memo: dict) -> _Hook:
        inert = _Hook.__new__(_Hook)
        inert.ctrl_ref, inert.method = None, self.method
        return inert

    def __reduce__(self):
        return (_inert_hook, (self.method,))


def _inert_hook(method: str) -> _Hook:
    hook = _Hook.__new__(_Hook)
    hook.ctrl_ref, hook.method = None, method
    return hook


class KnowledgeDistillationController(CompressionAlgorithmController):
    """``loss()`` is the distillation loss of the last training forward (zero before one)."""

    name = "knowledge_distillation"
    strip_priority = 0  # first: the stripped copy is made here and loses the teacher's hooks

    def __init__(self, model: Any, teacher: Any, kind: str, scale: float, temperature: float):
        super().__init__(model)
        self.teacher, self.kind, self.scale, self.temperature = teacher, kind, scale, temperature
        self._teacher_out: Any = None
        self._loss: Any = None
        pre = model.register_forward_pre_hook(_Hook(self, "_before"), with_kwargs=True)
        post = model.register_forward_hook(_Hook(self, "_after"), with_kwargs=True)
        self._hook_ids = (pre.id, post.id)

    def _before(self, module: Any, args: tuple, kwargs: dict) -> None:
        import torch

        self._teacher_out, self._loss = None, None
        if not (module.training and torch.is_grad_enabled()):
            return
        from nncompress.backends.torch.inputs import model_device

        device = model_device(module)
        if device is not None and model_device(self.teacher) != device:
            self.teacher.to(device)
        with torch.no_grad():
            self._teacher_out = self.teacher(*args, **kwargs)

    def _after(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if self._teacher_out is None:
            return
        from nncompress.training.knowledge_distillation.loss import distillation_loss

        teacher_out, self._teacher_out = self._teacher_out, None
        self._loss = distillation_loss(output, teacher_out, self.kind, self.scale, self.temperature)

    def loss(self) -> Any:
        return super().loss() if self._loss is None else self._loss

    def statistics(self, quickly_collected_only: bool = False) -> Statistics:
        last = "—" if self._loss is None else f"{float(self._loss.detach()):.6g}"
        return Statistics([(self.name, [("Type", self.kind), ("Scale", f"{self.scale:g}"),
                                        ("Temperature", f"{self.temperature:g}"), ("Last loss", last)])])

    def strip_model(self, model: Any, do_copy: bool = True) -> Any:
        """The model without the teacher's hooks (the teacher is not part of the model)."""
        from nncompress.backends.torch.inputs import copy_model

        if do_copy:
            model = copy_model(model)
        for attr in _HOOK_DICTS:
            hooks = getattr(model, attr, None)
            if isinstance(hooks, dict):
                for hook_id in self._hook_ids:
                    hooks.pop(hook_id, None)
        return model
