"""Point-in-time reads: the bars and adjustment factors as the warehouse held them at a past instant.

`read_bars(..., as_of=T)` reads today's bars through the column blocks (warehouse.columns), in one
snapshot with everything below, then:

* drops the bars first stored after T (`ohlcv_insertions` rows stamped after T cover their dates);
* puts back, for each bar revised after T, the values it held at T (of its revisions replaced after
  T, the earliest: `ohlcv_revisions`);
* adjusts with the factors held at T: today's `adjustment_factors` for a symbol whose factors did
  not change since T, else the factors rebuilt (corporate_actions.factors) from the splits and
  dividends known at T, in the states they had then (`corporate_action_revisions`), and the bars
  held at T.

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
from market_pipeline.warehouse.revisions import as_datetime, stamp

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
    """Timestamps (datetimes or ISO text; None: NaT) as datetime64[us]."""
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
    data = columns.read(conn, columns.OHLCV, symbols, start, end)
    index = {s: k for k, s in enumerate(symbols)}
    m, moment = _marker(conn), stamp(conn, as_of)
    segments = np.repeat(np.arange(len(symbols), dtype="int64"), data.counts)
    keys = _key(segments, data.days)
    drop = np.zeros(len(keys), dtype=bool)

    # bars first stored after as_of: on a whole-history read, per symbol the span its insertions since
    # cover and how many bars they inserted; a span holding exactly that many bars is dropped whole
    # (the usual case: the sessions appended since); any other symbol's insertions are read one by one
    spans = []
    bounds, bound_params = _bounds_sql(conn, "first_date", "last_date", start, end)
    for part in _chunks(symbols if start is None and end is None else []):
        spans += _fetch(
            conn,
            f"SELECT symbol, min(first_date), max(last_date), sum(bars) FROM ohlcv_insertions "
            f"WHERE symbol IN ({_in(conn, part)}) AND stored_at > {m}{bounds} GROUP BY symbol",
            (*part, moment, *bound_params),
        )
    lows, highs = [], []
    mixed = symbols if start is not None or end is not None else []
    if spans and len(keys):
        table = np.array(spans, dtype=object)
        seg = np.array([index[s] for s in table[:, 0]], dtype="int64")
        low, high = _key(seg, _days(table[:, 1])), _key(seg, _days(table[:, 2]))
        inside = np.searchsorted(keys, high, side="right") - np.searchsorted(keys, low, side="left")
        whole = inside == table[:, 3].astype("int64")
        lows.append(low[whole])
        highs.append(high[whole])
        mixed = [str(s) for s in table[~whole, 0]]
    if len(keys):
        for part in _chunks(mixed):
            rows = _fetch(
                conn,
                f"SELECT symbol, first_date, last_date FROM ohlcv_insertions WHERE symbol IN ({_in(conn, part)}) "
                f"AND stored_at > {m}{bounds}",
                (*part, moment, *bound_params),
            )
            if rows:
                table = np.array(rows, dtype=object)
                seg = np.array([index[s] for s in table[:, 0]], dtype="int64")
                lows.append(_key(seg, _days(table[:, 1])))
                highs.append(_key(seg, _days(table[:, 2])))
    if lows:
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
        at = np.searchsorted(keys, rev_keys)
        present = np.zeros(len(rev_keys), dtype=bool)
        inside = at < len(keys)
        present[inside] = keys[at[inside]] == rev_keys[inside]
        for i, c in enumerate(value_columns, start=4):
            raw = table[:, i]
            if c in data.missing:
                missing = np.array([v is None for v in raw], dtype=bool)
                values = np.array([0 if v is None else int(v) for v in raw], dtype="int64")
                data.values[c][at[present]] = values[present]
                data.missing[c][at[present]] = missing[present]
            else:
                values = np.array([np.nan if v is None else float(v) for v in raw], dtype="float64")
                data.values[c][at[present]] = values[present]
        drop[at[present]] = False
        if not present.all():  # a bar held then and absent now: put back in its place
            gone = ~present
            extra = (rev_keys[gone], table[gone])
    if not drop.any() and extra is None and all(targets[n] == n for n in names):
        return data, targets
    return _rebuild(data, names, targets, symbols, keys, drop, extra), targets


def _rebuild(data: columns.Columns, names, targets, symbols, keys, drop, extra) -> columns.Columns:
    """Columns without the dropped rows, with `extra` rows put in place, labelled with `names`."""
    ds = data.dataset
    keep = ~drop
    days = data.days[keep]
    values = {c: v[keep] for c, v in data.values.items()}
    missing = {c: v[keep] for c, v in data.missing.items()}
    counts = data.counts - np.bincount((keys[drop] >> 32).astype("int64"), minlength=len(symbols))
    if extra is not None:
        row_keys = keys[keep]
        extra_keys, table = extra
        days = np.concatenate([days, ((extra_keys & 0xFFFFFFFF) - 2**31).astype("int32")])
        for i, c in enumerate(ds.columns, start=4):
            raw = table[:, i]
            if c in missing:
                missing[c] = np.concatenate([missing[c], np.array([v is None for v in raw], dtype=bool)])
                values[c] = np.concatenate([values[c], np.array([0 if v is None else int(v) for v in raw], dtype="int64")])
            else:
                values[c] = np.concatenate([values[c], np.array([np.nan if v is None else float(v) for v in raw], dtype="float64")])
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
_NO_EVENTS = (np.empty(0, "datetime64[D]"), np.empty(0, "float64"))


def _events_as_of(conn: sa.Connection, symbols: Sequence[str], as_of: dt.datetime) -> dict[str, tuple]:
    """symbol -> the active splits (dates, price factors) and active dividends (ex-dates, cash
    amounts) it had at `as_of`: those recorded by then, in the states they had then; by date."""
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
    out: dict[str, list] = {s: [*_NO_EVENTS, *_NO_EVENTS] for s in symbols}
    queries = (
        ("split", "execution_date", ("execution_date", "split_from", "split_to"), "SELECT symbol, provider_id, status, execution_date, split_from, split_to FROM splits"),
        ("dividend", "ex_dividend_date", ("ex_dividend_date", "cash_amount"), "SELECT symbol, provider_id, status, ex_dividend_date, cash_amount FROM dividends"),
    )
    for slot, (kind, date, fields, query) in enumerate(queries):
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
        days = np.array([d if isinstance(d, dt.date) else str(d)[:10] for d in table[:, 3]], dtype="datetime64[D]")
        if kind == "split":  # Split.price_factor: split_from / split_to
            values = table[:, 4].astype("float64") / table[:, 5].astype("float64")
        else:
            values = table[:, 4].astype("float64")
        names = table[:, 0]
        cuts = np.flatnonzero(names[1:] != names[:-1]) + 1
        for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), len(names)]):
            out[names[a]][2 * slot : 2 * slot + 2] = [days[a:b], values[a:b]]
    return {s: tuple(v) for s, v in out.items()}


def _rebuilt(events: tuple, days: np.ndarray, closes: np.ndarray):
    """The (valid_to, split, total-return) ranges of a symbol's active events (`_events_as_of`) on
    its bars (`days` since 1970, closes), by the arithmetic of `corporate_actions.factors`
    (`factor_ranges`); None: no event applies."""
    from market_pipeline.corporate_actions.factors import cumulative_factors, dividend_multipliers

    split_days, split, ex_days, cash = events
    applied_days, applied = ex_days[:0], cash[:0]
    if len(ex_days):
        factors, _, applies = dividend_multipliers(ex_days, cash, days.astype("int64").astype("datetime64[D]"), closes)
        applied_days, applied = ex_days[applies], factors[applies]
    if not len(split_days) and not len(applied_days):
        return None
    return cumulative_factors(
        np.concatenate([split_days, applied_days]),
        np.concatenate([split, np.ones(len(applied_days))]),
        np.concatenate([np.ones(len(split_days)), applied]),
    )


def factors_as_of(
    conn: sa.Connection, data: columns.Columns, targets: dict[str, str], whole: bool, as_of: dt.datetime
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name -> the (valid_to, split, total-return) factor ranges held at `as_of` (reader's form):
    today's for a symbol whose factors did not change since, else rebuilt from the events known
    then and the bars held then. `whole`: `data` holds the names' whole histories (else the bars of
    the symbols rebuilt are read as of then)."""
    from market_pipeline.warehouse.reader import _factor_table

    symbols = list(dict.fromkeys(targets[n] for n in data.symbols))
    current = _factor_table(conn, symbols)
    m, changed = _marker(conn), []
    for part in _chunks(symbols):
        changed += [r[0] for r in _fetch(
            conn,
            f"SELECT DISTINCT symbol FROM adjustment_factor_changes WHERE symbol IN ({_in(conn, part)}) AND changed_at > {m}",
            (*part, stamp(conn, as_of)),
        )]
    rebuilt: dict[str, tuple | None] = {}
    if changed:
        events = _events_as_of(conn, changed, as_of)
        held = data
        if not whole:
            names = [n for n in data.symbols if targets[n] in events]
            held, _ = bars_as_of(conn, names, None, None, as_of)
        offsets, where = held.offsets, {targets[n]: k for k, n in enumerate(held.symbols)}
        for symbol in changed:
            k = where.get(symbol)
            part = slice(int(offsets[k]), int(offsets[k + 1])) if k is not None else slice(0, 0)
            rebuilt[symbol] = _rebuilt(events[symbol], held.days[part], held.values["close"][part])
    out = {}
    for name in data.symbols:
        symbol = targets[name]
        ranges = rebuilt[symbol] if symbol in rebuilt else current.get(symbol)
        if ranges is not None:
            out[name] = ranges
    return out
