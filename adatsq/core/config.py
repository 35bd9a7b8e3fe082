"""Typed configs that round-trip through JSON and reject unknown keys.

Every user-facing config is a frozen dataclass deriving from :class:`JsonConfig`. ``to_dict`` writes plain
JSON types; ``from_dict`` checks that every key is a field (a misspelled key is an error, as with
compressed-tensors' ``extra="forbid"``) and rebuilds nested configs, tuples and optionals from the type hints.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from adatsq.core.errors import InputError

__all__ = ["ConfigError", "JsonConfig", "dump_json", "load_json"]

T = TypeVar("T", bound="JsonConfig")


class ConfigError(InputError):
    """A config or file does not match its schema; the message names the key and the fix."""


def _to_plain(value: Any) -> Any:
    if isinstance(value, JsonConfig):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


def _from_plain(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _from_plain(inner[0], value, where)
        return value
    if isinstance(tp, type) and issubclass(tp, JsonConfig):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        return tp.from_dict(value, where=where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            items = [_from_plain(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            elem = args[0] if args else Any
            items = [_from_plain(elem, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        _kt, vt = get_args(tp) or (str, Any)
        return {k: _from_plain(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class JsonConfig:
    """Base for configs: ``to_dict``/``from_dict``/``to_json``/``from_json`` with strict keys."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
        where = where or cls.__name__
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(names)}")
        hints = get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                kwargs[f.name] = _from_plain(hints[f.name], data[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: missing required key {f.name!r}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls: type[T], text: str, where: str | None = None) -> T:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where or cls.__name__}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{where or cls.__name__}: expected a JSON object")
        return cls.from_dict(data, where=where)

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)


def dump_json(path: Path, obj: JsonConfig | dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename), so an interrupted write leaves the old file intact."""
    from adatsq.core.atomic import atomic_write_text

    text = obj.to_json() if isinstance(obj, JsonConfig) else json.dumps(obj, indent=2) + "\n"
    atomic_write_text(path, text)


def load_json(path: Path, cls: type[T]) -> T:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    return cls.from_json(text, where=str(path))
