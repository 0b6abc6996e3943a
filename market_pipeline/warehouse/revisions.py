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
from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa

from market_pipeline import settings
from market_pipeline.warehouse import columns
from market_pipeline.warehouse.columns import _marker
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


def _chunks(items: Sequence, size: int = _CHUNK):
    return columns._chunks(items, size)


def _insert_ignoring(conn: sa.Connection) -> tuple[str, str]:
    """(statement head, tail) of an INSERT that skips rows whose key is already there."""
    if conn.dialect.name == "sqlite":
        return "INSERT OR IGNORE INTO", ""
    return "INSERT INTO", " ON CONFLICT DO NOTHING"


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
    ignore, conflict = _insert_ignoring(conn)
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
    ignore, conflict = _insert_ignoring(conn)
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


_FACTOR_LAYOUT = (("valid_from", "<i4"), ("valid_to", "<i4"), ("split_factor", "<f8"), ("total_return_factor", "<f8"))
_FACTOR_WIDTH = sum(np.dtype(t).itemsize for _, t in _FACTOR_LAYOUT)


def encode_factors(ranges: Sequence[tuple]) -> bytes:
    """A symbol's factor ranges ((valid_from, valid_to, split_factor, total_return_factor), by
    valid_from) as `adjustment_factor_changes.superseded`: each field's column in turn, little-endian
    (dates as int32 days since 1970-01-01, factors as float64, exactly as stored)."""
    if not ranges:
        return b""
    fields = list(zip(*ranges))
    days = [np.array([np.datetime64(d, "D") for d in fields[k]], dtype="datetime64[D]").astype("<i4") for k in (0, 1)]
    return b"".join([days[0].tobytes(), days[1].tobytes(), np.array(fields[2], "<f8").tobytes(), np.array(fields[3], "<f8").tobytes()])


def decode_factors(payload) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`encode_factors`' bytes as the reader's factor ranges: (valid_to as datetime64[D], split
    factors, total-return factors)."""
    size = len(payload)
    if size % _FACTOR_WIDTH:
        raise ValueError(f"superseded factors of {size} bytes: not a whole number of {_FACTOR_WIDTH}-byte ranges")
    n = size // _FACTOR_WIDTH
    valid_to = np.frombuffer(payload, "<i4", n, 4 * n).astype("int64").astype("datetime64[D]")
    split = np.frombuffer(payload, "<f8", n, 8 * n).astype("float64")
    total = np.frombuffer(payload, "<f8", n, 16 * n).astype("float64")
    return valid_to, split, total


def factors_changed(conn: sa.Connection, symbol: str, now: dt.datetime, superseded: Sequence[tuple]) -> None:
    """Record that `symbol`'s adjustment_factors changed at `now`, and the ranges the change replaced
    (`superseded`: (valid_from, valid_to, split_factor, total_return_factor) by valid_from; none for
    a symbol that had none), in the transaction that changed them. A second change at the same
    instant keeps the first's: what was held before that instant."""
    m = _marker(conn)
    ignore, conflict = _insert_ignoring(conn)
    conn.exec_driver_sql(
        f"{ignore} adjustment_factor_changes (symbol, changed_at, superseded) VALUES ({m}, {m}, {m}){conflict}",
        (symbol, stamp(conn, now), encode_factors(superseded)),
    )


# ---- reading the revisions, retention ----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BarRevision:
    """One revised bar: its values before and after a write replaced them, and when."""

    date: dt.date
    old: dict  # column -> value (None: NULL)
    new: dict
    stored_at: dt.datetime | None  # when the old values were stored (None: before the history kept)
    replaced_at: dt.datetime

    @property
    def changed(self) -> list[str]:
        return [c for c in BAR_VALUE_COLUMNS if not _same_value(self.old[c], self.new[c])]


@dataclasses.dataclass(frozen=True)
class EventChange:
    """One change of a split's or dividend's state, as `corporate_action_revisions` keeps it."""

    kind: str
    provider_id: str
    old: dict
    new: dict
    stored_at: dt.datetime | None
    replaced_at: dt.datetime

    @property
    def changed(self) -> list[str]:
        """The fields that changed (every field of a new event)."""
        keys = self.old or self.new
        return [k for k in keys if self.old.get(k) != self.new.get(k) and not (k not in self.old and self.new.get(k) is None)]


@dataclasses.dataclass
class SymbolRevisions:
    symbol: str  # the symbol the history is stored under
    bars: list[BarRevision]
    events: list[EventChange]
    renamed_from: list[tuple[str, dt.datetime | None]]  # (old name, when renamed)
    bars_first_stored: int  # bars first stored in the period


def _same_value(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)


class RevisionStore:
    """The revisions kept in the warehouse named by `url` (default: MARKET_PIPELINE_DB_URL)."""

    def __init__(self, url: str | None = None):
        self.url = normalize_url(url or settings.db_url())

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.url)

    def known(self, symbol: str) -> tuple[str, list[tuple[str, dt.datetime | None]]] | None:
        """(the symbol `symbol`'s history is stored under, its previous names with when they were
        renamed), or None when the warehouse knows no such symbol (no bars, events or registry row)."""
        with self.engine.connect() as conn:
            m = _marker(conn)
            alias = conn.exec_driver_sql(f"SELECT symbol FROM symbol_aliases WHERE old_symbol = {m}", (symbol,)).first()
            target = symbol
            if alias is not None and not conn.exec_driver_sql(f"SELECT 1 FROM ohlcv_daily WHERE symbol = {m} LIMIT 1", (symbol,)).first():
                target = alias[0]
            names = [
                (old, as_datetime(at)) for old, at in conn.exec_driver_sql(
                    f"SELECT old_symbol, created_at FROM symbol_aliases WHERE symbol = {m} ORDER BY created_at", (target,)
                )
            ]
            for table in ("ohlcv_daily", "tracked_symbols", "splits", "dividends", "ohlcv_revisions"):
                if conn.exec_driver_sql(f"SELECT 1 FROM {table} WHERE symbol = {m} LIMIT 1", (target,)).first():
                    return target, names
        return None

    def of_symbol(self, symbol: str, since: dt.datetime | None = None) -> SymbolRevisions:
        """Every revision of `symbol`'s bars and corporate actions replaced at or after `since`
        (None: all kept; naive: UTC), oldest first, with the values that replaced them."""
        from market_pipeline.warehouse.schema import dividends, splits

        if since is not None and since.tzinfo is not None:
            since = since.astimezone(dt.timezone.utc).replace(tzinfo=None)

        with self.engine.connect() as conn:
            m = _marker(conn)
            after = stamp(conn, since or dt.datetime(1, 1, 1))
            values = ", ".join(BAR_VALUE_COLUMNS)
            rows = conn.exec_driver_sql(
                f"SELECT date, replaced_at, stored_at, {values} FROM ohlcv_revisions WHERE symbol = {m} ORDER BY date, replaced_at",
                (symbol,),
            ).all()
            dates = sorted({str(r[0])[:10] for r in rows})
            current = {}
            for part in _chunks(dates):
                for r in conn.exec_driver_sql(
                    f"SELECT date, {values} FROM ohlcv_daily WHERE symbol = {m} AND date IN ({', '.join([m] * len(part))})",
                    (symbol, *part),
                ):
                    current[str(r[0])[:10]] = dict(zip(BAR_VALUE_COLUMNS, r[1:]))
            bars = []
            for i, r in enumerate(rows):
                day = str(r[0])[:10]
                newer = rows[i + 1] if i + 1 < len(rows) and str(rows[i + 1][0])[:10] == day else None
                new = dict(zip(BAR_VALUE_COLUMNS, newer[3:])) if newer is not None else current.get(day, {c: None for c in BAR_VALUE_COLUMNS})
                replaced = as_datetime(r[1])
                if since is None or replaced >= since:
                    bars.append(BarRevision(dt.date.fromisoformat(day), dict(zip(BAR_VALUE_COLUMNS, r[3:])), new, as_datetime(r[2]), replaced))
            bars.sort(key=lambda b: (b.replaced_at, b.date))
            events = []
            states, first_seen = {}, {}
            for kind, table in (("split", splits), ("dividend", dividends)):
                for row in conn.execute(sa.select(table).where(table.c.symbol == symbol)):
                    states[(kind, row.provider_id)] = json.loads(event_state(kind, row))
                    first_seen[(kind, row.provider_id)] = as_datetime(row.first_seen)
            kept = conn.exec_driver_sql(
                f"SELECT kind, provider_id, replaced_at, stored_at, state FROM corporate_action_revisions WHERE symbol = {m} "
                "ORDER BY kind, provider_id, replaced_at",
                (symbol,),
            ).all()
            first_state = {}
            for i, (kind, provider_id, replaced_at, stored_at, state) in enumerate(kept):
                first_state.setdefault((kind, provider_id), json.loads(state))
                newer = kept[i + 1] if i + 1 < len(kept) and tuple(kept[i + 1][:2]) == (kind, provider_id) else None
                new = json.loads(newer[4]) if newer is not None else states.get((kind, provider_id), {})
                replaced = as_datetime(replaced_at)
                if since is None or replaced >= since:
                    events.append(EventChange(kind, provider_id, json.loads(state), new, as_datetime(stored_at), replaced))
            # events recorded after the symbol's first bars were stored (a split listed late): new ones
            began = as_datetime(conn.exec_driver_sql(
                f"SELECT min(stored_at) FROM ohlcv_insertions WHERE symbol = {m}", (symbol,)
            ).scalar())
            for key, seen in first_seen.items():
                if began is not None and seen is not None and seen > began and (since is None or seen >= since):
                    events.append(EventChange(key[0], key[1], {}, first_state.get(key, states[key]), None, seen))
            events.sort(key=lambda e: (e.replaced_at, e.kind, e.provider_id))
            first = conn.exec_driver_sql(
                f"SELECT COALESCE(sum(bars), 0) FROM ohlcv_insertions WHERE symbol = {m} AND stored_at >= {m}", (symbol, after)
            ).scalar()
            names = [
                (old, as_datetime(at)) for old, at in conn.exec_driver_sql(
                    f"SELECT old_symbol, created_at FROM symbol_aliases WHERE symbol = {m} ORDER BY created_at", (symbol,)
                )
            ]
        return SymbolRevisions(symbol, bars, events, names, int(first or 0))

    def prune(self, older_than_days: int, now: dt.datetime | None = None) -> dict[str, int]:
        """Drop the revisions replaced (and the insertions recorded) more than `older_than_days` ago,
        in one transaction; reads as of an instant before then are refused from now on. Returns the
        rows dropped per table."""
        from market_pipeline.warehouse.timestamps import utcnow

        cutoff = (now or utcnow()) - dt.timedelta(days=older_than_days)
        dropped = {}
        with self.engine.begin() as conn:
            m, at = _marker(conn), stamp(conn, cutoff)
            for table, column in (
                ("ohlcv_revisions", "replaced_at"), ("ohlcv_insertions", "stored_at"),
                ("corporate_action_revisions", "replaced_at"), ("adjustment_factor_changes", "changed_at"),
            ):
                dropped[table] = conn.exec_driver_sql(f"DELETE FROM {table} WHERE {column} < {m}", (at,)).rowcount
            conn.exec_driver_sql(
                f"UPDATE revision_history SET kept_from = {m} WHERE id = 1 AND (kept_from IS NULL OR kept_from < {m}) "
                f"AND began_at < {m}",
                (at, at, at),
            )
        return dropped

    def sizes(self) -> dict[str, int]:
        """Rows per revisions table."""
        with self.engine.connect() as conn:
            return {
                table: int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar())
                for table in ("ohlcv_revisions", "ohlcv_insertions", "corporate_action_revisions", "adjustment_factor_changes")
            }
