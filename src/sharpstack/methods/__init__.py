"""The registry of restoration methods: name -> the :class:`~._base.Method` that implements it.

One line per method (``"name": "module:Class"``); modules are imported when first asked for.
``workflows``, ``cli`` and ``zoo`` find methods only here.
"""

from __future__ import annotations

from importlib import import_module

from ..errors import InputError
from ._base import Method

__all__ = ["REGISTRY", "DEFAULT_METHOD", "get_method", "method_names", "Method"]

REGISTRY: dict[str, str] = {
    "isonet": "sharpstack.methods.isonet:IsoNet",
    "zsegan": "sharpstack.methods.zsegan:ZSEGAN",
    "dqlr": "sharpstack.methods.dqlr:DQLR",
    "disentangled": "sharpstack.methods.disentangled:Disentangled",
}

DEFAULT_METHOD = "isonet"
"""What ``sharpstack demo`` runs without a method name."""

_CACHE: dict[str, Method] = {}


def method_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get_method(name: str) -> Method:
    """The method registered as ``name``; an unknown name is an error listing the known ones."""
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(str(name), REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown method {name!r}{hint}; sharpstack has "
                         f"{', '.join(REGISTRY)}")
    if name not in _CACHE:
        module, cls = REGISTRY[name].split(":")
        _CACHE[name] = getattr(import_module(module), cls)()
    return _CACHE[name]
