"""Tasks declared as data (a spec's ``task:`` mapping, or ``peft-search train --task FILE.yaml``), no Python::

    kind: classification
    files: {train: reviews.csv, test: reviews_test.csv}   # or hub: NAME, hub_config: ..., hub_splits: {...}
    inputs: [review]
    label: stars
    labels: [bad, good]
    metric: macro_f1

Each field is declared once in ``Declaration`` (its default, its help and its own check); ``parse_declaration``
checks every field and the rules that relate them, reads local files to check that the named columns exist and the
labels are among the label names, and reports every problem at once, one ``FieldError`` each, naming ``task.FIELD``.
``register_declared`` turns a declaration into a ``trainers.Task`` (once per process: a Ray worker registers the one
its trial carries). Records keep the declaration (``Declaration.to_dict``) and ``data_hashes``, so that a later
process trains the same thing and ``changed_data`` says which file has changed since.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple, get_args

from peft_space import FieldError, Rule, rule
from trainers.data import FORMATS, column_problems, label_problem
from trainers.metrics import accuracy, bleu, exact_match, macro_f1, rouge
from trainers.tasks import CLASSIFICATION, GENERATION, TASKS, Metric, Task, TaskKind, register_task

SPLITS = ("train", "validation", "test")
KINDS = get_args(TaskKind)
PREFIX = "task"  # errors name a field as task.FIELD, as a spec holds it


def _scored_only(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Perplexity needs no generated text: every evaluation reports it from the scores of the targets."""
    return {}


class Selection(NamedTuple):
    """A metric a declaration may select on: what computes it, for which kind of task, and its direction."""

    compute: Metric
    kind: str
    higher_is_better: bool


METRICS = {"accuracy": Selection(accuracy, "classification", True),
           "macro_f1": Selection(macro_f1, "classification", True),
           "exact_match": Selection(exact_match, "generation", True),
           "rouge1": Selection(rouge, "generation", True), "rouge2": Selection(rouge, "generation", True),
           "rougeL": Selection(rouge, "generation", True), "bleu": Selection(bleu, "generation", True),
           "perplexity": Selection(_scored_only, "generation", False)}
DEFAULT_METRIC = {"classification": "accuracy", "generation": "rougeL"}


class DeclarationError(ValueError):
    """Every problem of a declaration, one ``FieldError`` each."""

    def __init__(self, problems: list[FieldError]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


def _splits(allowed: str) -> Rule:
    """A mapping split -> text, its splits among train, validation and test."""
    return rule(lambda v: isinstance(v, Mapping) and set(v) <= set(SPLITS)
                  and all(isinstance(x, str) and x for x in v.values()), allowed, dict)


def _size(value: Any) -> bool:
    """A count of examples (an int ≥ 1) or a share of train (a number in (0, 1))."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and ((isinstance(value, int) and value >= 1) or 0 < value < 1)


TEXT = rule(lambda v: isinstance(v, str), "a string")
TEXT_OR_NULL = rule(lambda v: v is None or (isinstance(v, str) and v != ""), "a non-empty string or null")
NAMES = rule(lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) and x for x in v)
               and len(set(v)) == len(v), "a list of distinct non-empty names", tuple)
SIZE = rule(_size, "a number of examples (≥ 1) or a share of train in (0, 1)")


def declared(default: Any, help: str, check: Rule, *, factory: Callable[[], Any] | None = None) -> Any:
    """One declaration field, declared once: its default, its help (``peft-search fields``, the README) and its
    own check."""
    metadata = {"help": help, "check": check}
    return field(default_factory=factory, metadata=metadata) if factory else field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Declaration:
    kind: str = declared("", "classification (a label per input) or generation (a target text per input)",
                         rule(lambda v: v in KINDS, " or ".join(KINDS)))
    name: str = declared("", "the task's name in records; default: declared-<hash of the declaration>", rule(
        lambda v: v == "" or (isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", v) is not None),
        "1 to 100 letters, digits, '_', '-' or '.', starting with a letter or digit"))
    files: Mapping[str, str] = declared(
        None, "local data per split, {train: FILE, validation: FILE, test: FILE} (train required): JSON lines, CSV, "
              "TSV or Parquet by suffix; a relative path starts from the YAML file's folder",
        _splits("a mapping split (train, validation, test) -> file"), factory=dict)
    hub: str | None = declared(None, "a hub data set instead of files (datasets.load_dataset's path)", TEXT_OR_NULL)
    hub_config: str | None = declared(None, "the hub data set's configuration name", TEXT_OR_NULL)
    hub_splits: Mapping[str, str] = declared(
        None, "our split (train, validation, test) -> the hub data set's split name",
        _splits("a mapping split (train, validation, test) -> the hub's split name"),
        factory=lambda: {"train": "train"})
    inputs: tuple[str, ...] = declared((), "the input columns (classification: one, or a pair)", NAMES)
    label: str = declared("", "classification: the label column (holding label names, or their ids)", TEXT)
    labels: tuple[str, ...] = declared((), "classification: the label names; a label's id is its position", NAMES)
    target: str = declared("", "generation: the target text column", TEXT)
    prompt: str = declared("", "generation: a format string over the input columns ('Summarise: {document}\\n"
                               "Summary:'); empty: the inputs joined by a blank line", TEXT)
    chat_template: bool = declared(False, "generation: the prompt as the user turn of the tokenizer's chat template, "
                                          "the target as the assistant turn",
                                   rule(lambda v: isinstance(v, bool), "true or false"))
    metric: str = declared("", "what the search selects on (its direction follows): " + ", ".join(
        f"{name} ({s.kind})" for name, s in METRICS.items()) + "; default: " + ", ".join(
        f"{metric} ({kind})" for kind, metric in DEFAULT_METRIC.items()),
        rule(lambda v: v == "" or v in METRICS, "one of " + ", ".join(METRICS)))
    validation_size: float = declared(0.1, "where the data have no validation split: examples carved from train "
                                           "(seeded; a number, or a share of train below 1)", SIZE)
    test_size: float = declared(0.1, "where the data have no test split: examples carved from train after the "
                                     "validation slice (selection and reporting never share data)", SIZE)
    help: str = declared("", "a line saying what the task is", TEXT)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, every field; ``parse_declaration(d.to_dict()) == d``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits the data hold (the others are carved from train)."""
        return tuple(self.files or self.hub_splits)


FIELDS = {f.name: f for f in fields(Declaration)}


def declaration_fields() -> list[str]:
    """Each field as ``task.FIELD: default  # help``, as ``peft-search fields`` lists a spec's fields."""
    return [f"  {PREFIX}.{f.name}: {json.dumps(_default(f))}  # {f.metadata['help']}" for f in fields(Declaration)]


def _default(declared_field: Any) -> Any:
    if declared_field.default_factory is not MISSING:
        return declared_field.default_factory()
    return list(declared_field.default) if isinstance(declared_field.default, tuple) else declared_field.default


def resolve_declared_files(data: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """The declaration with its relative file paths made absolute from ``folder`` (the YAML file's)."""
    files = data.get("files")
    if not isinstance(files, Mapping):
        return dict(data)
    return {**data, "files": {split: str((folder / path).resolve()) if isinstance(path, str) and path else path
                              for split, path in files.items()}}


def load_declaration(path: str | Path) -> dict[str, Any]:
    """A YAML file's declaration (the file itself, or its ``task:`` mapping: a spec works too), checked, as plain
    data; relative file paths start from the file's folder."""
    import yaml

    source = Path(path)
    try:
        data = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as err:
        why = str(err).splitlines()[0]
        raise FieldError(PREFIX, str(source), f"a readable YAML file declaring a task ({why})") from None
    if isinstance(data, Mapping) and isinstance(data.get(PREFIX), Mapping):
        data = data[PREFIX]
    if not isinstance(data, Mapping):
        raise FieldError(PREFIX, str(source), "a YAML mapping declaring a task (`peft-search fields`: task.*)")
    return parse_declaration(resolve_declared_files(data, source.parent)).to_dict()


def parse_declaration(data: Mapping[str, Any]) -> Declaration:
    """A checked declaration, its name derived where not given; ``DeclarationError`` lists every problem."""
    unknown = [FieldError(f"{PREFIX}.{key}", key, "declaration fields " + ", ".join(FIELDS))
               for key in data if key not in FIELDS]
    kept, problems = {}, []
    for name, value in data.items():
        if name in FIELDS:
            try:
                kept[name] = FIELDS[name].metadata["check"](f"{PREFIX}.{name}", value)
            except FieldError as err:
                problems.append(err)
    if "kind" not in data:
        problems.append(FieldError(f"{PREFIX}.kind", None, " or ".join(KINDS)))
    if problems:  # the relations below assume each field given passed its own check
        raise DeclarationError(unknown + problems)
    kept["files"] = {split: str(Path(path).resolve()) for split, path in kept.get("files", {}).items()}
    declaration = Declaration(**{**kept, "metric": kept.get("metric") or DEFAULT_METRIC[kept["kind"]]})
    if not declaration.name:
        declaration = Declaration(**{**asdict(declaration), "name": "declared-" + _digest(declaration)})
    problems = unknown + _relations(declaration)
    if declaration.files and all(Path(path).suffix in FORMATS for path in declaration.files.values()):
        problems += _file_problems(declaration)
    if problems:
        raise DeclarationError(problems)
    return declaration


def _digest(declaration: Declaration) -> str:
    return hashlib.sha256(json.dumps(declaration.to_dict(), sort_keys=True).encode()).hexdigest()[:10]


def _relations(d: Declaration) -> list[FieldError]:
    """The rules that relate fields: one data source with a train split, the kind's own columns, a metric of the
    kind, a prompt over the inputs."""
    problems, kind = [], d.kind
    if bool(d.files) == bool(d.hub):
        problems.append(FieldError(f"{PREFIX}.files", d.files or None, "local files per split, or a hub data set "
                                                                       "(hub: NAME), one of the two"))
    elif "train" not in d.splits:
        where = "files" if d.files else "hub_splits"
        problems.append(FieldError(f"{PREFIX}.{where}", dict(d.files or d.hub_splits), "a mapping with a train split"))
    unknown = [path for path in d.files.values() if Path(path).suffix not in FORMATS]
    problems += [FieldError(f"{PREFIX}.files", path, "files ending in " + ", ".join(FORMATS)) for path in unknown]
    own = {"classification": ("label", "labels"), "generation": ("target",)}[kind]
    problems += [FieldError(f"{PREFIX}.{name}", getattr(d, name), f"a value for a {kind} task")
                 for name in own if not getattr(d, name)]
    foreign = {"classification": ("target", "prompt", "chat_template"), "generation": ("label", "labels")}[kind]
    problems += [FieldError(f"{PREFIX}.{name}", getattr(d, name), f"nothing for a {kind} task")
                 for name in foreign if getattr(d, name)]
    if not d.inputs:
        problems.append(FieldError(f"{PREFIX}.inputs", [], "a list of input columns"))
    elif kind == "classification" and len(d.inputs) > 2:
        problems.append(FieldError(f"{PREFIX}.inputs", list(d.inputs), "one input column, or a pair"))
    if METRICS[d.metric].kind != kind:
        problems.append(FieldError(f"{PREFIX}.metric", d.metric, f"a metric of a {kind} task: " + ", ".join(
            name for name, s in METRICS.items() if s.kind == kind)))
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(d.prompt) if name is not None}
    except ValueError as err:
        return [*problems, FieldError(f"{PREFIX}.prompt", d.prompt, f"a str.format string ({err})")]
    problems += [FieldError(f"{PREFIX}.prompt", "{" + name + "}", "fields among the inputs: " + ", ".join(
        "{" + i + "}" for i in d.inputs)) for name in sorted(used) if re.split(r"[.\[]", name)[0] not in d.inputs]
    return problems


def _file_problems(d: Declaration) -> list[FieldError]:
    """Each local file is read: the columns named exist, the labels are among the label names (or their ids), as
    ``trainers.data`` checks the data it loads (a hub data set's there)."""
    problems, task = [], to_task(d)
    for split, path in d.files.items():
        try:
            frame = _read(Path(path))
        except FileNotFoundError:
            problems.append(FieldError(f"{PREFIX}.files.{split}", path, "an existing file"))
            continue
        except Exception as err:  # a malformed file: pandas' own words
            problems.append(FieldError(f"{PREFIX}.files.{split}", path, f"a readable {Path(path).suffix} file "
                                                                        f"({type(err).__name__}: {str(err)[:120]})"))
            continue
        problems += column_problems(task, list(frame.columns), path)
        if d.label in frame.columns and (problem := label_problem(task, frame[d.label].tolist(), path)):
            problems.append(problem)
    return problems


def _read(path: Path) -> Any:
    """A local file as ``datasets`` will read it (``trainers.data.FORMATS``), through pandas: no cache written."""
    import pandas

    builder, options = FORMATS[path.suffix]
    if builder == "parquet":
        return pandas.read_parquet(path)
    if builder == "json":
        return pandas.read_json(path, lines=True)
    return pandas.read_csv(path, sep=options.get("delimiter", ","), quoting=options.get("quoting", csv.QUOTE_MINIMAL))


def to_task(d: Declaration) -> Task:
    """The ``trainers.Task`` a checked declaration describes."""
    selection = METRICS[d.metric]
    return Task(d.name, d.kind, (d.hub or "", d.hub_config), dict(d.hub_splits) if d.hub else {}, dict(d.files),
                d.inputs, d.label or d.target, selection.compute, d.metric, selection.higher_is_better,
                CLASSIFICATION if d.kind == "classification" else GENERATION, num_labels=len(d.labels),
                help=d.help or f"declared {d.kind} task", labels=d.labels, prompt=d.prompt,
                chat_template=d.chat_template,
                carved_validation=0 if "validation" in d.splits else d.validation_size,
                carved_test=0 if "test" in d.splits else d.test_size)


def register_declared(data: Mapping[str, Any]) -> Task:
    """The task a declaration (plain data) describes, registered once per process; a different task already
    registered under its name is an error naming ``task.name``."""
    return _register(json.dumps(dict(data), sort_keys=True))


@functools.cache
def _register(text: str) -> Task:
    task = to_task(parse_declaration(json.loads(text)))
    if task.name in TASKS:
        if TASKS[task.name] != task:
            raise FieldError(f"{PREFIX}.name", task.name, "a name no other task has (" + ", ".join(TASKS) + ")")
        return TASKS[task.name]
    return register_task(task)


def task_of(value: str | Mapping[str, Any]) -> Task:
    """A registered task by name, or the task a declaration describes (registered)."""
    return register_declared(value) if isinstance(value, Mapping) else TASKS[value]


def data_hashes(data: Mapping[str, Any]) -> dict[str, str]:
    """Split -> the sha256 of its local file (a hub data set: none)."""
    return {split: hashlib.sha256(Path(path).read_bytes()).hexdigest() for split, path in data.get("files", {}).items()}


def changed_data(data: Mapping[str, Any], recorded: Mapping[str, str]) -> list[FieldError]:
    """The local files whose content is not what a record hashed (or that are gone), one error each."""
    problems = []
    for split, digest in recorded.items():
        path = Path(data["files"][split])
        now = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "gone"
        if now != digest:
            problems.append(FieldError(f"{PREFIX}.files.{split}", str(path), f"the file the run trained on (sha256 "
                                                                             f"{digest[:12]}…; now {now[:12]}…)"))
    return problems
