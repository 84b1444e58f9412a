"""NNCF's ``nncf.api.compression`` module path: ``CompressionStage`` and the controller base class."""

from nncompress.training.controller import CompressionAlgorithmController, CompressionStage

__all__ = ["CompressionAlgorithmController", "CompressionStage"]
