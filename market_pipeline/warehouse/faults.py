"""What a database error says about the warehouse: a fault of one statement, or one that will fail
every later write too (a full disk, a read-only file or role, a broken file, a server that is gone).

`unusable(exc)` names the second kind from the driver's own error codes (SQLite's extended result
codes, PostgreSQL's SQLSTATE); `lost(exc, engine)` adds a lost connection that does not come back
(the server is asked again, briefly, before the run gives up on it). `describe(exc)` is the one-line
reason shown to users, without the SQL statement SQLAlchemy puts in its messages.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

# SQLite's result codes (extended codes keep the primary name as their prefix, e.g. SQLITE_IOERR_WRITE)
_SQLITE_UNUSABLE = {
    "SQLITE_FULL": "the warehouse's disk is full",
    "SQLITE_READONLY": "the warehouse is read-only",
    "SQLITE_IOERR": "the warehouse's file cannot be written (I/O error)",
    "SQLITE_CANTOPEN": "the warehouse's file cannot be opened",
    "SQLITE_PERM": "the warehouse's file may not be written (permission denied)",
    "SQLITE_CORRUPT": "the warehouse's file is damaged",
    "SQLITE_NOTADB": "the warehouse's file is not a SQLite database",
}
# PostgreSQL's SQLSTATE codes and classes
_POSTGRES_UNUSABLE = {
    "53100": "the warehouse server's disk is full",
    "53200": "the warehouse server is out of memory",
    "25006": "the warehouse is read-only (a read-only transaction or a standby server)",
    "42501": "the warehouse refuses writes to this role (permission denied)",
    "57P01": "the warehouse server is shutting down",
    "57P02": "the warehouse server crashed",
    "57P03": "the warehouse server is not accepting connections",
}
PROBES = (1.0, 2.0, 4.0)  # seconds between the tries of a lost connection before it counts as gone
UNREACHABLE = "the warehouse cannot be reached"


def reason_of(exc: BaseException) -> str:
    """The driver's own message on one line, without SQLAlchemy's statement and parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    return text[:300] if text else type(orig).__name__


def unusable(exc: BaseException) -> str | None:
    """Why every later write to the warehouse will fail as this one did (a one-line reason naming
    the driver's message), or None when the error belongs to this statement only."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return None
    name = getattr(orig, "sqlite_errorname", None)
    if name:
        for prefix, why in _SQLITE_UNUSABLE.items():
            if name == prefix or name.startswith(prefix + "_"):
                return f"{why} ({reason_of(exc)})"
        return None
    code = getattr(orig, "pgcode", None)
    if code in _POSTGRES_UNUSABLE:
        return f"{_POSTGRES_UNUSABLE[code]} ({reason_of(exc)})"
    return None


def is_disconnect(exc: BaseException) -> bool:
    """A connection the server closed or could not open (SQLAlchemy's own test, plus connection
    errors that never reached a statement)."""
    if getattr(exc, "connection_invalidated", False):
        return True
    orig = getattr(exc, "orig", None)
    return isinstance(exc, sa.exc.OperationalError) and getattr(orig, "pgcode", "") in (None, "") and not getattr(
        orig, "sqlite_errorname", None
    )


def lost(exc: BaseException, engine: sa.Engine | None, probes=PROBES) -> str | None:
    """`unusable(exc)`, or, for a lost connection, why the warehouse stays unreachable: the server is
    asked again after each of `probes` seconds, and a connection that comes back makes it None."""
    why = unusable(exc)
    if why is not None or engine is None or not is_disconnect(exc):
        return why
    last = reason_of(exc)
    for pause in (0.0, *probes):
        time.sleep(pause)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return None
        except sa.exc.DBAPIError as again:
            if unusable(again):
                return unusable(again)
            last = reason_of(again)
    return f"{UNREACHABLE} ({last})"


def describe(exc: BaseException) -> str:
    """One line for users: the cause when it is known, else the driver's message."""
    return unusable(exc) or reason_of(exc)


def cli_message(exc: BaseException) -> str:
    """The command line's one line for a warehouse error: what is wrong and what to do."""
    reason = reason_of(exc)
    why = unusable(exc)
    lowered = reason.lower()
    if why is None and any(word in lowered for word in ("readonly", "read-only", "read only", "permission denied")):
        why = f"the warehouse refused a write ({reason})"
    if why is not None:
        if "read-only" in why or "refused a write" in why or "permission" in why:
            return f"{why}: this command needs a MARKET_PIPELINE_DB_URL with write access"
        if "disk is full" in why:
            return f"{why}: free space where the warehouse lives, then run the command again (nothing was half-written)"
        return f"{why}; check MARKET_PIPELINE_DB_URL"
    if is_disconnect(exc):
        return f"cannot reach the warehouse ({reason}); check MARKET_PIPELINE_DB_URL"
    return f"the warehouse failed ({reason}); nothing was half-written, run the command again (MARKET_PIPELINE_DB_URL)"
