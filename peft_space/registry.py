"""The one kind of registry: named things users add to (sites, presets, architectures, dimensions, a dimension's
values, tasks), all behaving alike.

    SITES = Registry("site")
    SITES.add("attn", Site(...))
    SITES["attn"]          # the site
    SITES["atn"]           # DesignError: site: 'atn' is not allowed; allowed: one of 'attn', 'ffn'

Adding a name that is taken is an error: replacing an entry would silently change what recorded designs and
searches mean. Looking up an unknown name raises ``DesignError`` naming the field and every allowed name.
Otherwise it is a read-only ``Mapping`` in registration order (``in``, ``get``, ``items``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from peft_space.errors import DesignError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    def __init__(self, field: str, hint: str = "") -> None:
        self.field, self.hint = field, hint  # the name errors give the key; a hint on how to add one
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise DesignError(self.field, name, f"a name not registered yet ({self.field} {name!r} is)")
        self._items[name] = item
        return item

    def allowed(self) -> str:
        return "one of " + ", ".join(map(repr, self._items)) + (f"; {self.hint}" if self.hint else "")

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise DesignError(self.field, name, self.allowed()) from None

    def get(self, name: str, default: Any = None) -> Any:  # Mapping's get expects a KeyError
        return self._items.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Registry[T]]:
        """Entries added inside the block are gone after it (a test's own registry)."""
        saved = dict(self._items)
        try:
            yield self
        finally:
            self._items = saved
