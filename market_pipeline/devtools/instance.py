"""Opening the Dagster instance of `DAGSTER_HOME` safely from many processes at once.

Two first runs on a brand-new DAGSTER_HOME would both create Dagster's SQLite schema and one fails
("table secondary_indexes already exists"). The first open of the instance, its storage schema and
the `polygon_api` pool therefore happen under an exclusive file lock in DAGSTER_HOME: the second
process waits for the first, then finds everything created. A failure here is reported as Dagster's
storage failing, naming DAGSTER_HOME, never as the warehouse.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from market_pipeline import settings

LOCK_NAME = ".market_pipeline.instance.lock"


class DagsterStorageError(RuntimeError):
    """Dagster's own storage (DAGSTER_HOME / dagster.yaml) could not be opened or initialised."""


@contextlib.contextmanager
def home_lock(home: Path) -> Iterator[None]:
    """An exclusive lock on DAGSTER_HOME (blocks until the other holder is done)."""
    with open(home / LOCK_NAME, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def open_instance(init=None):
    """DagsterInstance.get() with its storages initialised once, under the DAGSTER_HOME lock;
    `init(instance)` runs under the lock too (e.g. creating the polygon_api pool)."""
    raw = os.environ.get("DAGSTER_HOME")
    home = Path(raw) if raw else settings.home_dir() / "dagster"
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DagsterStorageError(f"cannot create DAGSTER_HOME {home} ({exc.strerror}); set DAGSTER_HOME to a writable folder") from None
    from dagster import DagsterInstance

    with home_lock(home):
        settings.ensure_dagster_home()
        try:
            instance = DagsterInstance.get()
            # touch every storage so its schema exists before the lock is released
            instance.get_runs(limit=1)
            instance.event_log_storage.get_concurrency_keys()
            instance.all_instigator_state()
            if init is not None:
                init(instance)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise DagsterStorageError(
                f"Dagster's own storage in DAGSTER_HOME={os.environ.get('DAGSTER_HOME')} failed ({type(exc).__name__}: "
                f"{reason}); this is Dagster's storage (dagster.yaml), not the warehouse (MARKET_PIPELINE_DB_URL)"
            ) from exc
    return instance
