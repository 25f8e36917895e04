"""The data an installed package finds (issue 26): the default folders (never one inside site-packages), the
embedded default's SST-2 splits packaged with ``trainers`` and equal to those made from the full files, and a wheel
installed into a fresh venv running ``peft-search train`` and ``peft-search run --smoke`` offline in an empty folder."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peft_space import FieldError
from search import spec as specs
from trainers import data
from trainers.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
SST2 = TASKS["sst2"]


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """``trainers.data`` as an installed package sees it: no checkout around it, no $PEFT_SEARCH_DATA, an empty user
    folder, the hub off (conftest)."""
    monkeypatch.setattr(data, "REPOSITORY", tmp_path / "site-packages")
    monkeypatch.delenv("PEFT_SEARCH_DATA", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user"))
    return tmp_path


def test_default_folders_in_order(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user"))
    monkeypatch.delenv("PEFT_SEARCH_DATA", raising=False)
    user = tmp_path / "user" / "peft-search" / "data"
    assert data.candidate_dirs(None) == [data.SHARED, user]  # a checkout: its shared/data first
    monkeypatch.setenv("PEFT_SEARCH_DATA", str(tmp_path / "mine"))
    assert data.candidate_dirs(None) == [tmp_path / "mine", data.SHARED, user]
    assert data.candidate_dirs(tmp_path / "named") == [tmp_path / "named"]  # a named folder is the only one


def test_an_installed_package_looks_in_no_folder_of_site_packages(installed):
    assert data.candidate_dirs(None) == [installed / "user" / "peft-search" / "data"]
    with pytest.raises(FieldError) as err:  # no task files packaged: the message names the user's folder
        data.check_data(TASKS["xsum"])
    message = str(err.value)
    assert str(installed / "user" / "peft-search" / "data" / "xsum" / "train.jsonl") in message
    assert "site-packages" not in message and "HF_HUB_OFFLINE=1" in message


def test_the_packaged_splits_are_found_last_and_by_their_recorded_folder(installed, monkeypatch):
    assert data.check_data(SST2) == str(data.PACKAGED)
    splits = data.load_splits(SST2)
    assert splits.source == str(data.PACKAGED) and "packaged" in splits.described["validation"]
    assert data.load_splits(SST2, splits.source).data["test"][:] == splits.data["test"][:]  # reproduce's data_dir
    user = installed / "user" / "peft-search" / "data" / "sst2"  # a user's own files win over the packaged ones
    user.mkdir(parents=True)
    for name in ("train.tsv", "validation.tsv"):
        shutil.copy(data.PACKAGED / "sst2" / name, user / name)
    assert data.check_data(SST2) == str(user.parent)
    with pytest.raises(FieldError):  # a named folder without the files is refused, not replaced by the packaged ones
        data.check_data(SST2, installed / "empty")


def test_the_packaged_splits_are_the_default_searchs_examples_of_the_full_files():
    """The validation and test splits whole, the training split as far as the embedded default trains."""
    full, packaged = data.load_splits(SST2, data.SHARED), data.load_splits(SST2, data.PACKAGED)
    default = specs.load(specs.DEFAULT)
    assert default.task == "sst2" and 0 < default.train["train_examples"] <= len(packaged.data["train"])
    assert 0 < default.train["eval_examples"] <= len(packaged.data["validation"])
    n = len(packaged.data["train"])
    assert packaged.data["train"][:] == full.data["train"][:n]
    for split in ("validation", "test"):
        assert packaged.data[split][:] == full.data[split][:]


@pytest.mark.slow  # builds and installs a wheel, then a search: 104-200 s on 2 busy cores
def test_an_installed_wheel_trains_and_searches_offline_in_an_empty_folder(tmp_path):
    source = tmp_path / "source"  # a copy, so that building leaves nothing (build/, egg-info) in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("peft_space", "trainers", "search", "dashboards", "peft_search"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", source],
                   check=True, capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True,
                          capture_output=True, text=True).stdout.strip()
    # this venv's dependencies: a path line, whose folder's .pth files (the checkout's editable finder) are not run
    deps = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "dependencies.pth").write_text(deps + "\n")
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "-q", *(tmp_path / "dist").glob("*.whl")],
                   check=True, capture_output=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PEFT_SEARCH_DATA", "HF_DATASETS_OFFLINE", "RAY_ADDRESS",
                                                            "PYTHONPATH")}
    env |= {"HF_HUB_OFFLINE": "1", "XDG_DATA_HOME": str(tmp_path / "user")}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([venv / "bin" / "peft-search", *args], cwd=empty, env=env, capture_output=True,
                              text=True, timeout=600)

    probe = "import sys, trainers; print(trainers.__file__); print([m for m in sys.modules if 'editable' in m])"
    where, finders = subprocess.run([python, "-c", probe], cwd=empty, env=env, check=True, capture_output=True,
                                    text=True).stdout.splitlines()
    assert where.startswith(site) and finders == "[]"  # the wheel, not the checkout
    trained = cli("train", "--design", "lora_attn", "--steps", "2", "--eval-every", "2", "--no-progress",
                  "--set", "train_examples=16", "--set", "eval_examples=16", "--set", "batch_size=8",
                  "--set", "micro_batch=8")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "packaged" in trained.stdout  # the splits say where they came from
    searched = cli("run", "--smoke")
    assert searched.returncode == 0, searched.stdout[-3000:] + searched.stderr[-3000:]
    counts = next(line for line in searched.stdout.splitlines() if line.startswith("trials: "))
    assert "completed" in counts and "failed" not in counts, counts  # ASHA may stop some: none failed
    assert "Pareto front" in searched.stdout
