"""Typed config machinery shared by every concern: strict dict -> dataclass, YAML with dotted overrides.

Each concern defines its own dataclasses (model, data, training, ...); this module only knows how to build them
from plain dicts strictly: an unknown key is an error naming the key and the valid ones, never ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vistune.errors import VistuneError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "config") -> T:
    """Build dataclass `cls` from `data`, recursing into nested dataclass fields. Unknown keys raise."""
    data = dict(data or {})
    if not isinstance(data, dict):
        raise VistuneError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise VistuneError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise VistuneError(f"{where}: {err}") from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for arg in args:
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return from_dict(arg, value, where=where)
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads "2e-5" as a string
        except ValueError:
            raise VistuneError(f"{where}: expected a number, got {value!r}") from None
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        return origin(value)
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (JSON/YAML serializable)."""
    return dataclasses.asdict(obj)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML, so numbers, bools, lists and null work)."""
    if "=" not in text:
        raise VistuneError(f"override {text!r} is not of the form key.path=value")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted `key=value` overrides to a nested dict (in place, returned). Unknown keys are caught later."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise VistuneError(f"override {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return data


def load_yaml(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a YAML config file into a dict and apply dotted overrides."""
    path = Path(path)
    if not path.is_file():
        raise VistuneError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise VistuneError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise VistuneError(f"config file {path}: the top level must be a mapping of sections")
    return apply_overrides(data, overrides or [])
