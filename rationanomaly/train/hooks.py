"""Run code right after a module is first imported: how our verl plugins patch or extend modules lazily.

verl imports its external modules (`VERL_USE_EXTERNAL_MODULES`) from inside `import verl`, in every process that
imports verl: the driver, Ray workers, vLLM's engine processes. The modules our plugins touch (verl's trainer,
FSDP engine, vLLM's layers) are heavy and imported late, often only in one of those processes; importing them
eagerly from a plugin would slow every process down and risks a circular import inside verl's own `__init__`.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import types
from collections.abc import Callable

Callback = Callable[[types.ModuleType], None]


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """A meta-path finder that wraps the real loader of each watched module and calls back after it executes."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callback]] = {}
        self._resolving: set[str] = set()

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.callbacks or fullname in self._resolving:
            return None
        self._resolving.add(fullname)  # find the real spec through the other finders
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._resolving.discard(fullname)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _CallbackLoader(spec.loader, self.callbacks.pop(fullname))
        return spec


class _CallbackLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, callbacks: list[Callback]):
        self.loader = loader
        self.callbacks = callbacks

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        for callback in self.callbacks:
            callback(module)


def after_import(module_name: str, callback: Callback) -> None:
    """Call `callback(module)` now if `module_name` is already imported, else right after its first import."""
    if module_name in sys.modules:
        callback(sys.modules[module_name])
        return
    finder = next((f for f in sys.meta_path if isinstance(f, _AfterImportFinder)), None)
    if finder is None:
        finder = _AfterImportFinder()
        sys.meta_path.insert(0, finder)
    finder.callbacks.setdefault(module_name, []).append(callback)
