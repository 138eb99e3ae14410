"""Tracker implementations, found by name: ``get_tracker("siamrpn")``.

Each tracker package exposes a :class:`~deepmot.engine.protocol.TrackerPlugin` (its inference
factory builder and, when it can be fine-tuned with DeepMOT, its trainable-tracker builder). A
plugin is registered with :func:`register` or listed in ``_BUILTIN`` (imported on first use).
The entry points (``train.py``, ``evaluate.py``) take their ``--tracker`` choices from
:func:`available_trackers`; the engine only receives the builders: ``trackers`` depends on
``deepmot``, never the reverse.
"""

from __future__ import annotations

import importlib
from typing import Any

from deepmot.engine.protocol import TrackerPlugin

__all__ = ["register", "get_tracker", "build_tracker", "available_trackers", "trainable_trackers"]

_REGISTRY: dict[str, TrackerPlugin] = {}
#: built-in trackers, imported lazily: name -> "module:attribute" of their plugin
_BUILTIN: dict[str, str] = {"siamrpn": "trackers.siamrpn.plugin:PLUGIN",
                            "tracktor": "trackers.tracktor.plugin:PLUGIN"}


def register(plugin: TrackerPlugin) -> TrackerPlugin:
    """Register ``plugin`` under ``plugin.name`` (an error if another one has that name)."""
    if plugin.name in _REGISTRY and _REGISTRY[plugin.name] is not plugin:
        raise ValueError(f"tracker {plugin.name!r} is already registered")
    _REGISTRY[plugin.name] = plugin
    return plugin


def available_trackers() -> list[str]:
    """Names :func:`get_tracker` accepts."""
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def trainable_trackers() -> list[str]:
    """Names of the trackers the DeepMOT loop can fine-tune (``train.py --tracker`` choices)."""
    return [n for n in available_trackers() if get_tracker(n).build_trainable is not None]


def get_tracker(name: str) -> TrackerPlugin:
    """The plugin registered as ``name``; ``ValueError`` listing the known names otherwise."""
    if name not in _REGISTRY and name in _BUILTIN:
        module, attr = _BUILTIN[name].split(":")
        register(getattr(importlib.import_module(module), attr))
    if name not in _REGISTRY:
        raise ValueError(f"unknown tracker {name!r}; available: {', '.join(available_trackers())}")
    return _REGISTRY[name]


def build_tracker(name: str, cfg: Any = None) -> Any:
    """The bare network of tracker ``name`` built from ``cfg`` (see its plugin's ``build_model``)."""
    plugin = get_tracker(name)
    if plugin.build_model is None:
        raise ValueError(f"tracker {name!r} has no single network to build")
    return plugin.build_model(cfg)
