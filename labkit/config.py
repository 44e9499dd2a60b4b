"""Dataclass configs with a JSON round-trip.

Every config in labkit is a plain dataclass that inherits `JSONConfig`: `to_dict()` gives the
fields, `from_dict()` rebuilds it and refuses unknown keys and values of the wrong type with a clear
message (a typo in a config file should not be silently ignored, nor a damaged file crash).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

from labkit.atomic import parse_json
from labkit.errors import LabkitError

C = TypeVar("C", bound="JSONConfig")
SIMPLE_TYPES = ("int", "float", "str", "bool", "None")


def type_ok(value: Any, annotation: Any) -> bool:
    """Does `value` fit a field annotated `int`, `float | None`, ...? Other annotations pass."""
    names = [getattr(annotation, "__name__", str(annotation))] if isinstance(annotation, type) \
        else [part.strip() for part in str(annotation).split("|")]
    if not all(name in SIMPLE_TYPES for name in names):
        return True
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return any((name == "int" and number and isinstance(value, int))
               or (name == "float" and number) or (name == "bool" and isinstance(value, bool))
               or (name == "str" and isinstance(value, str)) or (name == "None" and value is None)
               for name in names)


@dataclasses.dataclass
class JSONConfig:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise LabkitError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise LabkitError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; "
                              f"valid fields are {', '.join(sorted(names))}")
        for f in dataclasses.fields(cls):
            if f.name in data and not type_ok(data[f.name], f.type):
                raise LabkitError(f"{cls.__name__}: {f.name} must be {f.type}, got "
                                  f"{data[f.name]!r:.60}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise LabkitError(f"{cls.__name__}: {e}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        try:
            data = parse_json(text)
        except ValueError as e:  # not JSON, or nested deeper than any config
            raise LabkitError(f"{cls.__name__}: {e}") from None
        return cls.from_dict(data)

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)
