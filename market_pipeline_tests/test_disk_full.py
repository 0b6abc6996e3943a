"""A warehouse whose disk fills up mid-run: the run stops fetching, every symbol of the run that did
not complete ends `failed` with the reason, none is left `in_progress` or `pending`; when even that
write cannot be made, the CLI's report and the next command's start-up report them correctly; a
rerun with space stores exactly what the sandbox serves.

The warehouse lives on a tiny filesystem: a tmpfs mounted for the test where the test may mount one
(root, as on the project's machines and CI), otherwise SQLite's own `PRAGMA max_page_count` limit on
every connection of the warehouse's engine (the same SQLITE_FULL error, from SQLite instead of the
kernel)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from market_pipeline.cli.main import main
from market_pipeline.sandbox import SANDBOX_API_KEY
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.engine import dispose_engine, open_engine
from market_pipeline_tests.dagster_helpers import served

START = "2025-06-02"
PAIRS = ["BTCUSD", "ETHUSD", "SOLUSD", "XRPUSD", "ADAUSD", "DOGEUSD", "LTCUSD", "DOTUSD",
         "AVAXUSD", "LINKUSD", "BCHUSD", "XLMUSD", "UNIUSD", "ETCUSD", "ATOMUSD", "FILUSD"]
ROOM = 256 * 1024  # bytes left free: a few symbols fit, the rest do not
PAGE = 4096


class TinyDisk:
    """A warehouse folder on a 4 MB tmpfs (`kind` "tmpfs"), or a folder whose warehouse engine is
    held to `PRAGMA max_page_count` (`kind` "page_count"). `fill()` leaves about ROOM bytes free,
    `free()` gives the space back."""

    def __init__(self, root: Path):
        self.folder = root / "tiny"
        self.folder.mkdir()
        self.kind = "tmpfs" if self._mount() else "page_count"
        self.url = f"sqlite:///{self.folder / 'warehouse.sqlite'}"
        self.filler = self.folder / "filler"
        self._max_pages: int | None = None

    def _mount(self) -> bool:
        if os.environ.get("MARKET_PIPELINE_TEST_NO_MOUNT") or os.geteuid() != 0 or not shutil.which("mount"):
            return False
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(self.folder)], capture_output=True)
        return done.returncode == 0

    def _limit(self, dbapi_connection, _record) -> None:
        if self._max_pages is not None:
            dbapi_connection.execute(f"PRAGMA max_page_count = {self._max_pages}")

    def fill(self) -> None:
        dispose_engine(self.url)  # the next connections see the limit
        if self.kind == "tmpfs":
            stat = os.statvfs(self.folder)
            free = stat.f_bavail * stat.f_frsize
            with open(self.filler, "wb") as out:
                out.write(b"\0" * max(0, free - ROOM))
            return
        with sqlite3.connect(self.folder / "warehouse.sqlite") as conn:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
        self._max_pages = pages + ROOM // PAGE
        sa.event.listen(open_engine(self.url), "connect", self._limit)

    def free(self) -> None:
        if self.kind == "tmpfs":
            self.filler.unlink(missing_ok=True)
        else:
            self._max_pages = None
            engine = open_engine(self.url)
            if sa.event.contains(engine, "connect", self._limit):
                sa.event.remove(engine, "connect", self._limit)
        dispose_engine(self.url)

    def close(self) -> None:
        dispose_engine(self.url)
        if self.kind == "tmpfs":
            subprocess.run(["umount", "-l", str(self.folder)], capture_output=True)


@pytest.fixture
def tiny(tmp_path):
    """A tmpfs where the machine lets the test mount one, else SQLite's page limit
    (MARKET_PIPELINE_TEST_NO_MOUNT=1 runs these tests on the page limit where a mount would work)."""
    disk = TinyDisk(tmp_path)
    yield disk
    disk.close()


@pytest.fixture
def cli_env(tmp_path, monkeypatch, sandbox, tiny):
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_bytes((Path(__file__).parents[1] / "dagster.yaml").read_bytes())
    for name, value in {
        "MARKET_PIPELINE_DB_URL": tiny.url, "DAGSTER_HOME": str(home), "POLYGON_API_KEY": SANDBOX_API_KEY,
        "POLYGON_BASE_URL": sandbox.url, "POLYGON_REQUESTS_PER_MINUTE": "0", "POLYGON_MAX_IN_FLIGHT": "2",
    }.items():
        monkeypatch.setenv(name, value)
    registry = SymbolRegistry(tiny.url)
    registry.add(PAIRS, "crypto", START)
    return registry


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def statuses(registry: SymbolRegistry) -> dict[str, tuple[str, str | None]]:
    return {r.symbol: (r.backfill_status, r.backfill_error) for r in registry.list(include_inactive=True)}


def assert_rerun_stores_what_is_served(capsys, registry: SymbolRegistry, url: str) -> None:
    code, out, err = cli(capsys, "run")
    assert code == 0, out + err
    assert {s for s, (status, _) in statuses(registry).items() if status != "completed"} == set()
    store = BarStore(url)
    for symbol in PAIRS:
        stored = store.read_bars(symbol)
        expected = served(symbol, "crypto", dt.date.fromisoformat(START))
        assert len(stored) == len(expected) and stored["date"].is_unique, symbol


def test_a_full_disk_stops_the_run_and_fails_every_unfinished_symbol_with_the_reason(tiny, cli_env, sandbox, capsys):
    registry = cli_env
    tiny.fill()
    code, out, err = cli(capsys, "run")
    assert code == 1
    rows = statuses(registry)
    completed = {s for s, (status, _) in rows.items() if status == "completed"}
    failed = {s: error for s, (status, error) in rows.items() if status == "failed"}
    assert 0 < len(failed) and set(failed) | completed == set(PAIRS), rows  # none in_progress, none pending
    for symbol, error in failed.items():
        assert "the warehouse's disk is full (database or disk is full)" in error, (symbol, error)
    # it stopped fetching: at most the symbols prepared when the disk filled (2 x 2 in flight) after it
    requests = sandbox.request_counts()["aggs_range"]
    assert requests <= len(completed) + 1 + 4 < len(PAIRS), (requests, len(completed))
    # one line per failed symbol, each with the reason; no trace
    lines = [line for line in err.splitlines() if line.startswith("market-pipeline: ")]
    assert len(lines) == len(failed) and all("disk is full" in line for line in lines), err
    assert "Traceback" not in err
    tiny.free()
    sandbox.reset_counts()
    assert_rerun_stores_what_is_served(capsys, registry, tiny.url)


@pytest.mark.parametrize("recorder", ["next_command", "failure_sensor"])
def test_when_even_the_failures_cannot_be_written_the_report_and_the_next_command_tell_them(tiny, cli_env, capsys, recorder):
    registry = cli_env
    tiny.fill()

    def refused(*_args, **_kwargs):  # the disk refuses these writes too (as it may: SQLite reuses WAL space)
        error = sqlite3.OperationalError("database or disk is full")
        error.sqlite_errorcode, error.sqlite_errorname = 13, "SQLITE_FULL"
        raise sa.exc.OperationalError("UPDATE tracked_symbols ...", {}, error)

    if recorder == "failure_sensor":  # the run-status sensors as a daemon ticks them, from before the run
        from dagster import DagsterInstance

        from market_pipeline_tests.test_recovery import Sensors

        instance = DagsterInstance.get()
        sensors = Sensors(instance, tiny.url)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("fail_many", "fail_in_progress_for_run", "mark_failed"):
            patch.setattr(SymbolRegistry, name, refused)
        code, out, err = cli(capsys, "run")
        assert code == 1
        rows = statuses(registry)
        left = {s for s, (status, _) in rows.items() if status != "completed"}
        assert left and {rows[s][0] for s in left} == {"in_progress"}  # claimed by the run, nothing more written
        # the run's own report names each of them, failed, with the reason
        for symbol in left:
            assert f"{symbol} failed: " in err and "disk is full" in err
        assert f"{len(PAIRS) - len(left)} of {len(PAIRS)} symbol(s) completed" in out

        # the next command, with the warehouse still refusing: each is reported, with the reason
        code, out, err = cli(capsys, "symbols", "list", "--json")
        assert code == 0
        reported = [line for line in err.splitlines() if " failed: " in line]
        assert len(reported) == len(left) and all("disk is full" in line and "not recorded" in line for line in reported)

    # and once it can write again: recorded, none left in_progress, by the next command or by the
    # run-failure sensor of a deployment's daemon
    tiny.free()
    if recorder == "next_command":
        code, out, err = cli(capsys, "symbols", "list", "--json")
        assert code == 0 and err == ""
    else:
        sensors.tick()
        instance.dispose()
    rows = statuses(registry)
    assert {rows[s][0] for s in left} == {"failed"}
    assert all("the warehouse's disk is full (database or disk is full)" in rows[s][1] for s in left), rows


# ---- the other errors that fail every later write --------------------------------------------------
def test_a_read_only_warehouse_stops_the_run_before_anything_is_fetched(tmp_path, monkeypatch, sandbox, instance):
    from market_pipeline.definitions import defs
    from market_pipeline.defs.bars.partitions import symbols_partitions
    from market_pipeline.defs.bars.reconcile import range_tags

    path = tmp_path / "warehouse.sqlite"
    SymbolRegistry(f"sqlite:///{path}").add(["BTCUSD", "ETHUSD"], "crypto", START)
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    for name, value in {"MARKET_PIPELINE_DB_URL": read_only, "POLYGON_API_KEY": SANDBOX_API_KEY,
                        "POLYGON_BASE_URL": sandbox.url, "POLYGON_REQUESTS_PER_MINUTE": "0"}.items():
        monkeypatch.setenv(name, value)
    instance.add_dynamic_partitions(symbols_partitions.name, ["BTCUSD", "ETHUSD"])
    try:
        result = defs.resolve_job_def("ohlcv_daily_job").execute_in_process(
            instance=instance, tags=range_tags(["BTCUSD", "ETHUSD"]), raise_on_error=False
        )
    finally:
        dispose_engine(read_only)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1  # not retried: a read-only warehouse stays read-only
    description = failures[0].step_failure_data.user_failure_data.description
    assert description.startswith("the run stopped before fetching anything: the warehouse is read-only")
    assert sandbox.request_counts()["total"] == 0


def test_what_counts_as_a_warehouse_that_will_fail_every_later_write(tmp_path):
    from market_pipeline.warehouse import faults

    path = tmp_path / "w.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (k INTEGER PRIMARY KEY)").connection.commit()
    engine = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(sa.exc.OperationalError) as read_only, engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    assert faults.unusable(read_only.value).startswith("the warehouse is read-only (attempt to write a readonly database)")
    writable = sa.create_engine(f"sqlite:///{path}")
    with pytest.raises(sa.exc.IntegrityError) as duplicate, writable.begin() as conn:
        conn.execute(sa.text("INSERT INTO t VALUES (1), (1)"))
    assert faults.lost(duplicate.value, writable) is None  # this statement's fault only
    gone = sa.create_engine("postgresql+psycopg2://nobody@127.0.0.1:9/warehouse", connect_args={"connect_timeout": 2})
    with pytest.raises(sa.exc.OperationalError) as refused:
        gone.connect()
    # asked again (here without pauses): still gone, so every later write would fail too
    assert faults.lost(refused.value, gone, probes=(0.0,)).startswith("the warehouse cannot be reached (")
    for engine_ in (engine, writable, gone):
        engine_.dispose()
