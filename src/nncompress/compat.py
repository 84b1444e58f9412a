"""``install_as_nncf``: let unchanged NNCF code (``import nncf``, ``from nncf.x import y``) use nncompress.

A finder at the front of ``sys.meta_path`` maps every ``nncf`` / ``nncf.<sub>`` import to the module object
``nncompress`` / ``nncompress.<sub>``: one module object under two names, never a second copy, and
submodules imported later resolve too. The real ``nncf`` package is never imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

from nncompress.errors import InstallationError

ALIAS = "nncf"
TARGET = "nncompress"


def _target_name(fullname: str) -> str | None:
    if fullname == ALIAS or fullname.startswith(ALIAS + "."):
        return TARGET + fullname[len(ALIAS):]
    return None


class _AliasLoader(importlib.abc.Loader):
    """Returns the already-imported nncompress module and keeps its own ``__spec__``."""

    def __init__(self, target: str):
        self.target = target
        self._spec = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # the import system set the alias spec; the module keeps its real one


class NncfAliasFinder(importlib.abc.MetaPathFinder):
    """Finds ``nncf.*`` names as the matching ``nncompress.*`` modules."""

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        real = _target_name(fullname)
        if real is None:
            return None
        try:
            real_spec = importlib.util.find_spec(real)
        except ModuleNotFoundError:  # a parent package is missing
            return None
        if real_spec is None:
            return None
        is_package = real_spec.submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(real), is_package=is_package)


def _foreign_nncf() -> list[str]:
    """Names of ``nncf`` modules already imported that are not nncompress' (the real NNCF)."""
    foreign = []
    for name, module in list(sys.modules.items()):
        real = _target_name(name)
        if real is not None and module is not None and module is not sys.modules.get(real):
            foreign.append(name)
    return sorted(foreign)


def install_as_nncf() -> ModuleType:
    """Make ``import nncf`` and every ``nncf.<submodule>`` import give nncompress' modules; returns ``nncompress``.

    Call it before the code that imports ``nncf``. Raises ``InstallationError`` when the real NNCF
    package is already imported (both cannot be ``nncf``). Calling it again does nothing.
    """
    foreign = _foreign_nncf()
    if foreign:
        origin = getattr(sys.modules.get(foreign[0]), "__file__", None)
        raise InstallationError(
            f"the nncf package is already imported ({foreign[0]} from {origin}), so nncompress cannot be installed as "
            "nncf; call nncompress.install_as_nncf() before anything imports nncf, or write `import nncompress as nncf`"
        )
    if not any(isinstance(finder, NncfAliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, NncfAliasFinder())
    for name, module in list(sys.modules.items()):  # modules imported already need no finder
        if module is not None and (name == TARGET or name.startswith(TARGET + ".")):
            sys.modules.setdefault(ALIAS + name[len(TARGET):], module)
    return sys.modules[TARGET]
