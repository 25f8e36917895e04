"""Task data through ``datasets``: local files with the hub's schema first, then the hub itself.

A folder the user names (``--data-dir``, the spec's ``data_dir``) is the only place looked in. Otherwise, first
match wins:

1. ``$PEFT_SEARCH_DATA``;
2. in a source checkout, ``shared/data`` beside the repository (the real samples this project keeps);
3. the user's data folder, ``$XDG_DATA_HOME/peft-search/data`` (by default ``~/.local/share/peft-search/data``);
4. the hub (``datasets.load_dataset``), unless it is off (``HF_HUB_OFFLINE=1`` or ``HF_DATASETS_OFFLINE=1``);
5. the data packaged with ``trainers`` (``PACKAGED``, never a place to put files): the SST-2 splits the embedded
   default search (``search/specs/default.yaml``) uses, already made, so that an installed package runs it offline
   anywhere. Its validation split is the 2,000 sentences carved from the full training file, its test split the
   full dev set, its training split the first 4,000 sentences of the rest (the default's ``train_examples``):
   the same examples as the full data for that search, fewer for one that trains on more.

Where none has the task, one message says what was looked for and how to supply it.

Selection and reporting never share data: a task without public test labels (``Task.carved_validation``)
selects on a fixed seeded slice of its training file and reports on the public dev set; the slice is
removed from training. ``Splits.described`` says where each split's examples come from.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft_space import FieldError
from trainers.tasks import Task

REPOSITORY = Path(__file__).resolve().parents[1]  # a source checkout's root; site-packages when installed
SHARED = REPOSITORY.parent / "shared" / "data"
PACKAGED = Path(__file__).resolve().parent / "packaged_data"  # TASK/SPLIT.tsv of carved tasks: made splits
CARVE_SEED = 0  # fixed: every run of a task selects on the same validation slice


@dataclass(frozen=True)
class Splits:
    """``train``, ``validation`` and ``test`` as ``datasets.Dataset`` objects, where they came from, and what
    each split is (``described["validation"] == "2000 examples carved from train (seed 0)"``)."""

    data: dict[str, Any]
    source: str
    described: dict[str, str]


def candidate_dirs(data_dir: str | Path | None) -> list[Path]:
    """The local folders a task's files are looked for in, in order, before the hub (the module's docstring)."""
    if data_dir is not None:
        return [Path(data_dir)]
    env = os.environ.get("PEFT_SEARCH_DATA")
    checkout = (REPOSITORY / "pyproject.toml").is_file()
    user = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "peft-search" / "data"
    return [*([Path(env)] if env else []), *([SHARED] if checkout else []), user]


def local_files(task: Task, directory: Path) -> dict[str, Path]:
    """Split -> the task's file in ``directory``; the packaged folder holds the splits already made, test included."""
    files = {split: directory / name for split, name in task.files.items()}
    if directory.resolve() == PACKAGED and "train" in files:  # (a hub-only declared task has no files)
        files.setdefault("test", files["train"].with_name("test" + files["train"].suffix))
    return files


def example_field(example: Mapping[str, Any], name: str) -> Any:
    """``example["translation"]["en"]`` for ``"translation.en"``."""
    for part in name.split("."):
        example = example[part]
    return example


def check_data(task: Task, data_dir: str | Path | None = None) -> str:
    """Where the task's data will come from (a local folder, the hub, the packaged data), or ``FieldError`` naming
    what was looked for: local files are found without being read; the hub is tried as a trial would (``datasets``
    caches it)."""
    for directory in candidate_dirs(data_dir):
        if _complete(local_files(task, directory)):
            return str(directory.resolve())
    return _load(task, data_dir)[1]


def load_splits(task: Task, data_dir: str | Path | None = None) -> Splits:
    """The task's train, validation and test splits (validation carved from train where the task says so)."""
    loaded, source = _load(task, data_dir)
    loaded = {split: _columns(task, data, split) for split, data in loaded.items()}
    if Path(source) == PACKAGED:  # ``honest``'s splits of a carved task, made from the full files beforehand
        n = {split: len(data) for split, data in loaded.items()}
        return Splits(loaded, source, {
            "train": f"the first {n['train']} of train minus the validation slice (packaged)",
            "validation": f"{n['validation']} examples carved from train (seed {CARVE_SEED}; packaged)",
            "test": f"the public dev set ({n['test']} examples; packaged)"})
    return honest(task, loaded, source)


def honest(task: Task, loaded: dict[str, Any], source: str) -> Splits:
    """Splits whose validation (selection) and test (reporting) data are disjoint where the data allow it: a GLUE
    task's public dev set reports and a slice of train selects; a split the data lack is carved from train (one
    seeded draw: validation first, then test from the rest)."""
    data, described = dict(loaded), {name: name for name in loaded}
    if task.carved_validation and "validation" in data and "test" not in data:
        data["test"] = data.pop("validation")
        described["test"] = f"the public dev set ({len(data['test'])} examples)"
    carve = [(split, size) for split, size in (("validation", task.carved_validation), ("test", task.carved_test))
             if size and split not in data]
    train, draw = data["train"], random.Random(CARVE_SEED)
    rest = list(range(len(train)))
    for split, size in carve:
        n = size if size >= 1 else max(1, round(size * len(train)))
        if n >= len(rest):
            raise FieldError(f"task.{split}_size", size, f"fewer examples than the {len(rest)} of train left to carve "
                                                         f"from (a number, or a share of train below 1)")
        picked = draw.sample(rest, n)
        rest = sorted(set(rest) - set(picked))
        data[split], described[split] = train.select(picked), f"{n} examples carved from train (seed {CARVE_SEED})"
    if carve:
        data["train"] = train.select(rest)
        slices = " and ".join(split for split, _ in carve) + (" slices" if len(carve) > 1 else " slice")
        described["train"] = f"train minus the {slices} ({len(rest)} examples)"
    if "test" not in data:  # no test split and nothing carved: report on validation, and say so
        data["test"], described["test"] = data["validation"], "validation (the task has no test split)"
    return Splits(data, source, described)


def _load(task: Task, data_dir: str | Path | None) -> tuple[dict[str, Any], str]:
    import datasets

    if task.files and all(Path(name).is_absolute() for name in task.files.values()):  # a declared task's own files
        files = {split: Path(name) for split, name in task.files.items()}
        for split, path in files.items():
            if not path.is_file():
                raise FieldError(f"task.files.{split}", str(path), "an existing file")
        return _load_local(datasets, files), os.path.commonpath([str(path.parent) for path in files.values()])
    dirs = candidate_dirs(data_dir)
    for directory in dirs:
        files = local_files(task, directory)
        if _complete(files):
            return _load_local(datasets, files), str(directory.resolve())
    looked = "; ".join(str(path) for d in dirs for path in local_files(task, d).values())
    how = (f"--data-dir DIR holding {', '.join(task.files.values())} (the hub's schema: fields "
           f"{', '.join(task.inputs + (task.target,))})")
    if data_dir is None and not datasets.config.HF_HUB_OFFLINE:
        try:
            loaded = datasets.load_dataset(*task.hub)
            return {ours: loaded[theirs] for ours, theirs in task.hub_splits.items()}, f"hub:{task.hub[0]}/{task.hub[1]}"
        except Exception as err:  # no network, unknown dataset, ...: say what was tried
            how += f"; the hub failed too ({type(err).__name__}: {str(err)[:120]})"
    else:
        how += "; the hub is off (HF_HUB_OFFLINE=1)" if data_dir is None else ""
    packaged = local_files(task, PACKAGED)
    if data_dir is None and _complete(packaged):
        return _load_local(datasets, packaged), str(PACKAGED)
    raise FieldError("data", task.name, f"files found at {looked}; supply {how}")


# a local file's format by its suffix: the ``datasets`` builder and its options (anything else: JSON lines)
FORMATS = {".jsonl": ("json", {}), ".json": ("json", {}), ".csv": ("csv", {}), ".parquet": ("parquet", {}),
           ".tsv": ("csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE})}


def _complete(files: Mapping[str, Path]) -> bool:
    """Whether a folder holds every file of a task that has files (a hub-only declared task has none)."""
    return bool(files) and all(path.is_file() for path in files.values())


def _load_local(datasets: Any, files: dict[str, Path]) -> dict[str, Any]:
    def one(path: Path) -> Any:
        builder, options = FORMATS.get(path.suffix, FORMATS[".jsonl"])
        return datasets.load_dataset(builder, data_files=str(path), split="train", **options)

    return {split: one(path) for split, path in files.items()}


def label_id(value: Any, labels: Sequence[str]) -> int | None:
    """A label column's value as the id of a label name: the name itself (``str(value)``: a CSV's "1" reads as 1),
    else an id already (an int below ``len(labels)``); ``None`` where it is neither."""
    if str(value) in labels:
        return labels.index(str(value))
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(labels) else None


def column_problems(task: Task, there: Sequence[str], where: str) -> list[FieldError]:
    """The task's columns missing from data (``where``) that holds the columns ``there``, each named with those."""
    wanted = [("task.inputs", name) for name in task.inputs] + [
        ("task.label" if task.is_classification else "task.target", task.target)]
    return [FieldError(field, name, f"a column of {where}: {', '.join(map(str, there))}")
            for field, name in wanted if name.split(".")[0] not in there]


def label_problem(task: Task, values: Sequence[Any], where: str) -> FieldError | None:
    """The values of the label column (in ``where``) that are neither a label name nor a label's id, if any."""
    bad = sorted({str(value) for value in values if label_id(value, task.labels) is None})
    if not bad:
        return None
    return FieldError("task.labels", bad[:5], f"labels of {where}'s column {task.target!r} among the label names "
                                              f"{', '.join(task.labels)} (or their ids 0 to {len(task.labels) - 1})")


def _columns(task: Task, data: Any, split: str) -> Any:
    """A split with the task's columns checked, text columns as text (a CSV column of numbers reads as numbers) and
    labels as ids (``Task.labels``)."""
    from datasets import Value

    if problems := column_problems(task, data.column_names, f"the {split} data"):
        raise problems[0]
    for name in (*task.inputs, *(() if task.is_classification else (task.target,))):
        if name in data.features and getattr(data.features[name], "dtype", "string") not in ("string", "large_string"):
            data = data.cast_column(name, Value("string"))
    if not task.labels:
        return data
    if problem := label_problem(task, data[task.target], f"the {split} data"):
        raise problem
    ids = [label_id(value, task.labels) for value in data[task.target]]
    return data.remove_columns(task.target).add_column(task.target, ids)
