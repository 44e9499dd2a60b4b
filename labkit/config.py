"""Dataclass configs with a JSON round-trip.

Every config in labkit is a plain dataclass that inherits `JSONConfig`: `to_dict()` gives the
fields, `from_dict()` rebuilds it and refuses unknown keys with a clear message (a typo in a
config file should not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

from labkit.errors import LabkitError

C = TypeVar("C", bound="JSONConfig")


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
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise LabkitError(f"{cls.__name__}: {e}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabkitError(f"{cls.__name__}: not valid JSON ({e})") from None
        return cls.from_dict(data)

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)
