"""Constant folding: which operations are constants, and the values they compute.

An operation is folded when it is a Constant, a ShapeOf, or computes only from folded operations.
Values are computed with OpenVINO's own reference ``evaluate`` of each operation, so every element
type the runtime knows (f16, bf16, i8, u4, ...) is decoded exactly.
"""

from __future__ import annotations

import numpy as np
import openvino as ov

from nncompress.errors import UnsupportedModelError

SHAPE_OPS = frozenset({"ShapeOf"})
NEVER_FOLDED = frozenset(
    {"Parameter", "Result", "ReadValue", "Assign", "RandomUniform", "Multinomial", "If", "Loop"}
)


def folded_ops(model: ov.Model) -> set[ov.Node]:
    """The operations of ``model`` that compute only from constants or shapes."""
    folded: set[ov.Node] = set()
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in NEVER_FOLDED:
            continue
        if kind == "Constant" or kind in SHAPE_OPS:
            folded.add(op)
            continue
        sources = [value.get_node() for value in op.input_values()]
        if sources and all(src in folded for src in sources):
            folded.add(op)
    return folded


class ConstantEvaluator:
    """Evaluates folded outputs of one model, memoising intermediate results."""

    def __init__(self) -> None:
        self._values: dict[ov.Output, ov.Tensor] = {}

    def tensor(self, output: ov.Output) -> ov.Tensor:
        """The value of a folded ``output`` as an OpenVINO tensor (no copy for plain Constants)."""
        if output in self._values:
            return self._values[output]
        op = output.get_node()
        kind = op.get_type_name()
        if kind == "Constant":
            value = op.get_tensor_view()
        elif kind == "ShapeOf":
            value = _shape_of(op)
        else:
            value = self._evaluate(op)[output.get_index()]
        self._values[output] = value
        return value

    def _evaluate(self, op: ov.Node) -> list[ov.Tensor]:
        inputs = [self.tensor(value) for value in op.input_values()]
        outputs = []
        for i in range(op.get_output_size()):
            shape = op.get_output_partial_shape(i)
            if not shape.is_static:
                raise _not_foldable(op, f"output {i} has the dynamic shape {shape}")
            outputs.append(ov.Tensor(op.get_output_element_type(i), shape.to_shape()))
        if not op.evaluate(outputs, inputs):
            raise _not_foldable(op, "OpenVINO cannot evaluate it")
        for value in op.input_values():
            if value.get_node().get_type_name() != "Constant":
                self._values.pop(value, None)  # free intermediates once used
        return outputs

    def array(self, output: ov.Output) -> np.ndarray:
        """The value of ``output`` as a new float32 numpy array."""
        tensor = self.tensor(output)
        owned = output.get_node().get_type_name() != "Constant"
        data = tensor.data
        if owned and data.dtype == np.float32:
            return data
        return np.array(data, dtype=np.float32, copy=True)


def _shape_of(op: ov.Node) -> ov.Tensor:
    shape = op.get_input_partial_shape(0)
    if not shape.is_static:
        raise _not_foldable(op, f"its input has the dynamic shape {shape}")
    values = np.array(list(shape.to_shape()), dtype=np.int64)
    result = ov.Tensor(op.get_output_element_type(0), ov.Shape([len(values)]))
    result.data[:] = values.astype(result.data.dtype)
    return result


def _not_foldable(op: ov.Node, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"cannot compute the constant {op.get_type_name()} {op.get_friendly_name()!r}: {why}"
    )
