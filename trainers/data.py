"""Task data through ``datasets``: local files with the hub's schema first, then the hub itself.

Local directories are searched in order: the one the user names, ``$PEFT_SEARCH_DATA``, and the
``shared/data`` folder beside the repository (the real samples this project ships). A task found in
none of them is loaded from the hub unless the hub is off (``HF_DATASETS_OFFLINE=1``); if that fails
too, one message says what was looked for and how to supply it.

Selection and reporting never share data: a task without public test labels (``Task.carved_validation``)
selects on a fixed seeded slice of its training file and reports on the public dev set; the slice is
removed from training. ``Splits.described`` says where each split's examples come from.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft_space import FieldError
from trainers.tasks import Task

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CARVE_SEED = 0  # fixed: every run of a task selects on the same validation slice


@dataclass(frozen=True)
class Splits:
    """``train``, ``validation`` and ``test`` as ``datasets.Dataset`` objects, where they came from, and what
    each split is (``described["validation"] == "2000 examples carved from train (seed 0)"``)."""

    data: dict[str, Any]
    source: str
    described: dict[str, str]


def candidate_dirs(data_dir: str | Path | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir)]
    env = os.environ.get("PEFT_SEARCH_DATA")
    return [Path(env)] if env else [SHARED]


def example_field(example: Mapping[str, Any], name: str) -> Any:
    """``example["translation"]["en"]`` for ``"translation.en"``."""
    for part in name.split("."):
        example = example[part]
    return example


def check_data(task: Task, data_dir: str | Path | None = None) -> str:
    """Where the task's data will come from (a local folder, or the hub), or ``FieldError`` naming what was looked
    for: local files are found without being read; the hub is tried as a trial would (``datasets`` caches it)."""
    for directory in candidate_dirs(data_dir):
        if all((directory / name).is_file() for name in task.files.values()):
            return str(directory.resolve())
    return _load(task, data_dir)[1]


def load_splits(task: Task, data_dir: str | Path | None = None) -> Splits:
    """The task's train, validation and test splits (validation carved from train where the task says so)."""
    loaded, source = _load(task, data_dir)
    return honest(task, loaded, source)


def honest(task: Task, loaded: dict[str, Any], source: str) -> Splits:
    """Splits whose validation (selection) and test (reporting) data are disjoint where the data allow it."""
    if task.carved_validation and "test" not in loaded:
        train, n = loaded["train"], task.carved_validation
        picked = random.Random(CARVE_SEED).sample(range(len(train)), n)
        rest = sorted(set(range(len(train))) - set(picked))
        data = {"train": train.select(rest), "validation": train.select(picked), "test": loaded["validation"]}
        return Splits(data, source, {"train": f"train minus the validation slice ({len(rest)} examples)",
                                     "validation": f"{n} examples carved from train (seed {CARVE_SEED})",
                                     "test": f"the public dev set ({len(loaded['validation'])} examples)"})
    if "test" in loaded:
        return Splits(loaded, source, {name: name for name in ("train", "validation", "test")})
    # no test split and nothing carved: report on validation, and say so
    return Splits({**loaded, "test": loaded["validation"]}, source,
                  {"train": "train", "validation": "validation", "test": "validation (the task has no test split)"})


def _load(task: Task, data_dir: str | Path | None) -> tuple[dict[str, Any], str]:
    import datasets

    dirs = candidate_dirs(data_dir)
    for directory in dirs:
        files = {split: directory / name for split, name in task.files.items()}
        if all(path.is_file() for path in files.values()):
            return _load_local(datasets, files), str(directory.resolve())
    looked = "; ".join(str(d / name) for d in dirs for name in task.files.values())
    how = (f"--data-dir DIR holding {', '.join(task.files.values())} (the hub's schema: fields "
           f"{', '.join(task.inputs + (task.target,))})")
    if data_dir is None and os.environ.get("HF_DATASETS_OFFLINE") != "1":
        try:
            loaded = datasets.load_dataset(*task.hub)
            return {ours: loaded[theirs] for ours, theirs in task.hub_splits.items()}, f"hub:{task.hub[0]}/{task.hub[1]}"
        except Exception as err:  # no network, unknown dataset, ...: say what was tried
            how += f"; the hub failed too ({type(err).__name__}: {str(err)[:120]})"
    else:
        how += "; the hub is off (HF_DATASETS_OFFLINE=1)" if data_dir is None else ""
    raise FieldError("data", task.name, f"files found at {looked}; supply {how}")


def _load_local(datasets: Any, files: dict[str, Path]) -> dict[str, Any]:
    suffixes = {path.suffix for path in files.values()}
    if suffixes == {".tsv"}:
        loaded = datasets.load_dataset("csv", data_files={k: str(v) for k, v in files.items()}, delimiter="\t",
                                       quoting=csv.QUOTE_NONE)
    else:
        loaded = datasets.load_dataset("json", data_files={k: str(v) for k, v in files.items()})
    return dict(loaded)
