"""NNCF's ``nncf.common`` import paths that user code reaches (e.g. ``nncf.common.accuracy_aware_training``)."""
