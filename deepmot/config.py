"""Typed configs: dataclasses with defaults, loaded from YAML, overridden with ``a.b=value``.

A config is a (possibly nested) dataclass. :func:`load_config` builds it from the class
defaults, then a YAML file, then ``--set``-style overrides; values are parsed with
``yaml.safe_load`` so ``lr=1e-3``, ``sizes=[5,10]`` and ``name=foo`` all get their natural types.
Unknown keys are errors (a typo must not be silently ignored). A dotted key that reaches inside a
mapping-valued field sets one entry and keeps the others (``mot.detector_scores.FRCNN=[0, 0.6]``
leaves ``DPM`` and ``SDP`` as the file or the defaults have them); setting the field itself
(``mot.detector_scores={FRCNN: [0, 0.6]}``) replaces the whole mapping.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from types import UnionType
from typing import Any, Iterable, TypeVar

import yaml

from deepmot.fileio import atomic_write_text

__all__ = ["ConfigError", "load_config", "config_to_dict", "config_from_dict", "save_config",
           "apply_overrides"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


def config_to_dict(cfg: Any) -> dict:
    """Nested dataclass -> plain nested dict (tuples become lists; safe for YAML and torch.save)."""

    def plain(v):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


_UNIONS = (typing.Union, UnionType)  # Optional[X] and X | None


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the annotated type (int -> float allowed, None for Optional)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in _UNIONS:
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: value {value!r} matches none of {tp}")
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return config_from_dict(tp, value, prefix=where + ".")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "7e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def config_from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (partial) nested dict; missing keys keep their defaults."""
    types = _field_types(cls)
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"known: {', '.join(prefix + k for k in types)}")
    base = cls()
    kwargs = {}
    for name, tp in types.items():
        if name in data:
            if _is_dataclass_type(tp) and isinstance(data[name], dict):
                sub = config_to_dict(getattr(base, name))
                sub.update(data[name])
                kwargs[name] = config_from_dict(tp, sub, prefix=f"{prefix}{name}.")
            else:
                kwargs[name] = _coerce(data[name], tp, prefix + name)
    return dataclasses.replace(base, **kwargs)


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b=value`` strings to a nested dict in place (values parsed as YAML); returns it.
    Missing (or null) intermediate sections are created."""
    for item in overrides:
        key, value = _split_override(item)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = value
    return data


def _split_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    return key.strip(), (yaml.safe_load(raw) if raw.strip() else "")


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in _UNIONS:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _seed_mappings(cls: type, data: dict, overrides: Iterable[str]) -> None:
    """For each override whose dotted key reaches inside a dict-valued field that ``data`` does
    not set, copy that field's default mapping into ``data`` first, so the override adds or
    replaces one entry instead of replacing the mapping."""
    for item in overrides:
        if "=" not in item:
            continue  # apply_overrides names the problem
        parts = item.split("=", 1)[0].strip().split(".")
        tp, default, node = cls, cls(), data
        for p in parts[:-1]:
            if not _is_dataclass_type(tp) or not isinstance(node, dict):
                break
            types = _field_types(tp)
            if p not in types:
                break  # unknown key: config_from_dict reports it
            ftype, fdefault = _strip_optional(types[p]), getattr(default, p)
            if _is_dataclass_type(ftype):
                tp, default = ftype, fdefault if fdefault is not None else ftype()
                if node.get(p) is None:
                    node[p] = {}
                node = node[p]
                continue
            if (typing.get_origin(ftype) is dict or ftype is dict) and isinstance(fdefault, dict) and p not in node:
                node[p] = config_to_dict(fdefault)
            break


def load_config(cls: type[T], path: str | os.PathLike | None = None,
                overrides: Iterable[str] = ()) -> T:
    """Defaults of ``cls``, updated by the YAML file ``path`` (if given), then ``overrides``
    (``a.b=value``; a key inside a mapping-valued field merges into that mapping).

    Raises :class:`ConfigError` (naming the file and key) on unknown keys or wrong types, and
    ``FileNotFoundError`` if ``path`` does not exist.
    """
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        data = loaded
    overrides = list(overrides)
    try:
        _seed_mappings(cls, data, overrides)
        apply_overrides(data, overrides)
        return config_from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
