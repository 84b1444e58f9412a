"""Pieces the training samples share: the NNCF 2.x training loop (training.py), export and its check against
PyTorch (export.py), and the synthetic random-shapes dataset of the detection and segmentation samples (shapes.py)."""
