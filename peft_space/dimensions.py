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
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from peft_space.errors import DesignError

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

    def describe(self) -> str:
        """One line for ``--help``: what it is, what is allowed, when it applies."""
        when = f" (only {self.active_doc})" if self.active_doc else ""
        return f"{self.name}: {self.help}; allowed: {self.allowed()}{when}"


V = TypeVar("V")


@dataclass(frozen=True)
class Choice:
    """A named value of a categorical dimension; subclasses carry the value's behaviour."""

    name: str
    help: str = ""


class Categorical(Dimension, Generic[V]):
    """A dimension whose values are named objects kept in a registry (users may add more)."""

    kind = "categorical"

    def __init__(self, name: str, *, check: Callable[[V, Values], str | None] | None = None, **kw: Any):
        super().__init__(name, **kw)
        self._choices: dict[str, V] = {}
        self._check = check

    def register(self, choice: V) -> V:
        """Add a value; registering an existing name is an error (it would change old designs)."""
        key = choice.name  # type: ignore[attr-defined]
        if key in self._choices:
            raise ValueError(f"{self.name}: value {key!r} is already registered")
        self._choices[key] = choice
        return choice

    def __getitem__(self, key: str) -> V:
        return self._choices[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._choices)

    def choices(self, values: Values | None = None) -> list[str]:
        """The names allowed here; with ``values``, only those that pass the dimension's check."""
        if values is None or self._check is None:
            return list(self._choices)
        return [k for k, c in self._choices.items() if self._check(c, values) is None]

    def allowed(self) -> str:
        return "one of " + ", ".join(repr(k) for k in self._choices)

    def parse(self, value: Any, values: Values) -> str:
        if not isinstance(value, str) or value not in self._choices:
            raise self.fail(values, value)
        if self._check is not None and (problem := self._check(self._choices[value], values)):
            raise self.fail(values, value, problem)
        return value


class Integer(Dimension):
    kind = "int"

    def __init__(self, name: str, *, low: int, high: int, log: bool = False, **kw: Any):
        super().__init__(name, **kw)
        self.low, self.high, self.log = low, high, log

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
    kind = "float"

    def __init__(self, name: str, *, low: float, high: float, log: bool = False, **kw: Any):
        super().__init__(name, **kw)
        self.low, self.high, self.log = low, high, log

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


@dataclass
class Registry:
    """The ordered set of dimensions. Order matters: ``active`` may only read earlier dimensions."""

    dimensions: dict[str, Dimension] = field(default_factory=dict)

    def register(self, dimension: Dimension) -> Dimension:
        if dimension.name in self.dimensions or dimension.name == "site":
            raise ValueError(f"dimension {dimension.name!r} is already registered")
        self.dimensions[dimension.name] = dimension
        return dimension

    def __getitem__(self, name: str) -> Dimension:
        return self.dimensions[name]

    def __iter__(self) -> Iterator[Dimension]:
        return iter(list(self.dimensions.values()))

    def names(self) -> list[str]:
        return list(self.dimensions)


DIMENSIONS = Registry()


def register_dimension(dimension: Dimension) -> Dimension:
    """Add a whole new design dimension (see README, "Extending the space")."""
    return DIMENSIONS.register(dimension)


def dimension(name: str) -> Dimension:
    """The declaration of a dimension by name."""
    try:
        return DIMENSIONS[name]
    except KeyError:
        raise DesignError("dimension", name, "one of " + ", ".join(map(repr, DIMENSIONS.names()))) from None
