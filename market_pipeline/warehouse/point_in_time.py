"""Point-in-time reads: the bars and adjustment factors as the warehouse held them at a past instant.

`read_bars(..., as_of=T)` reads today's bars through the column blocks (warehouse.columns), in one
snapshot with everything below, then:

* drops the bars first stored after T (`ohlcv_insertions` rows stamped after T cover their dates);
* puts back, for each bar revised after T, the values it held at T (of its revisions replaced after
  T, the earliest: `ohlcv_revisions`);
* adjusts with the factors held at T: today's `adjustment_factors` for a symbol whose factors did
  not change since T, else the ranges the first change after T replaced
  (`adjustment_factor_changes.superseded`); for a change recorded before those were kept, the
  factors rebuilt (corporate_actions.factors) from the splits and dividends known at T, in the
  states they had then (`corporate_action_revisions`), and the bars held at T.

A name renamed since (or before, when it has no bars of its own) reads the history it was renamed
to (`symbol_aliases`). History begins where the warehouse's does (`revision_history.began_at`: its
creation, or at the upgrade that added revisions the earliest `fetched_at` then stored) and, after
retention dropped older revisions, at `kept_from`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa

from market_pipeline.warehouse import columns
from market_pipeline.warehouse.columns import _fetch, _marker
from market_pipeline.warehouse.revisions import as_datetime, decode_factors, stamp

ACCEPTED = (
    "a timezone-aware datetime, or an ISO 8601 string such as 2025-06-02T21:00:00+00:00, 2025-06-02T17:00-04:00 "
    "or 2025-06-02 (UTC when it has no offset)"
)
_CHUNK = 500
_PRICES = ("open", "high", "low", "close", "vwap")


def _error(message: str):
    from market_pipeline.warehouse.reader import ReadError

    return ReadError(message)


def parse_instant(value, name: str = "as_of") -> dt.datetime:
    """`value` as a naive UTC datetime: a timezone-aware datetime, or ISO 8601 text (UTC when it
    names no offset). A naive datetime, a bare date object or text that is no instant: ReadError."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise _error(f"{name} {value.isoformat()} has no time zone: pass {ACCEPTED}")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if isinstance(value, str):
        text = value.strip()
        try:
            moment = dt.datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise _error(f"{name} {value!r} is not an instant: pass {ACCEPTED}") from None
        if moment.tzinfo is None:
            return moment
        return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if isinstance(value, dt.date):
        raise _error(f"{name} {value.isoformat()} is a date, not an instant: pass {ACCEPTED}")
    raise _error(f"{name} {value!r} is not an instant: pass {ACCEPTED}")


def _utc(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (f".{moment.microsecond:06d}" if moment.microsecond else "") + " UTC"


def history_bounds(conn: sa.Connection) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(began_at, kept_from) of `revision_history`."""
    row = conn.exec_driver_sql("SELECT began_at, kept_from FROM revision_history WHERE id = 1").first()
    if row is None:
        return None, None
    return as_datetime(row[0]), as_datetime(row[1])


def check_instant(conn: sa.Connection, moment: dt.datetime, name: str = "as_of") -> None:
    """ReadError unless the warehouse can answer for `moment`: not in the future, not before its
    history began, not before the revisions retention dropped."""
    from market_pipeline.warehouse.timestamps import utcnow

    now = utcnow()
    began, kept = history_bounds(conn)
    span = f"from {_utc(kept or began)} to now" if (kept or began) else "up to now"
    if moment > now:
        raise _error(f"{name} {_utc(moment)} is in the future (now is {_utc(now)}): pass an instant {span}, as {ACCEPTED}")
    if began is not None and moment < began:
        raise _error(
            f"{name} {_utc(moment)} is before the warehouse existed: its history begins at {_utc(began)}; "
            f"pass an instant {span}, as {ACCEPTED}"
        )
    if kept is not None and moment < kept:
        raise _error(
            f"{name} {_utc(moment)} is before {_utc(kept)}: older revisions were dropped "
            f"(MARKET_PIPELINE_REVISIONS_RETENTION_DAYS); pass an instant {span}, as {ACCEPTED}"
        )


# ---- the read ------------------------------------------------------------------------------------
def _chunks(items: Sequence, size: int = _CHUNK):
    return columns._chunks(items, size)


def _days(values) -> np.ndarray:
    """Dates (date objects or ISO text) as int64 days since 1970-01-01."""
    if not len(values):
        return np.empty(0, "int64")
    return np.array(list(values), dtype="datetime64[D]").astype("int64")


def _instants(values) -> np.ndarray:
    """Timestamps (naive datetimes or ISO text as `stamp` writes it; None: NaT) as datetime64[us],
    parsed by numpy in one call (else one by one)."""
    try:
        return np.array(list(values), dtype="datetime64[us]")
    except (ValueError, TypeError):
        return np.array([as_datetime(v) if isinstance(v, str) else v for v in values], dtype="datetime64[us]")


def _key(segments: np.ndarray, days: np.ndarray) -> np.ndarray:
    """One sortable int64 per (segment, day): segments in order, days in order within them."""
    return (segments.astype("int64") << 32) + (days.astype("int64") + 2**31)


def resolve(conn: sa.Connection, names: Sequence[str], as_of: dt.datetime) -> dict[str, str]:
    """name -> the symbol whose rows hold its history as of `as_of`: a name renamed since reads the
    symbol it became; a name renamed before, when it has no bars of its own, too."""
    m = _marker(conn)
    aliases: dict[str, tuple[str, dt.datetime | None]] = {}
    for part in _chunks(list(names)):
        for old, new, created in _fetch(
            conn, f"SELECT old_symbol, symbol, created_at FROM symbol_aliases WHERE old_symbol IN ({', '.join([m] * len(part))})", part
        ):
            aliases[old] = (new, as_datetime(created))
    out = {name: name for name in names}
    for name, (new, created) in aliases.items():
        if created is None or created > as_of:
            out[name] = new
        elif not _fetch(conn, f"SELECT 1 FROM ohlcv_daily WHERE symbol = {m} LIMIT 1", (name,)):
            out[name] = new
    return out


def _in(conn: sa.Connection, part: Sequence[str]) -> str:
    return ", ".join([_marker(conn)] * len(part))


def _bounds_sql(conn: sa.Connection, low: str, high: str, start, end) -> tuple[str, list]:
    m, sql, params = _marker(conn), "", []
    if start is not None:
        sql += f" AND {high} >= {m}"
        params.append(start.isoformat() if conn.dialect.name == "sqlite" else start)
    if end is not None:
        sql += f" AND {low} <= {m}"
        params.append(end.isoformat() if conn.dialect.name == "sqlite" else end)
    return sql, params


def bars_as_of(
    conn: sa.Connection, names: Sequence[str], start: dt.date | None, end: dt.date | None, as_of: dt.datetime
) -> tuple[columns.Columns, dict[str, str]]:
    """The bars of `names` (in that order, once each) dated `start`..`end` as held at `as_of`, as
    `Columns` labelled with the names asked; and name -> the symbol read. Call it on a snapshot."""
    names = list(dict.fromkeys(names))
    targets = resolve(conn, names, as_of)
    symbols = list(dict.fromkeys(targets[n] for n in names))
    index = {s: k for k, s in enumerate(symbols)}
    m, moment = _marker(conn), stamp(conn, as_of)

    # bars first stored after as_of: on a whole-history read, per symbol the span its insertions since
    # cover and how many bars they inserted. The usual case, the sessions appended since, is left out
    # by the read itself (each symbol's rows after the day before its span): that holds when exactly
    # that many rows were left out, none after the span. Else the rows are read whole and a span
    # holding exactly that many bars is dropped whole; any other symbol's insertions one by one.
    spans = []
    bounds, bound_params = _bounds_sql(conn, "first_date", "last_date", start, end)
    for part in _chunks(symbols if start is None and end is None else []):
        spans += _fetch(
            conn,
            f"SELECT symbol, min(first_date), max(last_date), sum(bars) FROM ohlcv_insertions "
            f"WHERE symbol IN ({_in(conn, part)}) AND stored_at > {m}{bounds} GROUP BY symbol",
            (*part, moment, *bound_params),
        )
    table = np.array(spans, dtype=object).reshape(len(spans), 4)
    span_k = np.array([index[s] for s in table[:, 0]], dtype="int64")
    span_low, span_high = _days(table[:, 1]), _days(table[:, 2])
    span_bars = table[:, 3].astype("int64")
    until = {str(s): columns._date(int(day) - 1) for s, day in zip(table[:, 0], span_low.tolist())}
    data = columns.read(conn, columns.OHLCV, symbols, start, end, until=until)
    if until:
        left_out, last = data.beyond
        if ((left_out[span_k] == span_bars) & (last[span_k] <= span_high)).all():
            table = table[:0]  # every span left out by the read
        else:
            data = columns.read(conn, columns.OHLCV, symbols, start, end)
    keys, drop = None, None  # each row's key, the rows dropped: made only when some row is dropped
    lows, highs = [], []
    mixed = symbols if start is not None or end is not None else []
    if len(table) and len(data.days):
        keys = _row_keys(data)
        low, high = _key(span_k, span_low), _key(span_k, span_high)
        inside = np.searchsorted(keys, high, side="right") - np.searchsorted(keys, low, side="left")
        whole = inside == span_bars
        lows.append(low[whole])
        highs.append(high[whole])
        mixed = [str(s) for s in table[~whole, 0]]
    if len(data.days):
        for part in _chunks(mixed):
            rows = _fetch(
                conn,
                f"SELECT symbol, first_date, last_date FROM ohlcv_insertions WHERE symbol IN ({_in(conn, part)}) "
                f"AND stored_at > {m}{bounds}",
                (*part, moment, *bound_params),
            )
            if rows:
                found = np.array(rows, dtype=object)
                seg = np.array([index[s] for s in found[:, 0]], dtype="int64")
                lows.append(_key(seg, _days(found[:, 1])))
                highs.append(_key(seg, _days(found[:, 2])))
    if lows:
        keys = _row_keys(data) if keys is None else keys
        low, high = np.concatenate(lows), np.concatenate(highs)
        starts, stops = np.searchsorted(keys, low, side="left"), np.searchsorted(keys, high, side="right")
        covered = np.cumsum(np.bincount(starts, minlength=len(keys) + 1) - np.bincount(stops, minlength=len(keys) + 1))
        drop = covered[: len(keys)] > 0

    # values revised after as_of: the earliest revision replaced after it holds the value then
    value_columns = columns.OHLCV.columns
    revised = []
    bounds, bound_params = _bounds_sql(conn, "date", "date", start, end)
    for part in _chunks(symbols):
        revised += _fetch(
            conn,
            f"SELECT symbol, date, replaced_at, stored_at, {', '.join(value_columns)} FROM ohlcv_revisions "
            f"WHERE symbol IN ({_in(conn, part)}) AND replaced_at > {m}{bounds}",
            (*part, moment, *bound_params),
        )
    extra = None
    if revised:
        table = np.array(revised, dtype=object)
        seg = np.array([index[s] for s in table[:, 0]], dtype="int64")
        rev_keys = _key(seg, _days(table[:, 1]))
        replaced = _instants(table[:, 2])
        order = np.lexsort((replaced, rev_keys))
        table, rev_keys = table[order], rev_keys[order]
        first = np.r_[True, rev_keys[1:] != rev_keys[:-1]]
        since = _instants(table[:, 3])
        held = np.isnat(since) | (since <= np.datetime64(as_of, "us"))
        take = first & held
        table, rev_keys = table[take], rev_keys[take]
        at = data.positions(table[:, 0], (rev_keys & 0xFFFFFFFF) - 2**31)
        present = at >= 0
        put = at[present]
        for i, c in enumerate(value_columns, start=4):
            values, missing = columns.dbapi_column(columns.OHLCV, c, table[present, i])
            data.values[c][put] = values
            if missing is not None:
                data.missing[c][put] = missing
        if drop is not None:
            drop[put] = False
        if not present.all():  # a bar held then and absent now: put back in its place
            gone = ~present
            extra = (rev_keys[gone], table[gone])
    if (drop is None or not drop.any()) and extra is None and all(targets[n] == n for n in names):
        return data, targets
    keys = _row_keys(data) if keys is None else keys
    drop = np.zeros(len(keys), dtype=bool) if drop is None else drop
    return _rebuild(data, names, targets, symbols, keys, drop, extra), targets


def _row_keys(data: columns.Columns) -> np.ndarray:
    """The `_key` of every row of `data` (its segment, its day), ascending."""
    return _key(np.repeat(np.arange(len(data.symbols), dtype="int64"), data.counts), data.days)


def _rebuild(data: columns.Columns, names, targets, symbols, keys, drop, extra) -> columns.Columns:
    """Columns without the dropped rows, with `extra` rows put in place, labelled with `names`."""
    ds = data.dataset
    keep = np.flatnonzero(~drop)  # one index for every column: cheaper than a mask per column
    days = data.days.take(keep)
    values = {c: v.take(keep) for c, v in data.values.items()}
    missing = {c: v.take(keep) for c, v in data.missing.items()}
    counts = data.counts - np.bincount((keys[drop] >> 32).astype("int64"), minlength=len(symbols))
    if extra is not None:
        row_keys = keys[keep]
        extra_keys, table = extra
        days = np.concatenate([days, ((extra_keys & 0xFFFFFFFF) - 2**31).astype("int32")])
        for i, c in enumerate(ds.columns, start=4):
            added, absent = columns.dbapi_column(ds, c, table[:, i])
            values[c] = np.concatenate([values[c], added])
            if absent is not None:
                missing[c] = np.concatenate([missing[c], absent])
        row_keys = np.concatenate([row_keys, extra_keys])
        order = np.argsort(row_keys, kind="stable")
        row_keys, days = row_keys[order], days[order]
        values = {c: v[order] for c, v in values.items()}
        missing = {c: v[order] for c, v in missing.items()}
        counts = np.bincount((row_keys >> 32).astype("int64"), minlength=len(symbols))
    counts = counts.astype("int64")
    if [targets[n] for n in names] == symbols:
        return columns.Columns(ds, list(names), counts, days.astype("int32"), values, missing)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    where = {s: k for k, s in enumerate(symbols)}
    picks = [np.arange(offsets[where[targets[n]]], offsets[where[targets[n]] + 1]) for n in names]
    pick = np.concatenate(picks) if picks else np.empty(0, "int64")
    return columns.Columns(
        ds, list(names), np.array([len(p) for p in picks], dtype="int64"), days[pick].astype("int32"),
        {c: v[pick] for c, v in values.items()}, {c: v[pick] for c, v in missing.items()},
    )


# ---- factors -------------------------------------------------------------------------------------
_NO_EVENTS = (np.empty(0, object), np.empty(0, "datetime64[D]"), np.empty(0, "float64"))


def _events_as_of(conn: sa.Connection, symbols: Sequence[str], as_of: dt.datetime) -> dict[str, tuple]:
    """kind ("split", "dividend") -> the active events of `symbols` at `as_of` (those recorded by
    then, in the states they had then) as three arrays, grouped by symbol in the order of
    `ORDER BY symbol, date, provider_id` of the events' rows now: symbols, dates (datetime64[D]) and
    values (a split's price factor, a dividend's cash amount)."""
    m, moment = _marker(conn), stamp(conn, as_of)
    earliest: dict[tuple[str, str, str], tuple] = {}
    for part in _chunks(list(symbols)):
        for kind, symbol, provider_id, replaced_at, state in _fetch(
            conn,
            f"SELECT kind, symbol, provider_id, replaced_at, state FROM corporate_action_revisions "
            f"WHERE symbol IN ({_in(conn, part)}) AND replaced_at > {m}",
            (*part, moment),
        ):
            key, when = (kind, symbol, provider_id), as_datetime(replaced_at)
            if key not in earliest or when < earliest[key][0]:
                earliest[key] = (when, state)
    out: dict[str, tuple] = {}
    queries = (
        ("split", "execution_date", ("execution_date", "split_from", "split_to"), "SELECT symbol, provider_id, status, execution_date, split_from, split_to FROM splits"),
        ("dividend", "ex_dividend_date", ("ex_dividend_date", "cash_amount"), "SELECT symbol, provider_id, status, ex_dividend_date, cash_amount FROM dividends"),
    )
    for kind, date, fields, query in queries:
        out[kind] = _NO_EVENTS
        rows = []
        for part in _chunks(list(symbols)):
            rows += _fetch(
                conn, f"{query} WHERE symbol IN ({_in(conn, part)}) AND first_seen <= {m} ORDER BY symbol, {date}, provider_id",
                (*part, moment),
            )
        revised = {(s, p): then for (k, s, p), then in earliest.items() if k == kind}
        if revised:  # the state each event revised since had then
            for i, row in enumerate(rows):
                then = revised.get((row[0], row[1]))
                if then is not None:
                    state = json.loads(then[1])
                    rows[i] = (row[0], row[1], state["status"], *(state[f] for f in fields))
        rows = [r for r in rows if r[2] == "active" and r[3] is not None]
        if not rows:
            continue
        table = np.array(rows, dtype=object)
        try:  # ISO text (SQLite) or date objects (PostgreSQL), in one numpy call
            days = np.array(list(table[:, 3]), dtype="datetime64[D]")
        except (ValueError, TypeError):
            days = np.array([d if isinstance(d, dt.date) else str(d)[:10] for d in table[:, 3]], dtype="datetime64[D]")
        if kind == "split":  # Split.price_factor: split_from / split_to
            values = table[:, 4].astype("float64") / table[:, 5].astype("float64")
        else:
            values = table[:, 4].astype("float64")
        out[kind] = (table[:, 0], days, values)
    return out


def _rebuilt(events: dict[str, tuple], held: columns.Columns, where: dict[str, int], symbols: Sequence[str]) -> dict[str, tuple | None]:
    """symbol -> the (valid_to, split, total-return) ranges of its active events (`_events_as_of`)
    on its bars held then (`held`, whose segment `where[symbol]` holds them), None when no event
    applies: `factor_ranges`' own arithmetic (`dividend_multipliers`, then `cumulative_factors` on
    the splits followed by the dividends applied), one symbol at a time."""
    from market_pipeline.corporate_actions.factors import cumulative_factors, dividend_multipliers

    found: dict[str, dict[str, tuple]] = {}
    for kind in ("split", "dividend"):
        names, days, values = events[kind]
        if len(names):
            cuts = np.flatnonzero(np.r_[True, names[1:] != names[:-1], True]).tolist()
            for a, b in zip(cuts[:-1], cuts[1:]):
                found.setdefault(names[a], {})[kind] = (days[a:b], values[a:b])
    offsets = held.offsets
    out: dict[str, tuple | None] = {s: None for s in symbols}
    for symbol, kinds in found.items():
        split_days, split = kinds.get("split", _NO_EVENTS[1:])
        ex_days, cash = kinds.get("dividend", _NO_EVENTS[1:])
        k = where.get(symbol)
        lo, hi = (int(offsets[k]), int(offsets[k + 1])) if k is not None else (0, 0)
        bar_days = held.days[lo:hi].astype("int64").astype("datetime64[D]")
        factors, _, applies = dividend_multipliers(ex_days, cash, bar_days, held.values["close"][lo:hi])
        applied_days, applied = ex_days[applies], factors[applies]
        if len(split_days) or len(applied_days):
            out[symbol] = cumulative_factors(
                np.concatenate([split_days, applied_days]), np.concatenate([split, np.ones(len(applied))]),
                np.concatenate([np.ones(len(split)), applied]),
            )
    return out


def factors_as_of(
    conn: sa.Connection, data: columns.Columns, targets: dict[str, str], whole: bool, as_of: dt.datetime
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name -> the (valid_to, split, total-return) factor ranges held at `as_of` (reader's form):
    today's for a symbol whose factors did not change since, else those its first change since
    replaced, or (a change recorded without them) rebuilt from the events known then and the bars
    held then. `whole`: `data` holds the names' whole histories (else the bars of the symbols
    rebuilt are read as of then)."""
    from market_pipeline.warehouse.reader import _factor_table

    symbols = list(dict.fromkeys(targets[n] for n in data.symbols))
    m, kept, changed = _marker(conn), {}, []
    for part in _chunks(symbols):  # each symbol's first change since: the ranges it replaced
        for symbol, superseded in _fetch(
            conn,
            f"SELECT c.symbol, c.superseded FROM adjustment_factor_changes c WHERE c.symbol IN ({_in(conn, part)}) "
            f"AND c.changed_at = (SELECT min(f.changed_at) FROM adjustment_factor_changes f "
            f"WHERE f.symbol = c.symbol AND f.changed_at > {m})",
            (*part, stamp(conn, as_of)),
        ):
            if superseded is None:  # recorded before the replaced ranges were kept
                changed.append(symbol)
            else:
                kept[symbol] = decode_factors(superseded) if len(superseded) else None
    rebuilding = set(changed)
    current = _factor_table(conn, [s for s in symbols if s not in kept and s not in rebuilding])  # today's: those of as_of
    rebuilt: dict[str, tuple | None] = dict(kept)
    if changed:
        events = _events_as_of(conn, changed, as_of)
        held = data
        if not whole:
            names = [n for n in data.symbols if targets[n] in rebuilding]
            held, _ = bars_as_of(conn, names, None, None, as_of)
        where = {targets[n]: k for k, n in enumerate(held.symbols)}
        rebuilt.update(_rebuilt(events, held, where, changed))
    out = {}
    for name in data.symbols:
        symbol = targets[name]
        ranges = rebuilt[symbol] if symbol in rebuilt else current.get(symbol)
        if ranges is not None:
            out[name] = ranges
    return out
