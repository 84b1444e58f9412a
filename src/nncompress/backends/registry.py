"""Pick the backend adapter for a model without importing backends the model does not need.

Every API call gets a fresh adapter (``get_adapter``): whatever an adapter caches (graphs, sessions,
compiled models, the example input) lives only as long as that call, is never shared between
threads, and keeps no reference to the user's model or data once the call returns.
"""

from __future__ import annotations

import importlib
from typing import Any

from nncompress.errors import UnsupportedBackendError, UnsupportedModelError

_ADAPTERS = {
    "onnx": ("nncompress.backends.onnx.adapter", "OnnxAdapter", "onnx onnxruntime"),
    "openvino": ("nncompress.backends.openvino.adapter", "OpenVINOAdapter", "openvino"),
    "torch": ("nncompress.backends.torch.adapter", "TorchAdapter", "torch"),
}
_CLASSES: dict[str, type] = {}


def backend_name(model: Any) -> str:
    """'onnx', 'openvino' or 'torch' for a supported model object."""
    for cls in type(model).__mro__:
        module = cls.__module__ or ""
        if cls.__name__ == "ModelProto" and module.startswith("onnx"):
            return "onnx"
        if cls.__name__ == "Model" and module.startswith("openvino"):
            return "openvino"
        if cls.__name__ == "Module" and module.startswith("torch.nn"):
            return "torch"
    raise UnsupportedModelError(
        f"cannot compress a model of type {type(model).__module__}.{type(model).__name__}; "
        "supported: openvino.Model, onnx.ModelProto, torch.nn.Module"
    )


def get_adapter(model: Any, example_input: Any = None):
    """A new adapter for ``model``'s backend, for one API call.

    ``example_input`` (one model-input item, e.g. the first calibration item) is what a backend that
    captures graphs by running the model (PyTorch) runs; the others do not need it.
    """
    name = backend_name(model)
    if name not in _CLASSES:
        module_name, class_name, packages = _ADAPTERS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UnsupportedBackendError(
                f"the {name} backend needs the packages: {packages} ({exc}); install nncompress[{name}]"
            ) from exc
        _CLASSES[name] = getattr(module, class_name)
    return _CLASSES[name](example_input=example_input)
