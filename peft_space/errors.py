"""Errors that name the field, the value and what is allowed, so every message reads the same way."""

from __future__ import annotations

from typing import Any


class FieldError(ValueError):
    """Bad input: ``field`` is the key or argument's name (``"ffn.bottleneck"``, ``"lr"``), ``value`` what was
    given and ``allowed`` what would have been accepted."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: {value!r} is not allowed; allowed: {allowed}")


class DesignError(FieldError):
    """An invalid point of the design space, or an invalid use of one on a model."""
