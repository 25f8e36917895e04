"""The Optuna search space, derived from ``peft_space``'s declarations (nothing here names a dimension).

For each searched site the trial first picks ``{site}.form`` among ``"none"`` (leave the site alone) and
the forms that fit the site, then every *active* dimension in declaration order — so ``scale`` is only
sampled for ``composition="scaled"``, and MAM (softmax at ``attn`` + scaled parallel adapter at ``ffn``),
PA+PA and prefix+LoRA are all reachable. A dimension or value a user registers appears here unchanged.

Optuna needs one fixed distribution per parameter name, but the rules narrow some choices in context
(the softmax form only takes ``representation="head"``). So a categorical parameter is named by its flat
design key where every registered value is open, and by the key plus its choice set where the rules
narrowed it (``attn.representation[head]``); a narrowed set of one value is not sampled at all.

A site may instead take a **menu**: a few of the paper's methods (presets; the site's part of each) with a
finite list of values for some dimensions, e.g. ``{"lora_attn": {"bottleneck": [4, 16]}, "prefix": {...}}``.
The trial picks ``{site}.method`` among ``"none"`` and the menu, then each listed dimension
(``attn.bottleneck[lora_attn]``). Menus at every site make the space finite: ``grid(space)`` lists its designs
(a tabular benchmark trains each of them).

Training hyper-parameters are searched beside the design (``Space.train``: a hyper-parameter -> ``(low, high)`` or
``{"values": (...)}``, ``trainers``' declarations narrowed by the spec's ``search_train``): each is one Optuna
parameter ``train.NAME`` of every trial, sampled by ``suggest_train`` (log-uniformly where its declaration says).
A configuration is a design and its hyper-parameters; ``configurations(space)`` lists a finite space's.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from peft_space import PRESETS, Categorical, Design
from peft_space import DIMENSIONS, Boolean, Dimension, Float, Integer
from trainers import hyperparameters

NONE = "none"
Menu = Mapping[str, Mapping[str, Sequence[Any]]]  # preset name -> dimension -> the values to try


class Trial(Protocol):  # the part of optuna.Trial used here (also satisfied by optuna.trial.FixedTrial)
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...


@dataclass(frozen=True)
class Space:
    """What to search: sites, allowed values per dimension (default: all) and numeric ranges (default: each
    dimension's declared ``search`` range)."""

    sites: tuple[str, ...] = ("attn", "ffn")
    values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # dimension -> allowed values
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # dimension -> (low, high)
    menus: Mapping[str, Menu] = field(default_factory=dict)  # site -> its menu (instead of every dimension)
    train: Mapping[str, Any] = field(default_factory=dict)  # hyper-parameter -> (low, high) | {"values": (...)}
    designs: tuple[str, ...] = ()  # only these designs of the menus, by ``menu_label`` (empty: every combination)

    def __setstate__(self, state: dict[str, Any]) -> None:  # a Space pickled before these fields: their defaults
        self.__dict__.update({"train": {}, "designs": (), **state})


TRAIN = "train."  # the Optuna parameters of sampled hyper-parameters: ``train.lr``
DESIGN = "design"  # the Optuna parameter that picks one of ``Space.designs`` by its name
LOG_SCALE = {h.name: h.log for h in hyperparameters()}  # as each hyper-parameter's declaration says


def suggest(trial: Trial, space: Space) -> Design:
    """Sample one design. An all-"none" trial is the frozen model with only the task head trained. A space that
    lists its ``designs`` samples one of them, by name (one categorical parameter, ``DESIGN``)."""
    if space.designs:
        return dict(zip(space.designs, grid(space)))[trial.suggest_categorical(DESIGN, list(space.designs))]
    sites: dict[str, dict[str, Any]] = {}
    for site in space.sites:
        if site in space.menus:
            chosen = _from_menu(trial, site, space.menus[site])
            if chosen is not None:
                sites[site] = chosen
            continue
        values: dict[str, Any] = {"site": site}
        for dim in DIMENSIONS.values():
            if not dim.active(values):
                continue
            value = _suggest(trial, dim, values, space)
            if value == NONE:
                break
            values[dim.name] = value
        else:
            del values["site"]
            sites[site] = values
    return Design(sites)


def _from_menu(trial: Trial, site: str, menu: Menu) -> dict[str, Any] | None:
    method = trial.suggest_categorical(f"{site}.method", [NONE, *menu])
    if method == NONE:
        return None
    values = dict(PRESETS[method].sites[site])
    for dim, options in menu[method].items():
        values[dim] = options[0] if len(options) == 1 else trial.suggest_categorical(f"{site}.{dim}[{method}]", list(options))
    return values


def menu_options(site: str, menu: Menu) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Every choice a menu offers at ``site``: the Optuna params that pick it, and the site's modification
    (``None``: the site is left alone)."""
    options: list[tuple[dict[str, Any], dict[str, Any] | None]] = [({f"{site}.method": NONE}, None)]
    for method, varied in menu.items():
        dims = list(varied)
        for combo in itertools.product(*(varied[d] for d in dims)):
            params = {f"{site}.method": method,
                      **{f"{site}.{d}[{method}]": v for d, v in zip(dims, combo) if len(varied[d]) > 1}}
            options.append((params, {**PRESETS[method].sites[site], **dict(zip(dims, combo))}))
    return options


def grid(space: Space) -> list[Design]:
    """Every design of a finite space (a menu at every site), in a fixed order; only those ``space.designs`` names
    where it names some."""
    designs = combinations(space)
    if not space.designs:
        return designs
    named = {menu_label(design, space): design for design in designs}
    unknown = [label for label in space.designs if label not in named]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a combination of the menus ({', '.join(named)})")
    return [named[label] for label in space.designs]


def combinations(space: Space) -> list[Design]:
    """Every combination of the menus' choices, one per site."""
    missing = [site for site in space.sites if site not in space.menus]
    if missing:
        raise ValueError(f"a grid needs a menu at every site; none at {', '.join(missing)}")
    per_site = [[mod for _, mod in menu_options(site, space.menus[site])] for site in space.sites]
    return [Design({site: mod for site, mod in zip(space.sites, mods) if mod is not None})
            for mods in itertools.product(*per_site)]


def suggest_train(trial: Trial, space: Space) -> dict[str, Any]:
    """Sample the space's training hyper-parameters: name -> value (the trial's overrides of the training config)."""
    return {name: _suggest_hyperparameter(trial, name, searched) for name, searched in space.train.items()}


def _suggest_hyperparameter(trial: Trial, name: str, searched: Any) -> Any:
    if isinstance(searched, Mapping):
        return trial.suggest_categorical(TRAIN + name, list(searched["values"]))
    low, high = searched
    if low == high:  # narrowed to one value: nothing to sample
        return low
    log = LOG_SCALE[name]
    if isinstance(low, int) and isinstance(high, int):
        return trial.suggest_int(TRAIN + name, low, high, log=log)
    return trial.suggest_float(TRAIN + name, float(low), float(high), log=log)


def train_params(train: Mapping[str, Any], space: Space) -> dict[str, Any]:
    """The Optuna parameters that make ``suggest_train`` return ``train`` (for enqueueing a configuration)."""
    params = {}
    for name, searched in space.train.items():
        value = train[name]
        inside = value in searched["values"] if isinstance(searched, Mapping) else searched[0] <= value <= searched[1]
        if not inside:
            raise ValueError(f"{TRAIN}{name}: {value!r} is outside the search space {searched}")
        if isinstance(searched, Mapping) or searched[0] != searched[1]:
            params[TRAIN + name] = value
    return params


def configurations(space: Space) -> list[tuple[Design, dict[str, Any]]]:
    """Every configuration of a finite space (a menu at every site, a list of values for every searched
    hyper-parameter): each design of ``grid`` with each combination of values, in a fixed order."""
    ranged = [name for name, searched in space.train.items() if not isinstance(searched, Mapping)]
    if ranged:
        raise ValueError(f"a grid needs a list of values for every searched hyper-parameter; a range for {', '.join(ranged)}")
    names = list(space.train)
    combos = [dict(zip(names, values)) for values in itertools.product(*(space.train[n]["values"] for n in names))]
    return [(design, combo) for design in grid(space) for combo in combos]


def _suggest(trial: Trial, dim: Dimension, values: dict[str, Any], space: Space) -> Any:
    key = f"{values['site']}.{dim.name}"
    if isinstance(dim, Categorical):
        allowed = [c for c in dim.choices(values) if c in space.values.get(dim.name, dim.choices())]
        if dim.optional:
            return trial.suggest_categorical(key, [NONE, *allowed])
        if not allowed:
            raise ValueError(f"{key}: the search space leaves no value")
        if len(allowed) == 1:
            return allowed[0]
        name = key if allowed == dim.choices() else f"{key}[{','.join(allowed)}]"
        return trial.suggest_categorical(name, allowed)
    if isinstance(dim, Boolean):
        return trial.suggest_categorical(key, list(space.values.get(dim.name, (False, True))))
    low, high = space.ranges.get(dim.name, dim.search)
    if isinstance(dim, Integer):
        return trial.suggest_int(key, int(low), int(high), log=dim.log)
    if isinstance(dim, Float):
        return trial.suggest_float(key, float(low), float(high), log=dim.log)
    raise TypeError(f"{key}: no Optuna distribution for a {type(dim).__name__} dimension")


def params_of(design: Design, space: Space) -> dict[str, Any]:
    """The Optuna parameters that make ``suggest`` return ``design`` (for points_to_evaluate / enqueue_trial)."""
    if space.designs:
        return {DESIGN: menu_label(design, space)}
    params: dict[str, Any] = {}
    for site in space.sites:
        mod = design.sites.get(site)
        if site in space.menus:
            params |= _menu_params(site, space.menus[site], mod)
            continue
        values: dict[str, Any] = {"site": site}
        for dim in DIMENSIONS.values():
            if not dim.active(values):
                continue
            value = mod[dim.name] if mod is not None else NONE
            _ParamCapture(params, value).record(dim, values, space)
            if value == NONE:
                break
            values[dim.name] = value
    return params


def menu_label(design: Design, space: Space) -> str:
    """A design of a menu space in a few words: ``lora_attn:4 + pa_ffn:16``, ``bitfit(attn)`` (each site's method
    and the values its menu varies)."""
    parts = []
    for site in space.sites:
        mod = design.sites.get(site)
        method = _menu_params(site, space.menus[site], mod)[f"{site}.method"]
        if method != NONE:  # a preset of several sites (bitfit) names the site it is used at
            where = f"({site})" if len(PRESETS[method].sites) > 1 else ""
            parts.append(method + where + "".join(f":{mod[dim]}" for dim in space.menus[site][method]))
    return " + ".join(parts) or "head only"


def _menu_params(site: str, menu: Menu, mod: Any) -> dict[str, Any]:
    wanted = Design({site: dict(mod)}).to_dict() if mod is not None else {}
    for params, option in menu_options(site, menu):
        if (Design({site: option}).to_dict() if option is not None else {}) == wanted:
            return params
    raise ValueError(f"{site}: {dict(mod or {})} is not on the site's menu ({', '.join(menu)})")


class _ParamCapture:
    """A trial that answers every suggestion with a known value and remembers the parameter name."""

    def __init__(self, params: dict[str, Any], value: Any) -> None:
        self.params, self.value = params, value

    def record(self, dim: Dimension, values: dict[str, Any], space: Space) -> None:
        _suggest(self, dim, values, space)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if self.value not in choices:
            raise ValueError(f"{name}: {self.value!r} is outside the search space {list(choices)}")
        self.params[name] = self.value
        return self.value

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int:
        return self._number(name, low, high)

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        return self._number(name, low, high)

    def _number(self, name: str, low: float, high: float) -> Any:
        if not low <= self.value <= high:
            raise ValueError(f"{name}: {self.value!r} is outside the search range [{low}, {high}]")
        self.params[name] = self.value
        return self.value


__all__ = ["DESIGN", "NONE", "TRAIN", "Space", "combinations", "configurations", "grid", "menu_label", "menu_options",
           "params_of", "suggest", "suggest_train", "train_params"]
