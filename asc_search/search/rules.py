"""What one key of a search file accepts (:class:`Field`), and where in the file a value sits (:class:`Where`), so
that every message names the file, the key path and what is allowed.

A key that is a field of a config class (``StudentConfig``, ``DistillConfig``, ``TrainConfig``, ``Budget``,
``SplitConfig``) takes its type from the field's annotation and its bounds from the config itself: the value is
tried on the config and the config's own message is passed on. Keys only the search file has carry their own
bounds here (``minimum``, ``maximum``, ``choices``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import QUOTE_LIMIT, ConfigError, quote
from .spec import MISSING

__all__ = ["Field", "Where", "config_fields", "fmt"]

_KIND_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "structured": "a value"}


def fmt(value: Any) -> str:
    """A value as the file would spell it, at most about :data:`~asc_search.errors.QUOTE_LIMIT` characters."""
    if isinstance(value, str) and len(value) > QUOTE_LIMIT:
        return f"{json.dumps(value[:QUOTE_LIMIT])[:-1]}... ({len(value):,} characters)"
    return json.dumps(value) if isinstance(value, (str, bool)) or value is None else quote(value)


def _config_problem(message: str, name: str) -> str:
    """The config's message without its own naming of the key (the caller names the file and key path)."""
    return re.sub(rf"^(?:[\w ]+: )?(?:\w+\.)?{re.escape(name)} (?=must )", "", message, count=1)


@dataclass(frozen=True)
class Field:
    """What one key accepts: a kind, plus either the config that checks it or the search file's own bounds."""

    kind: str  # int | float | str | bool | structured (lists, mappings: checked by the config only)
    minimum: float | None = None
    maximum: float | None = None
    open_minimum: bool = False
    choices: tuple[Any, ...] | None = None
    config: type | None = None  # the config class whose field this is (its __post_init__ checks the value)
    name: str = ""  # the field's name on ``config``
    context: Mapping[str, Any] = field(default_factory=dict)  # other config fields needed to try a value

    def with_kind(self, kind: str) -> Field:
        return dataclasses.replace(self, kind=kind)

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        parts = []
        if self.minimum is not None:
            parts.append(f"{'>' if self.open_minimum else '>='} {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        return _KIND_WORDS[self.kind] + (" " + " and ".join(parts) if parts else "")

    def _typed(self, value: Any) -> tuple[bool, Any]:
        if self.kind == "int":
            return isinstance(value, numbers.Integral) and not isinstance(value, bool), value
        if self.kind == "float":
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            return ok, float(value) if ok else value
        if self.kind == "str":
            return isinstance(value, str), value
        if self.kind == "bool":
            return isinstance(value, bool), value
        return True, value

    def _in_bounds(self, value: Any) -> bool:
        if self.choices is not None and value not in self.choices:
            return False
        if self.minimum is not None and (value <= self.minimum if self.open_minimum else value < self.minimum):
            return False
        return self.maximum is None or value <= self.maximum

    def check(self, where: Where, value: Any, path: str, **context: Any) -> Any:
        """``value`` as the config takes it (ints become floats for a float field), or a ConfigError at ``path``."""
        ok, value = self._typed(value)
        if not ok or not self._in_bounds(value):
            raise where.error(path, f"must be {self.describe()}, got {fmt(value)}")
        if self.config is not None:
            try:
                self.config(**{self.name: value, **self.context, **context})
            except ConfigError as exc:
                raise where.error(path, _config_problem(str(exc), self.name)) from None
        return value


def _kind(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return text if text in ("int", "float", "str", "bool") else "structured"


def config_fields(cls: type, exclude: tuple[str, ...] = (), context: Mapping[str, Mapping] | None = None
                  ) -> dict[str, Field]:
    """One :class:`Field` per field of the dataclass ``cls`` (minus ``exclude``), checked by ``cls`` itself;
    ``context[name]`` gives other fields a value of ``name`` needs when it is tried."""
    context = context or {}
    return {f.name: Field(_kind(f.type), config=cls, name=f.name, context=dict(context.get(f.name, {})))
            for f in dataclasses.fields(cls) if f.name not in exclude}


class Where:
    """A search file being read: every error names it and the key path."""

    def __init__(self, source: str):
        self.source = source

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {path}: {message}")

    def mapping(self, value: Any, path: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(path, f"must be a mapping (key: value lines), got {type(value).__name__} {fmt(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.error(path, f"keys must be strings, got {quote(key)}")
        return dict(value)

    def keys(self, mapping: dict, path: str, allowed: tuple[str, ...] | list[str]) -> None:
        unknown = [k for k in mapping if k not in allowed]
        if unknown:
            key = unknown[0] if len(unknown[0]) <= 80 else f"{unknown[0][:80]}..."
            where = f"{path}.{key}" if path else key
            raise self.error(where, f"unknown key; allowed keys here: {', '.join(allowed)}")

    def value(self, mapping: dict, key: str, path: str, rule: Field, default: Any = MISSING) -> Any:
        """``mapping[key]`` checked by ``rule``; ``default`` when absent (required when no default is given)."""
        full = f"{path}.{key}" if path else key
        if key not in mapping or mapping[key] is None:
            if default is MISSING:
                raise self.error(full, f"is required: {rule.describe()}")
            return default
        return rule.check(self, mapping[key], full)
