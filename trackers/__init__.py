"""Tracker implementations, built by name: ``build_tracker("siamrpn", cfg)``.

A tracker package registers a factory ``cfg -> object`` under a name with :func:`register`
(either directly or listed in ``_BUILTIN`` so that it is imported on first use). The engine only
knows names, never the packages: ``trackers`` depends on ``deepmot``, not the reverse.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["register", "build_tracker", "available_trackers"]

Factory = Callable[[Any], Any]

_REGISTRY: dict[str, Factory] = {}
#: built-in trackers, imported lazily: name -> "module:function"
_BUILTIN: dict[str, str] = {"siamrpn": "trackers.siamrpn:build_siamrpn_tracker"}


def register(name: str, factory: Factory | None = None):
    """Register ``factory`` under ``name`` (usable as a decorator: ``@register("x")``)."""

    def deco(fn: Factory) -> Factory:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"tracker {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco(factory) if factory is not None else deco


def available_trackers() -> list[str]:
    """Names :func:`build_tracker` accepts."""
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def build_tracker(name: str, cfg: Any = None) -> Any:
    """Build the tracker registered as ``name`` from ``cfg`` (what ``cfg`` is depends on the
    tracker; see its factory)."""
    if name not in _REGISTRY and name in _BUILTIN:
        module, fn = _BUILTIN[name].split(":")
        _REGISTRY[name] = getattr(importlib.import_module(module), fn)
    if name not in _REGISTRY:
        raise ValueError(f"unknown tracker {name!r}; available: {', '.join(available_trackers())}")
    return _REGISTRY[name](cfg)
