"""Trading calendars: which dates are sessions for an asset class, and what a bar's `t` means.

Pure functions, shared by the Polygon client, the sandbox and the data-quality checks.

- Stocks and ETFs trade on XNYS sessions (exchange_calendars knows holidays, early closes and
  ad-hoc closures such as 2025-01-09).
- Crypto trades every calendar day; a crypto "session" is a UTC calendar day.
"""

from __future__ import annotations

import datetime as dt
import functools
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.timezone.utc

CALENDAR_START = "1995-01-01"


@functools.lru_cache(maxsize=1)
def xnys():
    """The XNYS calendar, loaded once per process (about 0.2 s)."""
    import exchange_calendars as xcals

    return xcals.get_calendar("XNYS", start=CALENDAR_START)


def is_crypto(asset_class: str) -> bool:
    return asset_class == "crypto"


def expected_sessions(asset_class: str, start: dt.date, end: dt.date) -> pd.DatetimeIndex:
    """Every session date in [start, end] (inclusive) as a tz-naive DatetimeIndex at midnight."""
    if end < start:
        return pd.DatetimeIndex([])
    if is_crypto(asset_class):
        return pd.date_range(start, end, freq="D")
    cal = xnys()
    lo = max(pd.Timestamp(start), cal.first_session)
    hi = min(pd.Timestamp(end), cal.last_session)
    if hi < lo:
        return pd.DatetimeIndex([])
    return pd.DatetimeIndex(cal.sessions_in_range(lo, hi)).tz_localize(None).normalize()


def is_session(asset_class: str, dates) -> np.ndarray:
    """Vectorised: for each date (anything pandas reads as dates), is it a session of the calendar."""
    idx = pd.DatetimeIndex(pd.to_datetime(dates)).normalize()
    if is_crypto(asset_class):
        return np.ones(len(idx), dtype=bool)
    if len(idx) == 0:
        return np.zeros(0, dtype=bool)
    sessions = expected_sessions(asset_class, idx.min().date(), idx.max().date())
    return idx.isin(sessions)


def latest_completed_session(asset_class: str, now: dt.datetime | None = None) -> dt.date:
    """The last session whose trading has ended at `now` (a tz-aware datetime; default: now).

    Stocks/ETFs: the latest XNYS session whose close (early closes included) is at or before now.
    Crypto: the UTC day before now's UTC date (today's UTC day ends at midnight).
    """
    now = now or dt.datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("latest_completed_session needs a timezone-aware datetime")
    if is_crypto(asset_class):
        return now.astimezone(UTC).date() - dt.timedelta(days=1)
    return _latest_completed_xnys_session(now)


@functools.lru_cache(maxsize=256)
def _latest_completed_xnys_session(now: dt.datetime) -> dt.date:
    """(memoised: a run's checks ask it once per symbol for the same `now`). Answered from the
    sessions' closes kept on disk (`_xnys_closes`) when they cover `now`; else from the calendar."""
    kept = _xnys_closes()
    if kept is not None:
        sessions, closes = kept
        i = int(np.searchsorted(closes, np.datetime64(now.astimezone(UTC).replace(tzinfo=None), "ns"), side="right")) - 1
        ny_date = now.astimezone(NEW_YORK).date()
        if 0 <= i < len(sessions) - 1:  # a later session exists: the kept list reaches past now
            found = sessions[i].astype("datetime64[D]").item()
            if found >= ny_date - dt.timedelta(days=14):
                return found
    return _latest_from_calendar(now)


def _latest_from_calendar(now: dt.datetime) -> dt.date:
    cal = xnys()
    ts = pd.Timestamp(now).tz_convert("UTC")
    ny_date = now.astimezone(NEW_YORK).date()
    candidates = cal.sessions_in_range(pd.Timestamp(ny_date) - pd.Timedelta(days=14), pd.Timestamp(ny_date))
    for session in reversed(candidates):
        if cal.session_close(session) <= ts:
            return session.date()
    return candidates[0].date() if len(candidates) else ny_date


@functools.lru_cache(maxsize=1)
def calendars_version() -> str:
    """exchange_calendars' version, read from its metadata (importing it costs 0.1 s): what the
    kept sessions and the checks' kept states are valid for."""
    from importlib.metadata import version

    return version("exchange_calendars")


@functools.lru_cache(maxsize=1)
def _xnys_closes() -> tuple[np.ndarray, np.ndarray] | None:
    """Every XNYS session (datetime64[D]) and its close (UTC datetime64[ns]) from CALENDAR_START to
    the calendar's end, kept in the home folder's `cache/` per exchange_calendars version and day of
    creation: building the calendar takes about 0.25 s, which the command line's `stats` would
    otherwise pay for the latest session alone. None when it can be neither read nor made."""
    from market_pipeline import settings

    try:
        path = settings.home_dir() / "cache" / f"xnys-closes-{calendars_version()}-{CALENDAR_START}-{dt.date.today():%Y%m%d}.npy"
    except Exception:
        return None
    try:
        pair = np.load(path, allow_pickle=False)
        return pair[0].astype("datetime64[ns]").astype("datetime64[D]"), pair[1].astype("datetime64[ns]")
    except (OSError, ValueError, IndexError):
        pass
    cal = xnys()
    sessions = np.asarray(cal.sessions.tz_localize(None) if cal.sessions.tz is not None else cal.sessions, dtype="datetime64[ns]")
    closes = np.asarray(cal.schedule["close"].dt.tz_convert("UTC").dt.tz_localize(None), dtype="datetime64[ns]")
    try:
        import os
        import tempfile

        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as out:
            np.save(out, np.stack([sessions.astype("int64"), closes.astype("int64")]))
        os.replace(out.name, path)
        for old in path.parent.glob("xnys-closes-*.npy"):  # earlier days' and versions' copies
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only home: computed again next time
    return sessions.astype("datetime64[D]"), closes


def session_date_from_ms(t_ms: int, asset_class: str) -> dt.date:
    """The session date of a daily bar from its `t` (Unix ms): New York date for stocks/ETFs, UTC for crypto.

    The same rule serves every endpoint's convention (00:00 New York and 16:00 New York for
    stocks, 00:00 UTC and 23:59:59.999 UTC for crypto) because each falls inside its own date.
    """
    instant = dt.datetime.fromtimestamp(t_ms / 1000.0, tz=UTC)
    if is_crypto(asset_class):
        return instant.date()
    return instant.astimezone(NEW_YORK).date()


def session_dates_from_ms(t_ms: np.ndarray, asset_class: str) -> np.ndarray:
    """Vectorised `session_date_from_ms`: datetime64[D] dates for an array of Unix ms."""
    ts = pd.to_datetime(np.asarray(t_ms, dtype="int64"), unit="ms", utc=True)
    if not is_crypto(asset_class):
        ts = ts.tz_convert(NEW_YORK)
    return ts.tz_localize(None).normalize().values.astype("datetime64[D]")


def ms_at_local_midnight(day: dt.date, asset_class: str) -> int:
    """Unix ms of 00:00 on `day` in the asset class's zone (the range endpoint's `t`)."""
    tz = UTC if is_crypto(asset_class) else NEW_YORK
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)


@functools.lru_cache(maxsize=1)
def xnys_session_days() -> np.ndarray:
    """Every XNYS session as a sorted, read-only datetime64[D] array, built once per process.

    Fast vectorised lookups (`np.searchsorted`, `np.isin`) use this instead of querying the calendar.
    """
    kept = _xnys_closes()  # the calendar's sessions, kept on disk: no calendar to build
    days = kept[0].copy() if kept is not None else xnys().sessions.tz_localize(None).values.astype("datetime64[D]")
    days.flags.writeable = False
    return days


def to_days(dates) -> np.ndarray:
    """Any date-like values (datetime64, date/datetime objects, ISO strings) as datetime64[D]; nulls -> NaT.

    Timezone-aware values keep their own wall-clock date.
    """
    values = dates.to_numpy() if isinstance(dates, (pd.Series, pd.Index)) else np.asarray(dates)
    if values.dtype.kind == "M":
        return values.astype("datetime64[D]")
    if values.size == 0:
        return np.empty(0, dtype="datetime64[D]")
    parsed = pd.DatetimeIndex(pd.to_datetime(values.ravel()))
    if parsed.tz is not None:
        parsed = parsed.tz_localize(None)
    return parsed.values.astype("datetime64[D]")


def is_session_day(asset_class: str, days: np.ndarray) -> np.ndarray:
    """Vectorised and fast: for each datetime64[D] day, is it a session (NaT never is).

    Stock/ETF days outside the XNYS calendar's bounds are not sessions.
    """
    days = np.asarray(days, dtype="datetime64[D]")
    if is_crypto(asset_class):
        return ~np.isnat(days)
    sessions = xnys_session_days()
    pos = np.searchsorted(sessions, days).clip(max=len(sessions) - 1)
    return sessions[pos] == days


def session_days(asset_class: str, start: np.datetime64, end: np.datetime64) -> np.ndarray:
    """Every session in [start, end] (inclusive) as a sorted datetime64[D] array."""
    start, end = np.datetime64(start, "D"), np.datetime64(end, "D")
    if end < start:
        return np.empty(0, dtype="datetime64[D]")
    if is_crypto(asset_class):
        return np.arange(start, end + 1, dtype="datetime64[D]")
    sessions = xnys_session_days()
    return sessions[np.searchsorted(sessions, start, "left") : np.searchsorted(sessions, end, "right")]


def local_date(asset_class: str, now: dt.datetime) -> dt.date:
    """The calendar date at `now` (tz-aware) in the asset class's zone: New York for stocks/ETFs, UTC for crypto."""
    if now.tzinfo is None:
        raise ValueError("local_date needs a timezone-aware datetime")
    return now.astimezone(UTC if is_crypto(asset_class) else NEW_YORK).date()
