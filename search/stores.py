"""A search's two stores, Optuna's study storage and MLflow's tracking store: opening them, and creating their
schemas once.

Two searches starting at the same time on one store must not both run its schema migrations (Optuna's and MLflow's
both fail on PostgreSQL when they race), so ``create_stores`` creates each under a lock: a file lock beside a
SQLite database, the server's advisory lock on PostgreSQL; journal files and MLflow servers have no schema to
create."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import optuna

SCHEMA_LOCK = int.from_bytes(b"peft-sch")  # PostgreSQL advisory lock key (a bigint) of schema creation
JOURNAL = "journal:///"


def open_study(name: str, storage: str | optuna.storages.BaseStorage, mode: str,
               sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """The search's study (created on first use): maximise or minimise the task metric, minimise the budget."""
    storage = open_storage(storage)
    try:  # load first: create_study on an existing study logs "Using an existing study" on every resume and read
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:  # a new study (load_if_exists: another driver may create it at the same moment)
        directions = ["maximize" if mode == "max" else "minimize", "minimize"]
        return optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=directions,
                                   load_if_exists=True)


def open_storage(url: str | optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: SQLAlchemy URLs (``sqlite:///``, ``postgresql://``) through Optuna's
    ``get_storage``, and ``journal:///path.log`` as Optuna's journal file storage (append-only, file-locked: several
    drivers may share it, and it is cheaper per trial than SQLite). A storage object (an in-memory one for replays
    that need no resume) is used as it is.

    One storage per URL in a process: a driver opens its study several times (the target, the searcher, the
    summary), and each SQLAlchemy storage keeps its own connection pool until it is garbage collected."""
    if isinstance(url, optuna.storages.BaseStorage):
        return url
    return _storage(url)


@functools.cache
def _storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith(JOURNAL):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix(JOURNAL))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    return optuna.storages.get_storage(url)


def create_stores(storage: str, tracking_uri: str) -> None:
    """Create both stores' schemas, each under its lock (the Optuna storage made here is the one this process
    keeps for the URL)."""
    from mlflow.tracking import MlflowClient

    schemas = {storage: open_storage, tracking_uri: lambda url: MlflowClient(url).search_experiments(max_results=1)}
    for url, create in schemas.items():
        if (lock := schema_lock(url)) is not None:
            with lock:
                create(url)


def schema_lock(url: str) -> contextlib.AbstractContextManager | None:
    """The lock a process holds while it creates a store's schema; None where there is no schema to create
    (journal files, MLflow servers)."""
    for prefix, lock in (("sqlite:///", _sqlite_lock), ("postgresql", _postgres_lock)):
        if url.startswith(prefix):
            return lock(url)
    return None


@contextlib.contextmanager
def _sqlite_lock(url: str) -> Iterator[None]:
    """A file lock next to the database. Write-ahead-log mode lets ``peft-search pareto`` or the MLflow UI read
    while a search writes."""
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA journal_mode=WAL")
        yield


@contextlib.contextmanager
def _postgres_lock(url: str) -> Iterator[None]:
    """The server's advisory lock of this database, held on a connection of its own (released if we die)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK})
            yield
    finally:
        engine.dispose()
