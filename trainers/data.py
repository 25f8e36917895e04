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
from collections.abc import Mapping
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
    if directory.resolve() == PACKAGED:
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
        if all(path.is_file() for path in local_files(task, directory).values()):
            return str(directory.resolve())
    return _load(task, data_dir)[1]


def load_splits(task: Task, data_dir: str | Path | None = None) -> Splits:
    """The task's train, validation and test splits (validation carved from train where the task says so)."""
    loaded, source = _load(task, data_dir)
    if Path(source) == PACKAGED:  # ``honest``'s splits of a carved task, made from the full files beforehand
        n = {split: len(data) for split, data in loaded.items()}
        return Splits(loaded, source, {
            "train": f"the first {n['train']} of train minus the validation slice (packaged)",
            "validation": f"{n['validation']} examples carved from train (seed {CARVE_SEED}; packaged)",
            "test": f"the public dev set ({n['test']} examples; packaged)"})
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
        files = local_files(task, directory)
        if all(path.is_file() for path in files.values()):
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
    if data_dir is None and all(path.is_file() for path in packaged.values()):
        return _load_local(datasets, packaged), str(PACKAGED)
    raise FieldError("data", task.name, f"files found at {looked}; supply {how}")


def _load_local(datasets: Any, files: dict[str, Path]) -> dict[str, Any]:
    suffixes = {path.suffix for path in files.values()}
    if suffixes == {".tsv"}:
        loaded = datasets.load_dataset("csv", data_files={k: str(v) for k, v in files.items()}, delimiter="\t",
                                       quoting=csv.QUOTE_NONE)
    else:
        loaded = datasets.load_dataset("json", data_files={k: str(v) for k, v in files.items()})
    return dict(loaded)
