"""NNCF's ``nncf.data``: the ``Dataset`` wrapper and synthetic text data for LLM calibration."""

from nncompress.data.generation import generate_text_data
from nncompress.dataset import Dataset

__all__ = ["Dataset", "generate_text_data"]
