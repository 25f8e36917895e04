"""A journalled, retrying writer: record operations applied in order on one background thread.

The store's client is not this module's business: it applies whatever ``apply`` does to an operation (a JSON-able
mapping). ``search.records`` uses it for MLflow, so that Ray Tune's loop never waits on the tracking store and a
driver killed with operations still queued loses none."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Writer:
    """Applies record operations in order on one background thread, so the Tune loop never waits on the store.

    Every operation is first appended to a journal file (write-ahead), so a driver killed with operations still
    queued loses none: the next run or resume of the search replays the journal first. Replaying is harmless
    because every operation is idempotent (finished runs are skipped, metrics carry the trial's own timestamp and
    MLflow drops exact duplicates, params are write-once). An operation that fails because the store is
    unreachable (a tracking server restarting, SQLite locked by another search) is retried with back-off until
    the store has been away for ``patience`` seconds, also when the search is ending; past that, each later
    operation is tried once (a store gone for good must not hold the driver for ``patience`` per record). The
    journal is removed once everything in it has been written; what failed (or was pending when the user pressed
    Ctrl-C) keeps it for the next run."""

    def __init__(self, apply: Callable[[dict[str, Any]], None], journal: Path, patience: float = 600.0) -> None:
        self.apply, self.journal, self.patience = apply, journal, patience
        self.closing, self.kept = False, False
        self.away_since: float | None = None  # when the store stopped answering
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        if journal.exists():  # left over from a search that was killed or ended while the store was down
            for line in journal.read_text().splitlines():
                self.queue.put(json.loads(line))
        self.file = open(journal, "a")
        self.thread = threading.Thread(target=self._drain, name="record-writer", daemon=True)
        self.thread.start()

    def submit(self, operation: dict[str, Any]) -> None:
        self.file.write(json.dumps(operation, default=str) + "\n")
        self.file.flush()  # in the OS's hands before the driver can be killed
        self.queue.put(operation)

    def close(self) -> None:
        """Write what is queued, waiting for an unreachable store up to ``patience``; on Ctrl-C, keep the rest."""
        self.queue.put(None)
        try:
            while self.thread.is_alive():
                self.thread.join(timeout=1.0)
        except KeyboardInterrupt:
            self.closing = True
            self.thread.join()
        self.file.close()
        if not self.kept:
            self.journal.unlink(missing_ok=True)

    def _drain(self) -> None:
        while (operation := self.queue.get()) is not None:
            if self.closing:
                self.kept = True
            else:
                self._write(operation)

    def _write(self, operation: dict[str, Any]) -> None:
        delay = 0.5
        while True:
            try:
                self.apply(operation)
                self.away_since = None
                return
            except Exception as err:
                self.away_since = self.away_since or time.monotonic()
                if not _transient(err) or self.closing or time.monotonic() - self.away_since > self.patience:
                    log.error("the tracking store refused a record (%s); kept in %s for the next run or resume", err, self.journal)
                    self.kept = True
                    return
                log.warning("the tracking store is unreachable (%s); retrying in %.0f s", str(err).splitlines()[0][:200], delay)
                time.sleep(delay)
                delay = min(2 * delay, 15.0)


def _transient(err: Exception) -> bool:
    """The store is away or busy (worth waiting for), as opposed to a record it will never take."""
    text = f"{type(err).__name__}: {err}".lower()
    signs = ("connection", "max retries", "refused", "database is locked", "temporarily unavailable", "timed out",
             "503", "502", "operationalerror")
    return isinstance(err, (ConnectionError, TimeoutError)) or any(sign in text for sign in signs)
