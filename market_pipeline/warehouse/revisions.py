"""Revisions: every value the warehouse held, with the interval it held it.

Every write records, in its own transaction, what it changes:

* `ohlcv_revisions`: the values a bar held before a write replaced them, from `stored_at` (when the
  bar was stored with them; NULL when that is older than the history kept) to `replaced_at` (the
  replacing write's `fetched_at`). A bar written again with the same values adds nothing.
* `ohlcv_insertions`: when bars were first stored: one row per write and run of dates the symbol did
  not have (no stored bar between its first and last date), so a daily refresh adds one row per
  symbol, a first load one.
* `corporate_action_revisions`: every state of a split or dividend (its fields, status and reason)
  before a change replaced it, from `stored_at` to `replaced_at`; `adjustment_factor_changes`: when a
  symbol's `adjustment_factors` changed.
* `revision_history`: the earliest instant a read can ask about (`began_at`) and, after retention,
  the instant before which revisions were dropped (`kept_from`).

A rename moves every row keyed by the old symbol (these tables included) in its one transaction and
remembers the old name in `symbol_aliases`; the history then reads under either name.

What the warehouse held at an instant is then today's rows, minus the bars first stored after it,
with the values and events revised since put back (`market_pipeline.warehouse.point_in_time`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Sequence

import numpy as np
import sqlalchemy as sa

from market_pipeline import settings
from market_pipeline.warehouse.engine import get_engine, normalize_url
from market_pipeline.warehouse.schema import BAR_VALUE_COLUMNS

_CHUNK = 400  # rows per multi-row statement (SQLite takes at most 32,766 bound values)
_REVISED_COLUMNS = ("symbol", "date", "replaced_at", *BAR_VALUE_COLUMNS, "stored_at")


def stamp(conn: sa.Connection, moment: dt.datetime):
    """A naive-UTC instant as a parameter of a raw statement: text in SQLAlchemy's own SQLite format
    (fixed width, so text order is time order), a datetime on PostgreSQL."""
    if conn.dialect.name == "sqlite":
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    return moment


def as_datetime(value) -> dt.datetime | None:
    """A timestamp as a database gives it (datetime or ISO text) as a naive datetime, or None."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def _marker(conn: sa.Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _chunks(items: Sequence, size: int = _CHUNK):
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ---- bars: what a write of the bar store records ---------------------------------------------------
def _since_sql(alias: str, m: str) -> str:
    """When a stored bar's present values were first held: its last revision, else its insertion."""
    return (
        f"COALESCE((SELECT max(r.replaced_at) FROM ohlcv_revisions r WHERE r.symbol = {alias}.symbol AND r.date = {alias}.date), "
        f"(SELECT max(i.stored_at) FROM ohlcv_insertions i WHERE i.symbol = {alias}.symbol AND i.first_date <= {alias}.date "
        f"AND i.last_date >= {alias}.date))"
    )


def keep_superseded(conn: sa.Connection, bars: Sequence[tuple[str, str]], replaced_at: dt.datetime) -> None:
    """Copy the stored values of these (symbol, ISO date) bars, which the write about to run replaces
    with other values, into `ohlcv_revisions` (in the write's transaction, before it)."""
    m = _marker(conn)
    ignore = "INSERT OR IGNORE INTO" if conn.dialect.name == "sqlite" else "INSERT INTO"
    conflict = "" if conn.dialect.name == "sqlite" else " ON CONFLICT DO NOTHING"
    values = ", ".join(f"d.{c}" for c in BAR_VALUE_COLUMNS)
    for part in _chunks(list(bars)):
        keys = ", ".join([f"({m}, {m})"] * len(part))
        date = "CAST(c.date AS date)" if conn.dialect.name == "postgresql" else "c.date"
        conn.exec_driver_sql(
            f"WITH c(symbol, date) AS (VALUES {keys}) "
            f"{ignore} ohlcv_revisions ({', '.join(_REVISED_COLUMNS)}) "
            f"SELECT d.symbol, d.date, {m}, {values}, {_since_sql('d', m)} "
            f"FROM c JOIN ohlcv_daily d ON d.symbol = c.symbol AND d.date = {date}{conflict}",
            (*(v for pair in part for v in pair), stamp(conn, replaced_at)),
        )


@dataclasses.dataclass(frozen=True)
class Insertion:
    symbol: str
    first_date: str  # ISO
    last_date: str
    bars: int


def insertion_runs(symbols: np.ndarray, keys: np.ndarray, new: np.ndarray, stored_keys: np.ndarray, dates: np.ndarray) -> list[Insertion]:
    """The runs of new dates of a write: `keys` ("SYMBOL|YYYY-MM-DD" of every bar written, by symbol
    then date), `new` which of them the symbol did not have, `stored_keys` the keys of its stored bars
    within each symbol's written range. Consecutive new dates of a symbol with no stored date
    between them are one run."""
    if not new.any():
        return []
    at = np.flatnonzero(new)
    ranks = np.searchsorted(np.sort(stored_keys), keys[at], side="right") if len(stored_keys) else np.zeros(len(at), "int64")
    owners = symbols[at]
    cuts = np.flatnonzero((owners[1:] != owners[:-1]) | (ranks[1:] != ranks[:-1])) + 1
    edges = [0, *cuts.tolist(), len(at)]
    return [
        Insertion(str(owners[a]), str(dates[at[a]]), str(dates[at[b - 1]]), b - a)
        for a, b in zip(edges[:-1], edges[1:])
    ]


def record_insertions(conn: sa.Connection, runs: Sequence[Insertion], stored_at: dt.datetime) -> None:
    """The write's runs of new dates, and the history's first instant moved back to it if earlier."""
    if not runs:
        return
    m = _marker(conn)
    conflict = " ON CONFLICT DO NOTHING"
    moment = stamp(conn, stored_at)
    for part in _chunks(list(runs), 150):
        params = []
        for run in part:
            params += [run.symbol, moment, run.first_date, run.last_date, run.bars]
        conn.exec_driver_sql(
            "INSERT INTO ohlcv_insertions (symbol, stored_at, first_date, last_date, bars) VALUES "
            + ", ".join([f"({m}, {m}, {m}, {m}, {m})"] * len(part)) + conflict,
            tuple(params),
        )
    began_before(conn, stored_at)


def began_before(conn: sa.Connection, moment: dt.datetime) -> None:
    """Move the history's first instant back to `moment` when a write is stamped earlier (a write
    with an injected time); takes no lock otherwise."""
    m = _marker(conn)
    value = stamp(conn, moment)
    conn.exec_driver_sql(f"UPDATE revision_history SET began_at = {m} WHERE id = 1 AND began_at > {m}", (value, value))


# PostgreSQL: parts of the bar store's merge statement (`_PG_MERGE`), which already knows which dates
# are new and which changed, and sees the table as it was before it
PG_MERGE_REVISIONS = f"""
superseded AS (
    INSERT INTO ohlcv_revisions ({", ".join(_REVISED_COLUMNS)})
    SELECT %(symbol)s, m.date, %(fetched_at)s, {", ".join(f"m.old_{c}" for c in BAR_VALUE_COLUMNS)},
           {_since_sql("m", "%s").replace("m.symbol", "%(symbol)s")}
    FROM matched m WHERE m.changed
    ON CONFLICT DO NOTHING
    RETURNING 1
),
spans AS (
    SELECT date, NOT existed AS new FROM matched
    UNION ALL
    SELECT t.date, false FROM ohlcv_daily t
    WHERE t.symbol = %(symbol)s AND t.date BETWEEN (SELECT min(date) FROM src) AND (SELECT max(date) FROM src)
      AND NOT EXISTS (SELECT 1 FROM src WHERE src.date = t.date)
),
runs AS (
    SELECT date, new, count(*) FILTER (WHERE NOT new) OVER (ORDER BY date) AS run FROM spans
),
arrived AS (
    INSERT INTO ohlcv_insertions (symbol, stored_at, first_date, last_date, bars)
    SELECT %(symbol)s, %(fetched_at)s, min(date), max(date), count(*) FROM runs WHERE new GROUP BY run
    ON CONFLICT DO NOTHING
    RETURNING 1
)"""
PG_OLD_VALUES = ", ".join(f"t.{c} AS old_{c}" for c in BAR_VALUE_COLUMNS)


# ---- corporate actions: states of events, factor changes -------------------------------------------
_EVENT_FIELDS = {
    "split": ("execution_date", "split_from", "split_to", "adjustment_type", "historical_adjustment_factor", "status", "reason"),
    "dividend": (
        "ex_dividend_date", "declaration_date", "record_date", "pay_date", "cash_amount", "currency",
        "distribution_type", "frequency", "status", "reason",
    ),
}


def _json_value(value):
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def event_state(kind: str, row) -> str:
    """A split's or dividend's state (its fields, status and reason) as the JSON text kept in
    `corporate_action_revisions`."""
    m = row._mapping if hasattr(row, "_mapping") else row
    return json.dumps({f: _json_value(m[f]) for f in _EVENT_FIELDS[kind]}, sort_keys=True)


def event_states(conn: sa.Connection, symbol: str) -> dict[tuple[str, str], tuple[str, dt.datetime]]:
    """(kind, provider id) -> (state JSON, first_seen) of every stored event of `symbol`."""
    from market_pipeline.warehouse.schema import dividends, splits

    out = {}
    for kind, table in (("split", splits), ("dividend", dividends)):
        for row in conn.execute(sa.select(table).where(table.c.symbol == symbol)):
            out[(kind, row.provider_id)] = (event_state(kind, row), as_datetime(row.first_seen))
    return out


@dataclasses.dataclass(frozen=True)
class EventRevision:
    """One change of a split's or dividend's state: the state before and after (JSON), when."""

    kind: str
    symbol: str
    provider_id: str
    old: dict
    new: dict
    at: dt.datetime


def keep_event_states(
    conn: sa.Connection, symbol: str, before: dict[tuple[str, str], tuple[str, dt.datetime]], now: dt.datetime
) -> list[EventRevision]:
    """After the writes of one transaction on `symbol`'s events: keep each state they replaced
    (`before`, read at its start) in `corporate_action_revisions`; returns the changes."""
    after = event_states(conn, symbol)
    changes = []
    m = _marker(conn)
    ignore = "INSERT OR IGNORE INTO" if conn.dialect.name == "sqlite" else "INSERT INTO"
    conflict = "" if conn.dialect.name == "sqlite" else " ON CONFLICT DO NOTHING"
    for key, (old, first_seen) in sorted(before.items()):
        new = after.get(key, (old, first_seen))[0]
        if new == old:
            continue
        kind, provider_id = key
        previous = conn.exec_driver_sql(
            f"SELECT max(replaced_at) FROM corporate_action_revisions WHERE kind = {m} AND symbol = {m} AND provider_id = {m}",
            (kind, symbol, provider_id),
        ).scalar()
        since = as_datetime(previous) or first_seen
        conn.exec_driver_sql(
            f"{ignore} corporate_action_revisions (kind, symbol, provider_id, replaced_at, state, stored_at) "
            f"VALUES ({m}, {m}, {m}, {m}, {m}, {m}){conflict}",
            (kind, symbol, provider_id, stamp(conn, now), old, None if since is None else stamp(conn, since)),
        )
        changes.append(EventRevision(kind, symbol, provider_id, json.loads(old), json.loads(new), now))
    return changes


def factors_changed(conn: sa.Connection, symbol: str, now: dt.datetime) -> None:
    """Record that `symbol`'s adjustment_factors changed at `now` (in the transaction that changed them)."""
    m = _marker(conn)
    ignore = "INSERT OR IGNORE INTO" if conn.dialect.name == "sqlite" else "INSERT INTO"
    conflict = "" if conn.dialect.name == "sqlite" else " ON CONFLICT DO NOTHING"
    conn.exec_driver_sql(
        f"{ignore} adjustment_factor_changes (symbol, changed_at) VALUES ({m}, {m}){conflict}", (symbol, stamp(conn, now))
    )
