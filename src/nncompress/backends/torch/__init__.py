"""PyTorch backend: graph capture with a function mode, hooked copies, pure-PyTorch fake quantizers.

Design
------
1. **Capture** (``capture.py``, ``mode.py``, ``op_map.py``). The model runs once on an example input
   under ``HookMode``, a ``torch.overrides.TorchFunctionMode``, plus module forward pre/post hooks
   that track the module scope for the running thread. Both exist only while a run lasts: no
   wrapped or mutated user modules or tensors. Every torch call (functional, tensor method, operator) except
   metadata queries (``size()``, ``shape``, ``dtype``...) gets a deterministic name
   ``"{module path}/{op name}/{k}"`` (NNCF's scheme, ``mode.op_name``: the module path with ``/``
   between its parts, none at the root; ``k`` counts that op name in that module). Leaf layers
   (``nn.Linear``, ``nn.Conv2d``, ``nn.Embedding``,
   ``nn.LayerNorm``, ``nn.BatchNorm*``) make exactly one functional call, so each is ONE op with its
   parameters as constant inputs (weight port 1, bias port 2: ``F.linear(x, W, b)``,
   ``F.conv2d(x, W, b, ...)``, ``F.embedding(ids, W)``); Hugging Face ``Conv1D``'s
   ``addmm(b, x, W)`` is LINEAR with weight port 2 ([in, out]: out axis 1) and bias port 0.
   Tensors are tracked by identity (weak references): model inputs and outputs of recorded ops are
   activations; ops reading only constants or only shapes are folded away. Python control flow is
   followed on the example input's path. Failures raise ``GraphCaptureError`` naming the op and
   module scope.
2. **Hooked copies** (``hooks.py``, ``edits.py``). ``apply`` deep-copies the model and attaches a
   ``HookStorage`` (``nn.ModuleDict`` of hook modules + chains keyed by op name and port) under
   ``_nncompress_hooks`` and a ``HookedForward`` as the instance's ``forward``: the class's forward
   runs under the same mode, which recomputes the op names and runs pre-hooks on op inputs
   (activations or constants — weights are fake-quantized on the fly, the float parameter stays)
   and post-hooks on op outputs. The copy is still an instance of the user's class (class untouched),
   works with ``generate``, deep-copies, pickles, and its ``state_dict`` loads into another copy
   quantized the same way.
3. **Quantizers** (``fake_quantize.py``): pure PyTorch, the integer-grid form of FakeQuantize
   (``clamp(round(x/scale) + zp, lo, hi)``, dequantized) computed by ``numerics.fake_quant`` (the
   formula behind ``numerics.qparams.fake_quantize``), bit-exact with ONNX QuantizeLinear/DequantizeLinear.
   Straight-through rounding for gradients; ranges in ``nn.Parameter``s (``scale`` for zero-point-0 grids,
   ``scale``/``zero_point`` otherwise) ready for QAT. Without autograd, weight quantizers cache their
   result until the weight or range changes.
4. **Strip and export** (``export.py``): ``strip`` bakes weight quantizers (and replaced constants)
   into the parameters and keeps or drops activation quantizers; ``export_onnx`` writes standard
   QuantizeLinear/DequantizeLinear (activations) and int8/uint8 constants + DequantizeLinear
   (weights, per-channel with ``axis``), opset ≥ 13, through the TorchScript exporter.

Limits: one forward path per capture (data-dependent branches are followed on the example input;
a calibration item that takes another path is reported); root-module hooks the user registered are
not run by the adapter's own passes (they are by ``model(...)``). Several threads may compress or run
one model at once: per-call state lives in the call (a fresh adapter per API call, a ``HookMode`` and
``ScopeTracker`` per run, thread-local scope hooks).
"""

from .adapter import TorchAdapter
from .export import export_onnx, strip
from .fake_quantize import AsymmetricQuantizer, FakeQuantizer, SymmetricQuantizer, quantizer_from_params
from .hooks import HookStorage, storage_of

__all__ = [
    "AsymmetricQuantizer",
    "FakeQuantizer",
    "HookStorage",
    "SymmetricQuantizer",
    "TorchAdapter",
    "export_onnx",
    "quantizer_from_params",
    "storage_of",
    "strip",
]
