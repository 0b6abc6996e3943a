"""The Dagster home of the CLI, `make dev` and `market-pipeline daemon`, and opening its instance
safely from many processes at once.

**Which home.** `DAGSTER_HOME` when it is set: an absolute path to a folder that exists or can be
created, and that this user can write (anything else stops the command with one line naming the
variable). Without it, the project's home folder (`.market_pipeline/dagster/`), with the project's
`dagster.yaml` copied in on every start.

**Which `dagster.yaml`.** A `DAGSTER_HOME` with no `dagster.yaml` (an empty folder, as Dagster's own
docs suggest) gets the project's copied in, with one line saying so: without it Dagster's defaults
would be in force: Dagster's unpooled SQLite event log (the main job takes about 4 times as long, a
daily refresh about 20 times), no limit on the `polygon_api` pool and no run retries. A
`dagster.yaml` that lacks those settings is used as it is, with one line saying what it lacks and
how to get it.

**Two first runs.** Two first runs on a brand-new DAGSTER_HOME would both create Dagster's SQLite
schema and one fails ("table secondary_indexes already exists"). The first open of the instance,
its storage schema and the `polygon_api` pool therefore happen under an exclusive file lock in
DAGSTER_HOME: the second process waits for the first, then finds everything created. A failure here
is reported as Dagster's storage failing, naming DAGSTER_HOME, never as the warehouse.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from market_pipeline import settings

LOCK_NAME = ".market_pipeline.instance.lock"
POOLED_EVENT_LOG = "PooledSqliteEventLogStorage"


class DagsterStorageError(RuntimeError):
    """Dagster's own storage (DAGSTER_HOME / dagster.yaml) could not be opened or initialised."""


def project_config() -> Path:
    return settings.project_dir() / "dagster.yaml"


def dagster_home() -> Path:
    """The Dagster home this process uses, created if need be, and exported as DAGSTER_HOME.

    Raises SettingsError (a relative path, a file) or DagsterStorageError (cannot be created or
    written), each one line naming DAGSTER_HOME."""
    raw = (os.environ.get("DAGSTER_HOME") or "").strip()
    if not raw:
        return settings.ensure_dagster_home()  # the project's home, with the project's dagster.yaml
    home = settings.check_dagster_home(raw)
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DagsterStorageError(
            f"DAGSTER_HOME={raw} cannot be used ({reason}): set DAGSTER_HOME to a folder you can write, "
            "or unset it to use the project's .market_pipeline/dagster/"
        ) from None
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def config_gaps(config: dict) -> list[str]:
    """What a home's dagster.yaml (`config`, parsed) lacks of the project's, in words, the costly first."""
    gaps = []
    storage = config.get("storage") or {}
    event_log = config.get("event_log_storage") or {}
    external = bool({"postgres", "mysql"} & set(storage)) or (event_log and "Sqlite" not in str(event_log.get("class")))
    if not external and event_log.get("class") != POOLED_EVENT_LOG:
        gaps.append("the pooled SQLite event log (without it runs take several times as long)")
    pools = (config.get("concurrency") or {}).get("pools") or {}
    if pools.get("default_limit") is None:
        gaps.append("the polygon_api pool's limit (one fetching step at a time)")
    if not (config.get("run_retries") or {}).get("enabled"):
        gaps.append("run retries")
    return gaps


def configure_home(home: Path, prog: str = "market-pipeline", out=None) -> list[str]:
    """Give `home` the project's dagster.yaml when it has none, saying so in one line; otherwise say
    in one line what its dagster.yaml lacks. Returns the lines said."""
    import yaml

    out = out or sys.stderr
    target, source = home / "dagster.yaml", project_config()
    if not target.exists() and not (home / "dagster.yml").exists():
        if not source.exists():
            return []
        shutil.copyfile(source, target)
        line = f"{prog}: DAGSTER_HOME={home} had no dagster.yaml: copied the project's there ({source})"
        print(line, file=out, flush=True)
        return [line]
    if target.exists() and target.read_bytes() == source.read_bytes():
        return []
    config_file = target if target.exists() else home / "dagster.yml"
    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DagsterStorageError(f"DAGSTER_HOME={home}: its {config_file.name} cannot be read ({reason})") from None
    gaps = config_gaps(config if isinstance(config, dict) else {})
    if not gaps:
        return []
    line = (
        f"{prog}: DAGSTER_HOME={home}: its {config_file.name} lacks {_join(gaps)} of the project's: "
        f"copy {source} there (dagster.postgres.yaml for PostgreSQL storage)"
    )
    print(line, file=out, flush=True)
    return [line]


def prepare_dagster_home(prog: str = "market-pipeline", out=None) -> Path:
    """dagster_home(), then configure_home() when DAGSTER_HOME names the home: the home a command
    of this project opens."""
    chosen = bool((os.environ.get("DAGSTER_HOME") or "").strip())
    home = dagster_home()
    if chosen:
        configure_home(home, prog, out)
    return home


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@contextlib.contextmanager
def home_lock(home: Path) -> Iterator[None]:
    """An exclusive lock on DAGSTER_HOME (blocks until the other holder is done)."""
    with open(home / LOCK_NAME, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def open_instance(init=None, prog: str = "market-pipeline"):
    """DagsterInstance.get() on prepare_dagster_home()'s home, its storages initialised once, under
    the home's lock; `init(instance)` runs under the lock too (e.g. creating the polygon_api pool)."""
    home = prepare_dagster_home(prog)
    from dagster import DagsterInstance

    with home_lock(home):
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


def main(argv: list[str] | None = None) -> int:
    """`python -m market_pipeline.devtools.instance check PROG`: the DAGSTER_HOME a Dagster command run
    from the project folder would use, prepared as the CLI prepares it (one line and exit 2 when it
    cannot be used). Unset, Dagster's own commands use a temporary home with the project's
    dagster.yaml: nothing to do."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "check":
        print("usage: python -m market_pipeline.devtools.instance check PROG", file=sys.stderr)
        return 2
    prog = args[1]
    if not (os.environ.get("DAGSTER_HOME") or "").strip():
        return 0
    try:
        settings.validate()
        prepare_dagster_home(prog)
    except (settings.SettingsError, DagsterStorageError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
