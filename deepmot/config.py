"""Typed configs: dataclasses with defaults, loaded from YAML, overridden with ``a.b=value``.

A config is a (possibly nested) dataclass. :func:`load_config` builds it from the class
defaults, then a YAML file, then ``--set``-style overrides; values are parsed with
``yaml.safe_load`` so ``lr=1e-3``, ``sizes=[5,10]`` and ``name=foo`` all get their natural types.
Unknown keys are errors (a typo must not be silently ignored). A dotted key that reaches inside a
mapping-valued field sets one entry and keeps the others (``mot.detector_scores.FRCNN=[0, 0.6]``
leaves ``DPM`` and ``SDP`` as the file or the defaults have them); setting the field itself
(``mot.detector_scores={FRCNN: [0, 0.6]}``) replaces the whole mapping.

Validation happens here, in one place, for every config class: every float must be finite, a
field annotated ``Annotated[float, Range(...)]`` (or one of the aliases :data:`Positive`,
:data:`NonNegative`, :data:`Fraction`, :data:`PositiveInt`, :data:`NonNegativeInt`) must lie in
its bounds, a ``Literal[...]`` field must hold one of its values, and the checks that involve
several fields live in the class's ``__post_init__`` (a ``ValueError`` raised there is reported
as a :class:`ConfigError` naming the key).
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Iterable, Literal, TypeVar

import yaml

from deepmot.fileio import atomic_write_text

__all__ = ["ConfigError", "load_config", "config_to_dict", "config_from_dict", "save_config",
           "apply_overrides", "Range", "Check", "check_device", "Device", "Positive", "NonNegative",
           "Fraction", "PositiveInt", "NonNegativeInt"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type or range."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric config field, declared next to it: ``lr: Annotated[float, Range(gt=0)]``.

    ``ge``/``gt``: lower bound (inclusive / exclusive); ``le``/``lt``: upper bound. None = unbounded.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def check(self, value: float, where: str) -> None:
        """Raise :class:`ConfigError` naming ``where`` unless ``value`` lies in the bounds."""
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        if not ok:
            raise ConfigError(f"{where}: {value!r} is out of range (must be {self})")

    def __str__(self) -> str:
        parts = [f"{op} {v:g}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le),
                                             ("<", self.lt)) if v is not None]
        return " and ".join(parts) or "any number"


@dataclasses.dataclass(frozen=True)
class Check:
    """A check of a config value beyond its type and range, declared with ``Annotated[str, Check(fn)]``:
    ``fn(value)`` raises ``ValueError`` saying what is wrong."""

    fn: Any

    def check(self, value: Any, where: str) -> None:
        """Raise :class:`ConfigError` naming ``where`` when ``fn`` refuses ``value``."""
        try:
            self.fn(value)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None


def check_device(value: str) -> None:
    """Accept ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` when that device exists; else ValueError
    (the rules of :func:`deepmot.runtime.device.resolve_device`, which the loops use)."""
    from deepmot.runtime.device import resolve_device

    resolve_device(value)


#: A device name, checked against the machine (:func:`check_device`).
Device = Annotated[str, Check(check_device)]
#: A float > 0 (learning rates, temperatures, sizes).
Positive = Annotated[float, Range(gt=0)]
#: A float >= 0 (loss weights, probabilities of augmentations without an upper bound).
NonNegative = Annotated[float, Range(ge=0)]
#: A float in [0, 1] (shares, probabilities, IoU thresholds).
Fraction = Annotated[float, Range(ge=0, le=1)]
#: An int >= 1 (counts, steps, sizes).
PositiveInt = Annotated[int, Range(ge=1)]
#: An int >= 0 (counts where 0 disables).
NonNegativeInt = Annotated[int, Range(ge=0)]


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
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp) -> bool:
    tp = _strip_annotated(tp)
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _strip_annotated(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the annotated type (int -> float allowed, None for Optional)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        inner, *extras = typing.get_args(tp)
        value = _coerce(value, inner, where)
        for extra in extras:
            if isinstance(extra, (Range, Check)) and value is not None:
                extra.check(value, where)
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
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
        if len(errors) == 1:  # Optional[X]: X's own message (it names the range or the type)
            raise ConfigError(errors[0])
        raise ConfigError(f"{where}: value {value!r} matches none of {_type_name(tp)}")
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
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
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
                kwargs[name] = config_from_dict(_strip_annotated(tp), sub, prefix=f"{prefix}{name}.")
            else:
                kwargs[name] = _coerce(data[name], tp, prefix + name)
    try:
        return dataclasses.replace(base, **kwargs)
    except ValueError as e:  # a check across fields in __post_init__
        raise ConfigError(f"{prefix}{e}") from None


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "")


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
    try:
        return key.strip(), (yaml.safe_load(raw) if raw.strip() else "")
    except yaml.YAMLError as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"override {item!r}: value is not valid YAML ({detail})") from None


def _strip_optional(tp: Any) -> Any:
    tp = _strip_annotated(tp)
    if typing.get_origin(tp) in _UNIONS:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _strip_annotated(args[0])
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
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text ({e.reason})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {' '.join(str(e).split())}") from None
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
