"""Errors that name the field, the value and what is allowed, so every message reads the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class FieldError(ValueError):
    """Bad input: ``field`` is the key or argument's name (``"ffn.bottleneck"``, ``"lr"``), ``value`` what was
    given and ``allowed`` what would have been accepted."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: {value!r} is not allowed; allowed: {allowed}")


class DesignError(FieldError):
    """An invalid point of the design space, or an invalid use of one on a model."""


# A field's own check: ``rule(field name, given value)`` returns the value to keep, or raises ``FieldError`` (a
# search spec's ``SpecError`` for several problems) naming the field, the value and what is allowed.
Rule = Callable[[str, Any], Any]


def rule(ok: Callable[[Any], bool], allowed: str, convert: Callable[[Any], Any] = lambda value: value) -> Rule:
    """The rule of a value that passes ``ok``, described as ``allowed``, kept as ``convert(value)`` (the checks of a
    search spec's fields and of a declared task's)."""

    def check(name: str, value: Any) -> Any:
        if not ok(value):
            raise FieldError(name, value, allowed)
        return convert(value)

    return check
