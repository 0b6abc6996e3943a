"""The revisions every write keeps (warehouse.revisions), on SQLite and PostgreSQL: a write that changes
nothing adds nothing, a kill between a change and its revision leaves neither, a warehouse upgraded
from the schema before them knows each stored bar since its `fetched_at`, a rename reads under either name, and the
retention drops only what is older than N days (its weekly job and its setting). Instants injected."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import RunRequest, build_schedule_context

from market_pipeline import settings
from market_pipeline.corporate_actions import parse_dividend, parse_split
from market_pipeline.warehouse import SymbolRegistry
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.engine import dispose_engine, head_revision, open_engine, upgrade
from market_pipeline.warehouse.reader import ReadError, read_bars
from market_pipeline.warehouse.revisions import RevisionStore
from market_pipeline.warehouse.store import BarStore, clock_at
from market_pipeline_tests.test_columnar_reads import VIEWS, bars, insert_rows

T0 = dt.datetime(2025, 3, 3, 22, 0)
DAY = dt.timedelta(days=1)
TABLES = ("ohlcv_revisions", "ohlcv_insertions", "corporate_action_revisions", "adjustment_factor_changes")


def rows(url: str, table: str) -> list[tuple]:
    with open_engine(url).connect() as conn:
        found = [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]
    return sorted(found, key=repr)


def counts(url: str) -> dict[str, int]:
    return {table: len(rows(url, table)) for table in TABLES}


def events(symbol: str, frame: pd.DataFrame, cash: float = 0.4, key: str | None = None):
    """A 2-for-1 split and a cash dividend of `symbol` (provider ids from `key`, default the symbol)."""
    dates = frame["date"].dt.date.tolist()
    key = key or symbol
    split = parse_split({"id": f"{key}-s", "ticker": symbol, "execution_date": dates[200].isoformat(), "split_from": 1, "split_to": 2})
    dividend = parse_dividend({"id": f"{key}-d", "ticker": symbol, "ex_dividend_date": dates[100].isoformat(),
                               "cash_amount": cash, "currency": "USD", "distribution_type": "recurring"})
    return [split], [dividend]


def test_a_daily_refresh_that_changes_nothing_adds_one_insertion_per_symbol_and_no_revision(any_warehouse_url):
    url = any_warehouse_url
    store = BarStore(url)
    frames = {s: bars(300, seed=k) for k, s in enumerate(["AAA", "BBB", "CCC"])}
    with clock_at(T0):
        store.upsert_many([(s, f.iloc[:297]) for s, f in frames.items()])
    assert counts(url) == {"ohlcv_revisions": 0, "ohlcv_insertions": 3, "corporate_action_revisions": 0, "adjustment_factor_changes": 0}
    with clock_at(T0 + DAY):  # three sessions written again unchanged, one new: the grouped path, then one symbol
        store.upsert_many([(s, f.iloc[294:298]) for s, f in frames.items()])
        store.upsert_bars("AAA", frames["AAA"].iloc[295:299])
    assert counts(url)["ohlcv_revisions"] == 0 and counts(url)["ohlcv_insertions"] == 7
    revised = frames["BBB"].iloc[296:300].copy()
    revised.loc[297, "close"] *= 1.01
    with clock_at(T0 + 2 * DAY):
        result = store.upsert_bars("BBB", revised)
    assert result.revised == (revised.loc[297, "date"].date(),)
    (kept,) = rows(url, "ohlcv_revisions")
    assert kept[0] == "BBB" and str(kept[1])[:10] == str(revised.loc[297, "date"].date())
    assert kept[6] == frames["BBB"].loc[297, "close"]  # the old close, held since the day it was stored
    assert str(kept[-1])[:19] == str(T0 + DAY)[:19] and str(kept[2])[:19] == str(T0 + 2 * DAY)[:19]
    # the grouped path (one write of many symbols) keeps what it replaces the same way
    grouped = {"AAA": frames["AAA"].iloc[297:300], "BBB": revised.loc[297:], "CCC": frames["CCC"].iloc[296:300].copy()}
    grouped["CCC"].loc[297, "open"] *= 0.99
    with clock_at(T0 + 3 * DAY):
        before = read_bars(list(frames), url=url)
        written = store.upsert_many(list(grouped.items()))
    assert {s: r.revised for s, r in written.items()} == {"AAA": (), "BBB": (), "CCC": (grouped["CCC"].loc[297, "date"].date(),)}
    assert counts(url)["ohlcv_revisions"] == 2
    with clock_at(T0 + 4 * DAY):
        pd.testing.assert_frame_equal(read_bars(list(frames), url=url, as_of=(T0 + 2.5 * DAY).isoformat()), before, check_exact=True)


_KILLED = """
import datetime as dt, sys
from market_pipeline.warehouse import columns, revisions
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.store import BarStore, clock_at
from market_pipeline_tests.test_columnar_reads import bars
from market_pipeline_tests.test_revisions import events

url, what = sys.argv[1], sys.argv[2]

def stall(conn):
    count = conn.exec_driver_sql(f"SELECT count(*) FROM {'ohlcv_revisions' if what == 'bars' else 'corporate_action_revisions'}").scalar()
    print(f"recorded {count}", flush=True)
    sys.stdin.readline()  # never answered: killed here, its transaction open

if what == "bars":
    original = columns.after_write
    def stalled(conn, *args, **kwargs):
        original(conn, *args, **kwargs)
        stall(conn)
    columns.after_write = stalled
    frame = bars(320, seed=5)
    frame.loc[[10, 297], "close"] *= 1.02  # a correction under the seal, one in the tail, new days
    with clock_at(dt.datetime(2025, 3, 5, 22)):
        BarStore(url).upsert_bars("KIL", frame)
else:
    original = revisions.keep_event_states
    def stalled(conn, *args, **kwargs):
        out = original(conn, *args, **kwargs)
        stall(conn)
        return out
    revisions.keep_event_states = stalled
    splits, dividends = events("KIL", bars(300, seed=5), cash=0.6)  # the dividend corrected
    with clock_at(dt.datetime(2025, 3, 5, 22)):
        CorporateActionStore(url).record([], dividends, complete_symbols=["KIL"])  # and the split withdrawn
"""


@pytest.mark.parametrize("what", ["bars", "corporate_actions"])
def test_a_kill_between_a_change_and_its_revision_leaves_neither(any_warehouse_url, what):
    url = any_warehouse_url
    frame = bars(300, seed=5)
    SymbolRegistry(url).add(["KIL"], "stock")
    with clock_at(T0):
        BarStore(url).upsert_bars("KIL", frame)
        CorporateActionStore(url).record(*events("KIL", frame), complete_symbols=["KIL"])
    tables = ["ohlcv_daily", "splits", "dividends", "adjustment_factors", *TABLES, "column_blocks", "column_seals"]
    before = {t: rows(url, t) for t in tables}
    with clock_at(T0 + DAY):
        read_before = {a: read_bars(["KIL"], adjustment=a, url=url) for a in VIEWS}
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen([sys.executable, "-c", _KILLED, url, what], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = child.stdout.readline().strip()
        assert line.startswith("recorded ") and int(line.split()[1]) > 0, line  # its revisions were written...
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(60)
    dispose_engine(url)
    assert {t: rows(url, t) for t in tables} == before  # ...and are gone with the change
    with clock_at(T0 + 3 * DAY):
        for adjustment in VIEWS:
            pd.testing.assert_frame_equal(read_bars(["KIL"], adjustment=adjustment, url=url), read_before[adjustment], check_exact=True)
            pd.testing.assert_frame_equal(
                read_bars(["KIL"], adjustment=adjustment, url=url, as_of=(T0 + 2 * DAY).isoformat()), read_before[adjustment], check_exact=True
            )


def before_revisions() -> str:
    """The schema revision the migration adding the revisions tables follows (found by what it
    creates, so the test holds wherever the migration sits in the chain)."""
    from alembic.script import ScriptDirectory

    from market_pipeline.warehouse.engine import _alembic_config

    script = ScriptDirectory.from_config(_alembic_config())
    (found,) = [r for r in script.walk_revisions() if '"ohlcv_revisions"' in Path(r.path).read_text()]
    return found.down_revision


def _warehouse_before_revisions(url: str) -> dict[str, pd.DataFrame]:
    """A warehouse at the revision before the revisions tables whose bars were written on two days:
    the first load, then the last three sessions again with the next day's."""
    engine = open_engine(url)
    upgrade(engine, before_revisions())
    frames = {"OLD": bars(400, seed=31), "OLE": bars(30, first="2024-03-01", seed=32)}
    with engine.begin() as conn:
        for symbol, frame in frames.items():
            last = len(frame) - 3
            insert_rows(conn, symbol, frame, lambda k: dt.datetime(2026, 1, 5, 22, 0) if k >= last else dt.datetime(2026, 1, 2, 3, 4, 5))
    dispose_engine(url)
    return frames


def test_an_upgraded_warehouse_knows_each_bar_since_its_fetched_at(any_warehouse_url):
    url = any_warehouse_url
    frames = _warehouse_before_revisions(url)
    upgraded = dt.datetime(2026, 1, 7, 12, 0)
    with clock_at(upgraded):
        now = read_bars(["OLD", "OLE"], url=url)  # the first use migrates to the head
        assert len(now) == 430
        with pytest.raises(ReadError, match="before the warehouse existed: its history begins at 2026-01-02 03:04:05 UTC"):
            read_bars(["OLD"], url=url, as_of="2026-01-02T03:00:00Z")
        first_load = read_bars(["OLD", "OLE"], url=url, as_of="2026-01-03T00:00:00Z")
        pd.testing.assert_frame_equal(first_load, now.groupby(level="symbol", sort=False).head(-3).pipe(lambda f: now.loc[f.index]), check_exact=True)
        assert len(first_load) == 424
        pd.testing.assert_frame_equal(read_bars(["OLD", "OLE"], url=url, as_of="2026-01-06T00:00:00Z"), now, check_exact=True)
    with open_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
        runs = conn.execute(sa.text("SELECT symbol, first_date, last_date, bars FROM ohlcv_insertions ORDER BY symbol, first_date")).all()
    assert [(r[0], r[3]) for r in runs] == [("OLD", 397), ("OLD", 3), ("OLE", 27), ("OLE", 3)]
    revised = frames["OLD"].iloc[-3:].copy()
    revised["close"] *= 1.03
    with clock_at(upgraded + DAY):
        BarStore(url).upsert_bars("OLD", revised)
    kept = RevisionStore(url).of_symbol("OLD").bars
    assert [b.stored_at for b in kept] == [dt.datetime(2026, 1, 5, 22, 0)] * 3  # known since its fetched_at
    with clock_at(upgraded + 2 * DAY):
        pd.testing.assert_frame_equal(read_bars(["OLD", "OLE"], url=url, as_of=upgraded.isoformat()), now, check_exact=True)


def test_a_renamed_symbol_is_read_as_of_under_either_name(any_warehouse_url):
    from market_pipeline.reference.events import RenamePlan
    from market_pipeline.warehouse.reference import ReferenceStore

    url = any_warehouse_url
    SymbolRegistry(url).add(["FB"], "stock")
    frame = bars(300, seed=7)
    with clock_at(T0):
        BarStore(url).upsert_bars("FB", frame.iloc[:290])
        CorporateActionStore(url).record(*events("FB", frame), complete_symbols=["FB"])
        before = {a: read_bars(["FB"], adjustment=a, url=url) for a in VIEWS}
    with clock_at(T0 + DAY):
        ReferenceStore(url).rename(RenamePlan(old="FB", new="META", figi=None, evidence="test"))
    changed = frame.iloc[285:].copy()
    changed["close"] *= 1.05
    with clock_at(T0 + 2 * DAY):
        BarStore(url).upsert_bars("META", changed)
        CorporateActionStore(url).record(*events("META", frame, cash=0.5, key="FB"), complete_symbols=["META"])
    with clock_at(T0 + 3 * DAY):
        for adjustment in VIEWS:
            for name in ("FB", "META"):
                got = read_bars([name], adjustment=adjustment, url=url, as_of=(T0 + DAY / 2).isoformat())
                pd.testing.assert_frame_equal(got.droplevel("symbol"), before[adjustment].droplevel("symbol"), check_exact=True)
                assert got.index.get_level_values("symbol").unique().tolist() == [name]
        assert read_bars(["FB"], url=url).empty  # today's read is unchanged: the history is META's
        assert len(read_bars(["FB"], url=url, as_of=(T0 + 2.5 * DAY).isoformat())) == 300
    found = RevisionStore(url)
    assert found.known("FB")[0] == "META"
    listed = found.of_symbol("META")
    assert [old for old, _ in listed.renamed_from] == ["FB"] and len(listed.bars) == 5 and len(listed.events) == 1


def test_retention_drops_only_what_is_older_than_n_days(any_warehouse_url, monkeypatch):
    from market_pipeline.defs.resources import WarehouseResource
    from market_pipeline.defs.revisions.retention import revisions_retention_job, revisions_retention_weekly

    url = any_warehouse_url
    store = BarStore(url)
    SymbolRegistry(url).add(["RET"], "stock")
    frame = bars(300, seed=9)
    reads = {}
    for day in range(6):  # a first load, then five daily refreshes revising a bar each
        part = frame.iloc[: 295 + day].copy()
        part.loc[len(part) - 3 :, "close"] *= 1 + day / 100
        with clock_at(T0 + day * DAY):
            store.upsert_bars("RET", part.iloc[-4:] if day else part)
            if day in (0, 1):  # the events, then the dividend corrected
                CorporateActionStore(url).record(*events("RET", frame, cash=0.4 + day / 20), complete_symbols=["RET"])
            if day == 3:  # corrected again, and the split withdrawn
                CorporateActionStore(url).record([], events("RET", frame, cash=0.5)[1], complete_symbols=["RET"])
            reads[day] = {a: read_bars(["RET"], adjustment=a, url=url) for a in VIEWS}
    before = counts(url)
    monkeypatch.setenv("MARKET_PIPELINE_REVISIONS_RETENTION_DAYS", "3")
    schedule = revisions_retention_weekly
    assert schedule.cron_schedule == "0 7 * * 6" and schedule.job_name == "revisions_retention_job"
    tick = (T0 + 5 * DAY + dt.timedelta(hours=12)).replace(tzinfo=dt.timezone.utc)  # cut-off: 12 h before day 3
    (request,) = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=tick)).run_requests
    assert isinstance(request, RunRequest)
    result = revisions_retention_job.execute_in_process(run_config=request.run_config, resources={"warehouse": WarehouseResource(url=url)})
    assert result.success
    after = counts(url)
    # days 1 and 2 replaced 2 + 3 values (and recorded insertions) before the cut-off; days 3-5 after it
    assert before["ohlcv_revisions"] == 14 and after["ohlcv_revisions"] == 9 and after["ohlcv_insertions"] == 3
    assert (before["corporate_action_revisions"], after["corporate_action_revisions"]) == (3, 2)  # day 1's dropped
    assert (before["adjustment_factor_changes"], after["adjustment_factor_changes"]) == (3, 1)  # days 0, 1 dropped
    with clock_at(T0 + 6 * DAY):
        for day in (3, 4, 5):
            for adjustment in VIEWS:
                got = read_bars(["RET"], adjustment=adjustment, url=url, as_of=(T0 + day * DAY + dt.timedelta(hours=1)).isoformat())
                pd.testing.assert_frame_equal(got, reads[day][adjustment], check_exact=True)
        with pytest.raises(ReadError, match="older revisions were dropped"):
            read_bars(["RET"], url=url, as_of=(T0 + DAY).isoformat())
    monkeypatch.delenv("MARKET_PIPELINE_REVISIONS_RETENTION_DAYS")  # unset: every revision kept
    assert revisions_retention_job.execute_in_process(resources={"warehouse": WarehouseResource(url=url)}).success
    assert counts(url) == after


def test_the_retention_setting_is_checked_at_start_up(monkeypatch, capsys):
    from market_pipeline.cli.main import main

    for bad in ("0", "forever", "-3", "1.5"):
        monkeypatch.setenv("MARKET_PIPELINE_REVISIONS_RETENTION_DAYS", bad)
        with pytest.raises(settings.SettingsError, match="MARKET_PIPELINE_REVISIONS_RETENTION_DAYS=.*=365"):
            settings.validate()
        assert main(["symbols", "list"]) == 2
        assert "MARKET_PIPELINE_REVISIONS_RETENTION_DAYS" in capsys.readouterr().err
    monkeypatch.setenv("MARKET_PIPELINE_REVISIONS_RETENTION_DAYS", "365")
    assert settings.revisions_retention_days() == 365


def test_the_upgrade_that_keeps_replaced_factors_keeps_the_changes_recorded_before(any_warehouse_url):
    """A warehouse at 0011 (factor changes without the ranges they replaced) upgraded to the head keeps
    every change, with none (NULL: a read before them rebuilds the factors); on SQLite the table
    becomes a rowid table, and goes back to WITHOUT ROWID on the way down."""
    from alembic import command

    from market_pipeline.warehouse.engine import _alembic_config, migration_transaction

    url = any_warehouse_url
    engine = open_engine(url)
    upgrade(engine, "0011")
    changes = [("AAA", T0), ("AAA", T0 + DAY), ("BBB", T0)]
    with engine.begin() as conn:
        for symbol, at in changes:
            conn.execute(sa.text("INSERT INTO adjustment_factor_changes (symbol, changed_at) VALUES (:s, :t)"), {"s": symbol, "t": at})

    def table_sql() -> str:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'adjustment_factor_changes'")).scalar()

    upgrade(engine)
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT symbol, changed_at, superseded FROM adjustment_factor_changes ORDER BY symbol, changed_at")).all()
    assert [(s, str(t)[:19], v) for s, t, v in kept] == [(s, str(t)[:19], None) for s, t in changes]
    if url.startswith("sqlite"):
        assert "WITHOUT ROWID" not in table_sql()
    cfg = _alembic_config()
    with migration_transaction(engine) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0011")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM adjustment_factor_changes")).scalar() == 3
    assert "superseded" not in {c["name"] for c in sa.inspect(engine).get_columns("adjustment_factor_changes")}
    if url.startswith("sqlite"):
        assert "WITHOUT ROWID" in table_sql()
    dispose_engine(url)
