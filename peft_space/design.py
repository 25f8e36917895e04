"""``Design``: one point of the space — at most one modification per site.

A design is checked when it is made: every site's values are parsed by their dimension declarations
in order, defaults fill the gaps, inactive dimensions must be absent (a ``scale`` with
``composition="add"`` is an error, not silently dropped). Architecture-dependent checks (a
representation the model lacks, BitFit without biases) happen in ``apply``.

Round trips: ``to_dict``/``from_dict`` use flat, site-namespaced keys (``"ffn.bottleneck"``) — the form
MLflow params and Optuna parameters take — and ``to_json``/``from_json`` a nested form.
``id`` is a short hash of the canonical flat dict: the same design gets the same id in any process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from peft_space import paper as _paper  # noqa: F401  (registers the built-in dimensions)
from peft_space.dimensions import DIMENSIONS
from peft_space.errors import DesignError
from peft_space.sites import SITES

DESIGN_FILE = "design.json"  # a design as JSON, beside saved weights and in every trial's MLflow record


class Modification(Mapping[str, Any]):
    """The resolved values of one site: every active dimension, nothing else."""

    def __init__(self, site: str, values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> None:
        self.site = site
        self._values = MappingProxyType(resolve_site(site, values, defaults or {}))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def choice(self, dimension: str) -> Any:
        """The declaration object of a categorical value (e.g. the ``Form`` named by ``form``)."""
        return DIMENSIONS[dimension][self[dimension]]  # type: ignore[index]

    def __repr__(self) -> str:
        return f"Modification({self.site!r}, {dict(self._values)!r})"


def resolve_site(site_name: str, raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Parse one site's raw values against the dimension declarations, in declaration order.

    ``defaults`` (a preset's values) replace the declared defaults; unlike ``raw`` values they are
    dropped where their dimension is inactive, so overriding ``composition`` drops a preset's ``scale``.
    """
    SITES[site_name]  # an unknown site -> DesignError naming every site
    known = list(DIMENSIONS)
    for key in raw:
        if key not in known:
            raise DesignError(f"{site_name}.{key}", raw[key], "dimensions " + ", ".join(map(repr, known)))
    values: dict[str, Any] = {"site": site_name}
    for dim in DIMENSIONS.values():
        if dim.active(values):
            default = defaults[dim.name] if dim.name in defaults else dim.default(values)
            values[dim.name] = dim.parse(raw.get(dim.name, default), values)
        elif dim.name in raw:
            raise DesignError(f"{site_name}.{dim.name}", raw[dim.name], f"no value: it is used only {dim.active_doc}")
    del values["site"]
    return values


class Design:
    """A point of the design space: ``{site: {dimension: value}}``."""

    def __init__(
        self, sites: Mapping[str, Mapping[str, Any]], defaults: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        unknown = [name for name in sites if name not in SITES]
        if unknown:
            raise DesignError("site", unknown[0], "one of " + ", ".join(map(repr, SITES)))
        ordered = [name for name in SITES if name in sites]
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                if SITES[a].overlaps(SITES[b]):
                    raise DesignError("site", b, f"a site that does not overlap {a!r} (one modification per sub-layer)")
        self.sites: Mapping[str, Modification] = MappingProxyType(
            {name: Modification(name, sites[name], (defaults or {}).get(name)) for name in ordered}
        )

    # -- round trips -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Flat, site-namespaced: ``{"ffn.bottleneck": 512, "ffn.composition": "scaled", ...}``."""
        return {f"{s}.{k}": v for s, mod in self.sites.items() for k, v in mod.items()}

    @classmethod
    def from_dict(cls, flat: Mapping[str, Any]) -> Design:
        sites: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            site_name, dot, dim = key.partition(".")
            if not dot or not dim:
                raise DesignError(key, value, "keys of the form 'site.dimension', e.g. 'ffn.bottleneck'")
            sites.setdefault(site_name, {})[dim] = value
        return cls(sites)

    def to_json(self) -> str:
        return json.dumps({"sites": {s: dict(m) for s, m in self.sites.items()}}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Design:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DesignError("design JSON", text[:60], f"valid JSON ({err})") from None
        if not isinstance(data, dict) or not isinstance(data.get("sites"), dict):
            raise DesignError("design JSON", data, 'an object {"sites": {site: {dimension: value}}}')
        return cls(data["sites"])

    @property
    def id(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(canonical.encode()).hexdigest()[:10]

    # -- value semantics ---------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Design) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Design({ {s: dict(m) for s, m in self.sites.items()} !r})"
