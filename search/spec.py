"""The search spec: a YAML file (or the same keys from the command line), validated before heavy imports.

Every field is declared once, in ``Spec``, with its default, help and rule (``spec_field``); the parser,
``peft-search run``'s options and ``peft-search fields`` (every field with its default and meaning) come from those
declarations. The few rules that relate fields are listed in ``CROSS_FIELD``. Every problem is reported at once,
one line each, naming the field, the value and what is allowed::

    name: sst2-minilm
    sites: [attn, ffn]
    menus: {attn: {lora_attn: {bottleneck: [4, 16]}, prefix: {}}}
    budget_cap: 1%
    sampler: tpe
    scheduler: asha
    asha: {grace_period: 20, reduction_factor: 3, max_steps: 200}
    trials: 30
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

import peft_space
import trainers
from peft_space import DIMENSIONS, Categorical, FieldError, Float, Integer, Rule, rule
from search.implementations import SAMPLERS, SCHEDULERS, TRAINERS
from search.schema import Params

DEFAULT = Path(__file__).parent / "specs" / "default.yaml"  # the embedded default: `peft-search run` with no spec


class SpecError(ValueError):
    """All the problems of a spec, one ``FieldError`` each."""

    def __init__(self, problems: list[FieldError]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _raise_all(problems: list[FieldError]) -> None:
    """A rule that checks several items reports every bad one at once."""
    if problems:
        raise SpecError(problems)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    """A finite int or float (NaN and infinity pass no bound honestly: ``nan >= 0`` is False, ``inf > 0`` True)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _percent(value: Any) -> float | None:
    """'1%', '0.5 %', 1 or 1.0 -> 1.0 (percent); anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().removesuffix("%").strip())
        except ValueError:
            return None
    return float(value) if _number(value) else None


def _text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def integer(low: int, high: int) -> Rule:
    """An integer in [low, high]."""
    return rule(lambda v: _integer(v) and low <= v <= high, f"an integer in [{low:,}, {high:,}]")


SEED = integer(0, 2**32 - 1)  # numpy's seeds; a trial's seed is the spec's plus its rank
TEXT = rule(_text, "a non-empty string")
# A search's name becomes a file, an Optuna study, an MLflow experiment and a Ray folder: a safe set of characters.
NAME = rule(lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", v) is not None
            and ".." not in v, "1 to 100 letters, digits, '_', '-' or '.', starting with a letter or digit "
                               "(no '..', no '/')")
TEXT_OR_NULL = rule(lambda v: v is None or _text(v), "a non-empty string or null")


def store_url(*examples: str) -> Rule:
    """A store's URL, without a password: the saved spec, logs and records may show the URL, so the password comes
    from where the store's client looks for one (PostgreSQL: PGPASSWORD or a PGPASSFILE; an MLflow server:
    MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN)."""

    def check(name: str, value: Any) -> str:
        if not (isinstance(value, str) and "://" in value):
            raise FieldError(name, value, "a URL such as " + " or ".join(examples))
        parts = urlsplit(value)
        if parts.password is not None:  # named, not repeated: the error line is a log line too
            hidden = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()
            raise FieldError(name, hidden, "a URL without a password; give the password in the environment "
                                           "(PGPASSWORD, MLFLOW_TRACKING_PASSWORD) or a file (PGPASSFILE)")
        return value

    return check


def keyed(**rules: Rule) -> Rule:
    """A mapping of these keys (each with its own rule); keys left out keep the field's default."""

    def check(name: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise FieldError(name, value, "a mapping of " + ", ".join(rules))
        kept, problems = {}, []
        for key, item in value.items():
            try:
                if key not in rules:
                    raise FieldError(f"{name}.{key}", key, ", ".join(rules))
                kept[key] = rules[key](f"{name}.{key}", item)
            except FieldError as err:
                problems.append(err)
        _raise_all(problems)
        return kept

    return check


def one_of(allowed: Callable[[], Sequence[str]], many: bool = False) -> Rule:
    """A name of a fixed set or, ``many``, a list of such names (each checked)."""

    def check(name: str, value: Any) -> Any:
        names = list(allowed())
        if many and not isinstance(value, (list, tuple)):
            raise FieldError(name, value, "a list of " + ", ".join(names))
        _raise_all([FieldError(name, item, "one of " + ", ".join(names))
                    for item in (value if many else [value]) if item not in names])
        return tuple(value) if many else value

    return check


def spec_field(default: Any = None, help: str = "", *, factory: Callable[[], Any] | None = None,
               flag: str | bool = False, choices: Sequence[str] | Callable[[], Sequence[str]] = (),
               check: Rule | None = None) -> Any:
    """One spec field, declared once: its default, its help (``--help``, ``describe``, the docs), the ``peft-search
    run`` option it gets (``flag=True``: ``--field-name``; a string: that name; otherwise only ``--set``), and its
    rule: ``choices`` for a field that names one of a fixed set (listed in the help too), otherwise ``check``.
    A field whose default is a mapping keeps the default's keys the spec leaves out."""
    metadata = {"help": help, "flag": flag, "choices": choices, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _tuples(mapping: Mapping[str, Any]) -> dict[str, tuple]:
    return {k: tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in mapping.items()}


def _mapping(name: str, value: Any, allowed: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise FieldError(name, value, allowed)
    return value


def _values(name: str, value: Any) -> dict[str, tuple]:
    """``values``: each a registered dimension, each listed value one of its choices."""
    given, problems = _mapping(name, value, "a mapping dimension -> [values]"), []
    for dim_name, chosen in given.items():
        dim = DIMENSIONS.get(dim_name)
        if dim is None:
            problems.append(FieldError(f"{name}.{dim_name}", dim_name, "dimensions " + ", ".join(DIMENSIONS)))
        elif isinstance(dim, Categorical):
            problems += [FieldError(f"{name}.{dim_name}", v, dim.allowed())
                         for v in (chosen if isinstance(chosen, (list, tuple)) else [chosen]) if v not in dim.choices()]
    _raise_all(problems)
    return _tuples(given)


def _ranges(name: str, value: Any) -> dict[str, tuple]:
    """``ranges``: numeric dimensions, each ``[low, high]`` inside what the dimension allows."""
    given, problems = _mapping(name, value, "a mapping dimension -> [low, high]"), []
    for dim_name, bounds in given.items():
        dim = DIMENSIONS.get(dim_name)
        if not isinstance(dim, (Integer, Float)):
            problems.append(FieldError(f"{name}.{dim_name}", dim_name, "numeric dimensions"))
        elif not (isinstance(bounds, (list, tuple)) and len(bounds) == 2 and bounds[0] <= bounds[1]
                  and all(_number(b) and dim.low <= b <= dim.high for b in bounds)):
            problems.append(FieldError(f"{name}.{dim_name}", bounds, f"[low, high] within {dim.allowed()}"))
    _raise_all(problems)
    return _tuples(given)


def _preset_overrides(name: str, value: Any) -> dict[str, dict[str, Any]]:
    """``preset_overrides``: each a preset these values can be applied to."""
    given, problems = _mapping(name, value, "a mapping preset -> {site.dimension: value}"), []
    for preset, overrides in given.items():
        try:
            peft_space.preset(preset, **dict(overrides))
        except FieldError as err:
            problems.append(FieldError(f"{name}.{preset}.{err.field}", err.value, err.allowed))
    _raise_all(problems)
    return {preset: dict(overrides) for preset, overrides in given.items()}


def _menus(name: str, value: Any) -> dict[str, dict[str, dict[str, tuple]]]:
    """``menus``: per site, presets that modify it, at values the design space allows (that the site is searched
    is a cross-field rule)."""
    from search.space import menu_options

    given, problems = _mapping(name, value, "a mapping site -> {preset: {dimension: [values]}}"), []
    menus: dict[str, dict[str, dict[str, tuple]]] = {}
    for site, menu in given.items():
        if site not in peft_space.SITES or not isinstance(menu, Mapping):
            problems.append(FieldError(name, site, "a site (" + ", ".join(peft_space.SITES) + ") mapped to presets"))
            continue
        menus[site] = {}
        for preset, varied in menu.items():
            if preset not in peft_space.PRESETS or site not in peft_space.PRESETS[preset].sites:
                problems.append(FieldError(f"{name}.{site}", preset, f"presets that modify {site}: " + ", ".join(
                    p for p, declared in peft_space.PRESETS.items() if site in declared.sites)))
                continue
            menus[site][preset] = _tuples(dict(varied or {}))
            try:
                for _, mod in menu_options(site, {preset: menus[site][preset]})[1:]:
                    peft_space.Design({site: mod})
            except FieldError as err:
                problems.append(FieldError(f"{name}.{site}.{preset}.{err.field.split('.')[-1]}", err.value, err.allowed))
    _raise_all(problems)
    return menus


def _labels(name: str, value: Any) -> tuple[str, ...]:
    """``designs``: a list of design names (that each is a combination of the menus is a cross-field rule)."""
    if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)) or len(set(value)) != len(value):
        raise FieldError(name, value, "a list of distinct design names, e.g. [head only, prefix:16 + scaled_pa_ffn:128]")
    return tuple(value)


def _plugins(name: str, value: Any) -> tuple[str, ...]:
    try:
        import_plugins(value)
    except (ImportError, TypeError) as err:
        raise FieldError(name, value, f"importable module names ({err})") from None
    return tuple(value)


def _search_train(name: str, value: Any) -> dict[str, Any]:
    """``search_train``: hyper-parameters a search samples per trial, each ``null`` (what its declaration samples),
    ``[low, high]`` inside what it allows, or ``{values: [...]}``; kept as ``(low, high)`` or ``{"values": (...)}``."""
    given, problems, kept = _mapping(name, value, "a mapping hyper-parameter -> null, [low, high] or {values: [...]}"), [], {}
    declared = {h.name: h for h in trainers.hyperparameters() if h.searchable}
    for hyper, narrowed in given.items():
        try:
            if hyper not in declared:
                raise FieldError(f"{name}.{hyper}", hyper, "searchable hyper-parameters " + ", ".join(declared))
            kept[hyper] = _searched(f"{name}.{hyper}", declared[hyper], narrowed)
        except FieldError as err:
            problems.append(err)
    _raise_all(problems)
    return kept


def _searched(name: str, declared: trainers.Hyperparameter, narrowed: Any) -> Any:
    """One searched hyper-parameter: its declaration's range or values, or the spec's narrowing of them."""
    if narrowed is None:
        narrowed = {"values": list(declared.values)} if declared.values else list(declared.search)
    allowed = f"null, [low, high] or {{values: [...]}}, each {declared.allowed}"
    if isinstance(narrowed, Mapping) and set(narrowed) == {"values"} and isinstance(narrowed["values"], (list, tuple)):
        values = [_hyper_value(name, declared, v, allowed) for v in narrowed["values"]]
        if not values or len(set(values)) != len(values):
            raise FieldError(name, narrowed, "a list of distinct values, each " + declared.allowed)
        return {"values": tuple(values)}
    if declared.search is None or not (isinstance(narrowed, (list, tuple)) and len(narrowed) == 2):
        raise FieldError(name, narrowed, allowed if declared.search else "{values: [...]}, each " + declared.allowed)
    low, high = (_hyper_value(name, declared, v, allowed) for v in narrowed)
    if low > high or (declared.log and low <= 0):
        raise FieldError(name, narrowed, "[low, high] with low ≤ high" + (", low > 0 (log scale)" if declared.log else ""))
    return low, high


def _hyper_value(name: str, declared: trainers.Hyperparameter, value: Any, allowed: str) -> Any:
    """A value of a searched range or list, checked by the hyper-parameter's own declaration."""
    try:
        return trainers.coerce(declared.name, value)
    except FieldError:
        raise FieldError(name, value, allowed) from None


def task_choice(name: str, value: Any) -> str | dict[str, Any]:
    """``task``: a registered task's name, or a declaration (a mapping, or a YAML file holding one) kept as its checked
    plain data, every field filled in, its task registered (a name another task has is an error)."""
    try:
        if isinstance(value, Mapping):
            declared = trainers.parse_declaration(value).to_dict()
        elif isinstance(value, str) and value.endswith((".yaml", ".yml")):
            declared = trainers.load_declaration(value)
        else:
            declared = None
    except trainers.DeclarationError as err:
        raise SpecError(err.problems) from None
    if declared is not None:
        length = len(Params.declaration(declared))
        if length > Params.MAX_LENGTH:  # every run records it whole, for reproduce and export
            raise FieldError(name, f"a declaration of {length:,} characters as JSON",
                             f"at most {Params.MAX_LENGTH:,} (MLflow's limit on the param that records it)")
        trainers.register_declared(declared)
        return declared
    if value not in trainers.TASKS:
        raise FieldError(name, value, "one of " + ", ".join(trainers.TASKS) + ", a mapping declaring a task (task.* "
                                      "in `peft-search fields`) or a YAML file declaring one")
    return value


def _train(name: str, value: Any) -> dict[str, Any]:
    """``train``: overrides of the task's training config (checked against the task by a cross-field rule)."""
    given = dict(_mapping(name, value, "a mapping of training options, e.g. {lr: 1e-3}"))
    if "steps" in given:
        raise FieldError(f"{name}.steps", given["steps"], "no steps here: a trial's steps are asha.max_steps")
    return given


PERCENT = rule(lambda v: (p := _percent(v)) is not None and 0 < p <= 100, "a percentage in (0, 100], e.g. '1%'",
               _percent)
SECONDS = rule(lambda v: _number(v) and v >= 0, "a number of seconds ≥ 0", float)
STEPS = integer(1, 1_000_000_000)
ASHA = keyed(grace_period=STEPS, reduction_factor=integer(2, 1000), max_steps=STEPS)
# As Ray: a fraction of a GPU packs trials onto one; more than one GPU comes whole.
RESOURCES = keyed(cpu=rule(lambda v: _number(v) and v > 0, "a number of CPUs > 0 (fractions allowed)"),
                  gpu=rule(lambda v: _number(v) and (0 <= v <= 1 or (v > 1 and float(v).is_integer())),
                           "a fraction of one GPU in [0, 1] (trials share it) or a whole number of GPUs"))


@dataclass(frozen=True)
class Spec:
    name: str = spec_field("default", "search name: the Optuna study, the MLflow experiment, Ray's folder", flag=True,
                           check=NAME)
    task: str | Mapping[str, Any] = spec_field(
        "sst2", "a registered task's name, a task declared here (a mapping of the task.* fields below) or a YAML file "
                "declaring one", flag=True, check=task_choice)
    model: str = spec_field(trainers.DEFAULT_MODEL, f"base model: '{trainers.DEFAULT_MODEL}' (shipped) or a transformers "
                                                    "name or path", flag=True,
                            check=TEXT)
    sites: tuple[str, ...] = spec_field(("attn", "ffn"), "sites a design may modify", choices=lambda: list(peft_space.SITES))
    values: Mapping[str, tuple[Any, ...]] = spec_field(
        factory=dict, help="allowed values per dimension, e.g. {form: [linear, relu]} (default: every registered value)",
        check=_values)
    ranges: Mapping[str, tuple[float, float]] = spec_field(
        factory=lambda: declared_ranges(), help="numeric search ranges, e.g. {bottleneck: [1, 64]} (default: each "
                                                "dimension's declared range)", check=_ranges)
    menus: Mapping[str, Mapping[str, Mapping[str, tuple[Any, ...]]]] = spec_field(
        factory=dict, help="a site picks one of these presets (or none) at the listed values instead of every "
                           "dimension, e.g. {attn: {lora_attn: {bottleneck: [4, 16]}, prefix: {}}}", check=_menus)
    designs: tuple[str, ...] = spec_field(
        (), "only these designs of the menus, by the names tables give them (head only, bitfit(attn) + bitfit(ffn), "
            "prefix:16 + scaled_pa_ffn:128): a grid trains each, another sampler picks among them (one categorical "
            "parameter, design); default: every combination", check=_labels)
    points_to_evaluate: tuple[str, ...] = spec_field((), "presets tried first (sizes set in preset_overrides)",
                                                choices=lambda: list(peft_space.PRESETS))
    preset_overrides: Mapping[str, Mapping[str, Any]] = spec_field(
        factory=dict, help="per preset of points_to_evaluate, e.g. {lora_attn: {attn.bottleneck: 8}}",
        check=_preset_overrides)
    budget_cap: float = spec_field(100.0, "largest budget to train, % of the pretrained model (analytic count, head "
                                          "excluded), e.g. '1%'; designs above it are never trained", flag=True,
                                   check=PERCENT)
    sampler: str = spec_field("tpe", "Optuna sampler (grid: every design of a menu space, `seeds` times)", flag=True,
                              choices=SAMPLERS)
    seeds: int = spec_field(1, "grid: each design is trained with seeds seed, seed+1, ...", check=integer(1, 1000))
    scheduler: str = spec_field("asha", "early stopping: asha (one metric), pareto_asha (metric and budget), none "
                                        "(every trial to asha.max_steps)", flag=True, choices=SCHEDULERS)
    asha: Mapping[str, int] = spec_field(
        factory=lambda: {"grace_period": 20, "reduction_factor": 3, "max_steps": 200},
        help="rungs: grace_period, reduction_factor, max_steps (every trial's steps)", check=ASHA)
    asha_metric: str | None = spec_field(None, "what the scheduler compares at its rungs: the task's metric (default) "
                                               "or loss, which separates designs earlier", check=TEXT_OR_NULL)
    trials: int = spec_field(20, "designs to train (designs over the budget cap do not count)", flag=True,
                             check=integer(1, 1_000_000))
    concurrency: int = spec_field(1, "trials at once (Ray runs as many as the cluster's resources allow)", flag=True,
                                  check=integer(1, 10_000))
    resources: Mapping[str, float] = spec_field(
        factory=lambda: {"cpu": 1, "gpu": 0}, help="per trial: cpu, gpu (a fraction packs trials onto one GPU)", check=RESOURCES)
    storage: str = spec_field("sqlite:///peft-search/optuna.db", "Optuna storage URL: sqlite:///…, postgresql://user@host/db "
                                                                 "(password from PGPASSWORD or PGPASSFILE, never the "
                                                                 "URL), journal:///path.log", flag=True,
                          check=store_url("sqlite:///path.db", "postgresql://user@host/db", "journal:///path.log"))
    tracking_uri: str = spec_field("sqlite:///peft-search/mlflow.db", "MLflow tracking URI: sqlite:///…, "
                                                                      "postgresql://user@host/db, http://host:5000 (no "
                                                                      "password in the URL)", flag=True,
                               check=store_url("sqlite:///path.db", "postgresql://user@host/db", "http://host:5000"))
    ray_address: str | None = spec_field(None, "Ray cluster: 'auto' on a cluster node, or host:port; null: a local "
                                               "Ray", flag="address", check=TEXT_OR_NULL)
    root: str = spec_field("peft-search", "folder of Ray's experiment state and the saved spec", flag=True,
                           check=TEXT)
    seed: int = spec_field(0, "sampler and training seed", flag=True, check=SEED)
    confirm_seeds: int = spec_field(0, "re-train the front's designs with this many more seeds; report the median",
                                    flag=True, check=integer(0, 100))
    train: Mapping[str, Any] = spec_field(
        factory=dict, help="training overrides, e.g. {lr: 1e-3, train_examples: 2000}: the keys below, each by "
                           "default the task's recipe, else the value shown (steps: asha.max_steps)", check=_train)
    search_train: Mapping[str, Any] = spec_field(
        factory=dict, help="training hyper-parameters sampled per trial beside the design, each null (its declared "
                           "range), [low, high] or {values: [...]}, e.g. {lr: null, batch_size: {values: [16, 32]}}",
        check=_search_train)
    data_dir: str | None = spec_field(None, "the task's local files (default: $PEFT_SEARCH_DATA, shared/data)", check=TEXT_OR_NULL)
    trainer: str = spec_field("train", "train; synthetic (a closed-form learning curve: a dry run of the whole stack "
                                       "in seconds); tabular (replays the curves recorded in `table`)", flag=True,
                              choices=TRAINERS)
    table: str | None = spec_field(None, "the tabular benchmark file the tabular trainer replays", check=TEXT_OR_NULL)
    synthetic_delay: float = spec_field(0.0, "seconds per report of the synthetic trainer", check=SECONDS)
    plugins: tuple[str, ...] = spec_field((), "modules imported first (driver and workers) to register dimensions "
                                              "and values", check=_plugins)

    def space(self) -> Any:
        from search.space import Space

        return Space(self.sites, self.values, self.ranges, self.menus, self.search_train, self.designs)

    @property
    def target(self) -> int:
        """How many designs to train: ``trials``, or every (design, seed) of a grid."""
        if self.sampler != "grid":
            return self.trials
        from search.space import configurations

        return len(configurations(self.space())) * self.seeds

    @property
    def task_def(self) -> trainers.Task:
        return trainers.task_of(self.task)

    @property
    def saved_path(self) -> Path:
        """Where the spec is saved as run: ``resume``, ``pareto`` and the tabular benchmark read it back."""
        return saved_path(self.root, self.name)

    @property
    def experiment_dir(self) -> Path:
        """Ray's experiment folders: the search's, and its grids' (``{name}-confirm``, ...)."""
        return (Path(self.root) / "ray").resolve()

    @property
    def artifacts(self) -> Path:
        """MLflow's artifacts and the records' journal, beside the stores (not in the working directory)."""
        return Path(self.root) / "artifacts"

    @property
    def mode(self) -> str:
        """Ray's direction for the task's validation metric."""
        return "max" if self.task_def.higher_is_better else "min"

    @property
    def asha_watch(self) -> tuple[str, str]:
        """The metric ASHA compares at its rungs and its direction. Validation loss (or perplexity) is finer
        than accuracy early on, when most designs still tie at the majority class."""
        metric = self.asha_metric or self.task_def.validation_metric
        return metric, self.mode if metric == self.task_def.validation_metric else "min"

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able data; ``parse(spec.to_dict()) == spec``."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes: Any) -> Spec:
        """A copy with ``changes`` applied and validated."""
        return parse({**self.to_dict(), **changes})


FIELDS = {f.name for f in fields(Spec)}


def field_choices(declared: Field) -> list[str]:
    """The values a field declared with ``choices`` allows."""
    allowed = declared.metadata["choices"]
    return list(allowed() if callable(allowed) else allowed)


def flags() -> dict[str, Field]:
    """The spec fields that ``peft-search run`` takes as options, by option name (the others: ``--set``)."""
    return {(f.metadata["flag"] if isinstance(f.metadata["flag"], str) else f.name): f
            for f in fields(Spec) if f.metadata["flag"]}


def field_help(declared: Field) -> str:
    """A field's help, with its choices where it has them."""
    allowed = field_choices(declared)
    return declared.metadata["help"] + (f" (one of {', '.join(allowed)})" if allowed else "")


def describe() -> str:
    """Every spec field as a YAML line with its default and help: what ``peft-search fields`` prints."""
    lines = []
    for declared in fields(Spec):
        default = declared.default_factory() if declared.default_factory is not MISSING else declared.default
        lines.append(f"{declared.name}: {_yaml(default)}  # {field_help(declared)}")
        if declared.name == "task":  # a declared task's fields
            lines += trainers.declaration_fields()
        if declared.name == "train":  # its keys: the trainer's hyper-parameters, each with its declaration
            lines += [f"  train.{h.name}: {_yaml(h.default)}  # {h.help}; allowed: {h.allowed}"
                      + (f"; search_train samples {h.searched()}" if h.searchable else "")
                      for h in trainers.hyperparameters() if h.name != "steps"]
    return "\n".join(lines)


def _yaml(value: Any) -> str:
    """A value as one line of YAML's flow style."""
    return yaml.safe_dump(_plain(value), default_flow_style=True, width=1_000, sort_keys=False).strip().removesuffix("\n...")


def saved_path(root: str | Path, name: str) -> Path:
    """The saved spec of the search ``name`` started under ``root``."""
    return Path(root) / "specs" / f"{name}.yaml"


def saved_spec(root: str | Path, name: str) -> Spec:
    """The spec a search ``name`` was started with (``peft-search resume``/``pareto``), or an error naming the
    searches started under ``root``."""
    saved = saved_path(root, name)
    if not saved.is_file():
        known = sorted(p.stem for p in saved.parent.glob("*.yaml")) if saved.parent.is_dir() else []
        raise FieldError("NAME", name, f"a search started under {root}: " + (", ".join(known) or "none yet"))
    return load(saved)


def declared_ranges() -> dict[str, tuple[float, float]]:
    """Each numeric dimension's default search range, as its declaration says (plugins' included)."""
    return {dim.name: tuple(dim.search) for dim in DIMENSIONS.values() if isinstance(dim, (Integer, Float))}


def load(path: str | Path) -> Spec:
    """Read and validate a YAML spec file."""
    return parse(read(path))


def read(path: str | Path) -> dict[str, Any]:
    """A spec file's fields, not yet validated (the CLI applies its flags first)."""
    source = Path(path)
    if not source.is_file():
        raise SpecError([FieldError("spec", str(source), "a readable YAML file")])
    try:
        data = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as err:
        raise SpecError([FieldError("spec", str(source), f"valid YAML ({str(err).splitlines()[0]})")]) from None
    if not isinstance(data, dict):
        raise SpecError([FieldError("spec", type(data).__name__, "a mapping of spec fields")])
    if isinstance(data.get("task"), Mapping):  # a declared task's files are relative to the spec's folder
        data["task"] = trainers.resolve_declared_files(data["task"], source.parent)
    return data


SMOKE = {"trials": 4, "concurrency": 2, "confirm_seeds": 0, "budget_cap": 100,
         "asha": {"grace_period": 2, "reduction_factor": 2, "max_steps": 4},
         "train": {"eval_every": 2, "train_examples": 64, "eval_examples": 32, "batch_size": 8, "micro_batch": 8}}


def smoke(data: Mapping[str, Any]) -> dict[str, Any]:
    """The same search, tiny: 4 trials of 4 steps on a few examples (``--smoke``: does everything run?)."""
    points = list(data.get("points_to_evaluate", ()))[:2]
    train = {**dict(data.get("train", {})), **SMOKE["train"]}
    return {**data, **SMOKE, "train": train, "points_to_evaluate": points,
            "name": f"{data.get('name', Spec.name)}-smoke"}


def parse(data: Mapping[str, Any]) -> Spec:
    """Validate a spec given as a mapping; raises ``SpecError`` listing every problem.

    Each given field is checked by its own rule (``spec_field``'s ``choices`` or ``check``); ``plugins`` goes first,
    as plugins register the dimensions and values the other rules check against. Then the rules that relate
    fields (``CROSS_FIELD``) see every field, a failed one at its default."""
    problems: list[FieldError] = []
    unknown = [key for key in data if key not in FIELDS]
    problems += [FieldError(key, data[key], "spec fields " + ", ".join(sorted(FIELDS))) for key in unknown]
    kept: dict[str, Any] = {}
    for declared in sorted(fields(Spec), key=lambda f: f.name != "plugins"):
        if declared.name not in data:
            continue
        try:
            kept[declared.name] = _field_rule(declared)(declared.name, data[declared.name])
        except SpecError as err:
            problems += err.problems
        except FieldError as err:
            problems.append(err)
    complete = {f.name: _with_default(f, kept) for f in fields(Spec)}
    for cross in CROSS_FIELD:
        problems += cross(complete)
    if problems:
        raise SpecError(problems)
    return Spec(**complete)


def _field_rule(declared: Field) -> Rule:
    if not declared.metadata["choices"]:
        return declared.metadata["check"]
    return one_of(lambda: field_choices(declared), many=isinstance(declared.default, tuple))


def _with_default(declared: Field, kept: Mapping[str, Any]) -> Any:
    """A field's checked value, or its default; a mapping keeps the default's keys it leaves out."""
    default = declared.default_factory() if declared.default_factory is not MISSING else declared.default
    if declared.name not in kept:
        return default
    return {**default, **kept[declared.name]} if isinstance(default, Mapping) else kept[declared.name]


def _menus_cover_searched_sites(spec: Mapping[str, Any]) -> list[FieldError]:
    strays = [site for site in spec["menus"] if site not in spec["sites"]]
    return [FieldError("menus", site, "a searched site (" + ", ".join(spec["sites"]) + ")") for site in strays]


def _grid_needs_menus(spec: Mapping[str, Any]) -> list[FieldError]:
    uncovered = [site for site in spec["sites"] if site not in spec["menus"]]
    if spec["sampler"] != "grid" or not uncovered:
        return []
    return [FieldError("sampler", "grid", "a sampler other than 'grid' unless menus name every site (none for "
                                          + ", ".join(uncovered) + ")")]


def _designs_on_the_menus(spec: Mapping[str, Any]) -> list[FieldError]:
    """``designs`` names combinations of menus that cover every site."""
    if not spec["designs"]:
        return []
    uncovered = [site for site in spec["sites"] if site not in spec["menus"]]
    if uncovered:
        return [FieldError("designs", list(spec["designs"]), "[] unless menus name every site (none for "
                                                            + ", ".join(uncovered) + ")")]
    from search.space import Space, combinations, menu_label

    space = Space(spec["sites"], menus=spec["menus"])
    known = [menu_label(design, space) for design in combinations(space)]
    return [FieldError("designs", label, "a combination of the menus: " + ", ".join(known))
            for label in spec["designs"] if label not in known]


def _table_with_tabular(spec: Mapping[str, Any]) -> list[FieldError]:
    table = spec["table"]
    if (table is None) == (spec["trainer"] != "tabular") and (table is None or Path(table).is_file()):
        return []
    return [FieldError("table", table, "the path of a tabular benchmark file with trainer: tabular (and only then)")]


def _task_metric_and_training(spec: Mapping[str, Any]) -> list[FieldError]:
    task = trainers.task_of(spec["task"])
    problems = []
    if spec["asha_metric"] is not None and spec["asha_metric"] not in asha_metrics(task):
        problems.append(FieldError("asha_metric", spec["asha_metric"], "one of " + ", ".join(asha_metrics(task))))
    try:
        trainers.resolve(task, dict(spec["train"]))
    except FieldError as err:
        problems.append(FieldError(f"train.{err.field}", err.value, err.allowed))
    return problems


def _searched_once(spec: Mapping[str, Any]) -> list[FieldError]:
    """A hyper-parameter is searched or fixed, not both (one value, one name); a grid lists the values it tries."""
    both = [FieldError(f"train.{name}", spec["train"][name], f"no value for a hyper-parameter search_train samples "
                                                              f"(to fix {name}, drop it from search_train)")
            for name in spec["search_train"] if name in spec["train"]]
    ranged = [name for name, searched in spec["search_train"].items() if not isinstance(searched, Mapping)]
    if spec["sampler"] == "grid" and ranged:
        both += [FieldError(f"search_train.{name}", list(spec["search_train"][name]), "{values: [...]} with sampler: "
                            "grid (a grid trains every configuration)") for name in ranged]
    return both


CROSS_FIELD: tuple[Callable[[Mapping[str, Any]], list[FieldError]], ...] = (
    _menus_cover_searched_sites, _grid_needs_menus, _designs_on_the_menus, _table_with_tabular,
    _task_metric_and_training, _searched_once)
"""The rules that relate fields; each gets every field (checked, or its default) and returns its problems."""


def asha_metrics(task: trainers.Task) -> tuple[str, ...]:
    """Validation metrics every evaluation reports: the task's own, and its loss (perplexity for generation)."""
    return tuple(dict.fromkeys((task.validation_metric, task.loss_metric)))


def import_plugins(modules: Any) -> None:
    """Import user modules that register dimensions, values, sites or tasks (a list of module names)."""
    if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):
        raise TypeError(f"a list of module names, not {modules!r}")
    for module in modules:
        importlib.import_module(module)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
