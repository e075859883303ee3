"""Public names that import their module on first use, so that ``import converter`` is cheap.

The command line and a plain ``import converter`` then load xarray, zarr, dask and
distributed only when a command or function that needs them runs (PEP 562).
"""

from __future__ import annotations

import importlib
import sys


def exports(package: str, names: dict[str, str]):
    """``__getattr__`` and ``__dir__`` for ``package``.

    ``names`` maps each public name to ``".module"`` (a submodule) or ``".module:attr"``.
    """

    def __getattr__(name: str):
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = where.partition(":")
        value = importlib.import_module(module, package)
        if attr:
            value = getattr(value, attr)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
