"""Design dimensions: the declarations every other part of peft-search derives from.

A *dimension* is one axis of the paper's design space (functional form, insertion form, modified
representation, composition function, bottleneck size, scale, ...).  It is declared **once**, here or
in a user's module, with

- its allowed values (a registry of named choices, or a numeric range),
- its default,
- when it is *active* (e.g. ``scale`` only matters for ``composition="scaled"``),
- an optional ``select`` hook saying which insertion points it keeps (e.g. "which layers").

The Optuna space, the MLflow params, the CLI help and the budget all read these declarations, so a
dimension a user registers shows up everywhere without any other change.

This module imports nothing heavy (no torch): search specs are validated against it before the
expensive imports happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from peft_space.errors import DesignError
from peft_space.registry import Registry

Values = Mapping[str, Any]
"""The values resolved so far for one site, in declaration order; ``"site"`` holds the site name."""


def always(_: Values) -> bool:
    return True


class Dimension:
    """Base class of all dimensions.

    Subclasses define how a raw value is parsed and checked (``parse``) and how the allowed values
    are described (``allowed``); the description is what error messages and ``--help`` print.
    """

    kind: str = "abstract"

    def __init__(
        self,
        name: str,
        *,
        help: str,
        default: Any | Callable[[Values], Any],
        active: Callable[[Values], bool] = always,
        active_doc: str = "",
        select: Callable[[Any, Any], bool] | None = None,
    ) -> None:
        self.name = name
        self.help = help
        self._default = default
        self.active = active
        self.active_doc = active_doc
        self.select = select

    def default(self, values: Values) -> Any:
        return self._default(values) if callable(self._default) else self._default

    def parse(self, value: Any, values: Values) -> Any:
        raise NotImplementedError

    def allowed(self) -> str:
        raise NotImplementedError

    def fail(self, values: Values, value: Any, allowed: str | None = None) -> DesignError:
        return DesignError(f"{values['site']}.{self.name}", value, allowed or self.allowed())

    def searched(self) -> str:
        """What a search tries by default, where that is narrower than what is allowed."""
        return ""

    def describe(self) -> str:
        """One line for ``--help``: what it is, what is allowed and searched, when it applies."""
        when = f" (only {self.active_doc})" if self.active_doc else ""
        searched = f"; searched: {self.searched()}" if self.searched() else ""
        return f"{self.name}: {self.help}; allowed: {self.allowed()}{searched}{when}"


V = TypeVar("V")


@dataclass(frozen=True)
class Choice:
    """A named value of a categorical dimension; subclasses carry the value's behaviour."""

    name: str
    help: str = ""


class Categorical(Dimension, Generic[V]):
    """A dimension whose values are named objects kept in a registry (users may add more).

    ``optional``: a search may also pick "none" for it, which leaves the site unmodified (the functional form:
    a site without one has no modification)."""

    kind = "categorical"

    def __init__(self, name: str, *, check: Callable[[V, Values], str | None] | None = None, optional: bool = False,
                 **kw: Any):
        super().__init__(name, **kw)
        self.registry: Registry[V] = Registry(name)
        self._check, self.optional = check, optional

    def register(self, choice: V) -> V:
        """Add a value; registering an existing name is an error (it would change old designs)."""
        return self.registry.add(choice.name, choice)  # type: ignore[attr-defined]

    def __getitem__(self, key: str) -> V:
        return self.registry[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.registry)

    def choices(self, values: Values | None = None) -> list[str]:
        """The names allowed here; with ``values``, only those that pass the dimension's check."""
        if values is None or self._check is None:
            return list(self.registry)
        return [k for k, c in self.registry.items() if self._check(c, values) is None]

    def allowed(self) -> str:
        return self.registry.allowed()

    def parse(self, value: Any, values: Values) -> str:
        if not isinstance(value, str) or value not in self.registry:
            raise self.fail(values, value)
        if self._check is not None and (problem := self._check(self.registry[value], values)):
            raise self.fail(values, value, problem)
        return value


class Integer(Dimension):
    """``low``..``high`` is what a design may hold; ``search`` the range a search samples by default (on a log scale
    if ``log``), which a spec's ``ranges`` may change within ``low``..``high``."""

    kind = "int"

    def __init__(self, name: str, *, low: int, high: int, log: bool = False, search: tuple[int, int] | None = None,
                 **kw: Any):
        super().__init__(name, **kw)
        self.low, self.high, self.log = low, high, log
        self.search = search or (low, high)

    def searched(self) -> str:
        return f"[{self.search[0]}, {self.search[1]}]" + (", log scale" if self.log else "")

    def allowed(self) -> str:
        return f"an integer in [{self.low}, {self.high}]"

    def parse(self, value: Any, values: Values) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
            raise self.fail(values, value)
        return value


class Float(Dimension):
    """As ``Integer``, for real numbers."""

    kind = "float"

    def __init__(self, name: str, *, low: float, high: float, log: bool = False,
                 search: tuple[float, float] | None = None, **kw: Any):
        super().__init__(name, **kw)
        self.low, self.high, self.log = low, high, log
        self.search = search or (low, high)

    def searched(self) -> str:
        return f"[{self.search[0]:g}, {self.search[1]:g}]" + (", log scale" if self.log else "")

    def allowed(self) -> str:
        return f"a number in [{self.low:g}, {self.high:g}]"

    def parse(self, value: Any, values: Values) -> float:
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not self.low <= number <= self.high:
            raise self.fail(values, value)
        return number


class Boolean(Dimension):
    kind = "bool"

    def allowed(self) -> str:
        return "true or false"

    def parse(self, value: Any, values: Values) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise self.fail(values, value)


# The dimensions, in order: ``active`` may only read earlier dimensions.
DIMENSIONS: Registry[Dimension] = Registry("dimension", "add one with register_dimension")


def register_dimension(dimension: Dimension) -> Dimension:
    """Add a whole new design dimension (see README, "Extending the space")."""
    if dimension.name == "site":  # a design's keys name its sites
        raise DesignError("dimension", dimension.name, "a name other than 'site'")
    return DIMENSIONS.add(dimension.name, dimension)


def dimension(name: str) -> Dimension:
    """The declaration of a dimension by name."""
    return DIMENSIONS[name]
