"""The one error type of the design space: a ``ValueError`` that names the field, the value and what is allowed."""

from __future__ import annotations

from typing import Any


class DesignError(ValueError):
    """An invalid point of the design space (or an invalid use of one on a model).

    ``field`` is the flat, site-namespaced key (``"ffn.bottleneck"``) or the argument's name, ``value``
    what was given and ``allowed`` what would have been accepted, so every message reads the same way.
    """

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: {value!r} is not allowed; allowed: {allowed}")
