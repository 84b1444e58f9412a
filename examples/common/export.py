"""Export of a sample's model (standard ONNX QDQ or OpenVINO IR) and the check of the exported model against PyTorch."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


def export(model: nn.Module, ctrl, path: str, example: torch.Tensor, output_names: tuple[str, ...]) -> str:
    """The compressed model as standard ONNX QDQ (or OpenVINO IR for .xml); plain ONNX/IR for the FP32 config."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if ctrl is not None:
        fmt = "openvino" if path.endswith(".xml") else "onnx"
        ctrl.export_model(path, save_format=fmt)
        return path
    model.eval()
    example = example.to(next(model.parameters()).device)
    if path.endswith(".xml"):
        from nncompress.api.export import export as export_model

        export_model(model, path, format="openvino", example_input=example)
        return path
    warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is the one we want
    torch.onnx.export(model, (example,), path, dynamo=False, opset_version=13, input_names=["input"],
                      output_names=list(output_names),
                      dynamic_axes={name: {0: "batch"} for name in ("input", *output_names)})
    return path


def run_exported(path: str, x: np.ndarray, batch: int = 512) -> tuple[np.ndarray, ...]:
    """The outputs of the exported model (ONNX Runtime for .onnx, OpenVINO CPU in f32 for .xml) on ``x``."""
    if path.endswith(".xml"):
        import openvino as ov

        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

        def infer(chunk: np.ndarray) -> list[np.ndarray]:
            result = compiled(chunk)
            return [np.asarray(result[out]) for out in compiled.outputs]
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def infer(chunk: np.ndarray) -> list[np.ndarray]:
            return session.run(None, {name: chunk})

    chunks = [infer(np.ascontiguousarray(x[start : start + batch])) for start in range(0, len(x), batch)]
    return tuple(np.concatenate(parts) for parts in zip(*chunks))


def check_export(path: str, x: np.ndarray, reference: tuple[np.ndarray, ...],
                 batch: int = 512) -> tuple[tuple[np.ndarray, ...], dict]:
    """(exported outputs, {max_abs_diff, mean_abs_diff, output_scale}) against the PyTorch ``reference`` outputs."""
    outputs = run_exported(path, x, batch)
    if len(outputs) != len(reference) or any(o.shape != r.shape for o, r in zip(outputs, reference)):
        raise SystemExit(f"the exported model {path} returns shapes {[o.shape for o in outputs]}; PyTorch returns "
                         f"{[r.shape for r in reference]}")
    diffs = [np.abs(o.astype(np.float64) - r) for o, r in zip(outputs, reference)]
    return outputs, {
        "max_abs_diff": float(max(d.max() for d in diffs)),
        "mean_abs_diff": float(np.mean([d.mean() for d in diffs])),
        "output_scale": float(max(np.abs(r).max() for r in reference)),
    }
