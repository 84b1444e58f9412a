"""Integrations with third-party training code (each submodule imports its framework when imported)."""
