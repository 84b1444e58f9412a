"""NNCF's ``nncf.tensor``: element type names (``TensorDataType``; defined in ``nncompress.parameters``)."""

from nncompress.parameters import TensorDataType

__all__ = ["TensorDataType"]
