"""NNCF's ``nncf.config`` module path: ``from nncompress.config import NNCFConfig``."""

from nncompress.training.config import Config, NNCFConfig

__all__ = ["Config", "NNCFConfig"]
