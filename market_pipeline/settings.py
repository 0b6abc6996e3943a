"""Where things live and which environment variables configure them.

One project home folder (git-ignored) holds Dagster's storage and the default SQLite warehouse:

    <project>/.market_pipeline/dagster/   DAGSTER_HOME when it is not set (dagster.yaml is linked in)
    <project>/.market_pipeline/data/      the default SQLite warehouse, warehouse.sqlite

`MARKET_PIPELINE_HOME` moves the home folder; `DAGSTER_HOME` and `MARKET_PIPELINE_DB_URL`, when set,
win over the defaults.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_BASE_URL = "https://api.massive.com"
DEFAULT_REQUESTS_PER_MINUTE = 5
DEFAULT_MAX_IN_FLIGHT = 8


def project_dir() -> Path:
    """The checkout this package runs from (it holds workspace.yaml), else the current folder."""
    candidate = PACKAGE_DIR.parent
    if (candidate / "workspace.yaml").exists():
        return candidate
    return Path.cwd()


def home_dir() -> Path:
    return Path(os.environ.get("MARKET_PIPELINE_HOME") or project_dir() / ".market_pipeline").resolve()


def default_db_url() -> str:
    return f"sqlite:///{home_dir() / 'data' / 'warehouse.sqlite'}"


def db_url() -> str:
    """The warehouse URL: MARKET_PIPELINE_DB_URL, else the SQLite file in the home folder."""
    return os.environ.get("MARKET_PIPELINE_DB_URL") or default_db_url()


def ensure_dagster_home() -> Path:
    """Set DAGSTER_HOME to the project's home folder when unset, with the project's dagster.yaml in it."""
    if os.environ.get("DAGSTER_HOME"):
        path = Path(os.environ["DAGSTER_HOME"])
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = home_dir() / "dagster"
    path.mkdir(parents=True, exist_ok=True)
    source = project_dir() / "dagster.yaml"
    target = path / "dagster.yaml"
    if source.exists() and (not target.exists() or target.read_bytes() != source.read_bytes()):
        shutil.copyfile(source, target)
    os.environ["DAGSTER_HOME"] = str(path)
    return path


def polygon_api_key() -> str | None:
    """POLYGON_API_KEY, else MASSIVE_API_KEY (Polygon's new name), else None."""
    return os.environ.get("POLYGON_API_KEY") or os.environ.get("MASSIVE_API_KEY") or None


def polygon_base_url() -> str:
    return (os.environ.get("POLYGON_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


class SettingsError(ValueError):
    """An environment setting that cannot be used; the one-line message names it and a valid value."""


def _set(name: str) -> str | None:
    raw = os.environ.get(name)
    return None if raw is None or raw.strip() == "" else raw.strip()


def requests_per_minute() -> int:
    raw = _set("POLYGON_REQUESTS_PER_MINUTE")
    if raw is None:
        return DEFAULT_REQUESTS_PER_MINUTE
    if not re.fullmatch(r"\d{1,9}", raw):
        raise SettingsError(
            f"POLYGON_REQUESTS_PER_MINUTE={raw!r} is not a whole number of 0 or more: set e.g. "
            "POLYGON_REQUESTS_PER_MINUTE=5 (free plan), 300 (a paid plan) or 0 (no pacing)"
        )
    return int(raw)


def max_in_flight() -> int:
    """How many Polygon requests one ohlcv_daily step may have in flight at once (POLYGON_MAX_IN_FLIGHT,
    default 8; 1: one at a time). The pace stays the plan's: POLYGON_REQUESTS_PER_MINUTE's budget."""
    raw = _set("POLYGON_MAX_IN_FLIGHT")
    if raw is None:
        return DEFAULT_MAX_IN_FLIGHT
    if not re.fullmatch(r"[0-9]{1,9}", raw) or int(raw) < 1:
        raise SettingsError(
            f"POLYGON_MAX_IN_FLIGHT={raw!r} is not a whole number of 1 or more: set e.g. "
            f"POLYGON_MAX_IN_FLIGHT={DEFAULT_MAX_IN_FLIGHT} (or 1 for one request at a time)"
        )
    return int(raw)


def default_decode_processes() -> int:
    """One decoding process when the machine has a core to spare for it, else none."""
    return 1 if (os.cpu_count() or 1) >= 2 else 0


def decode_processes() -> int:
    """Worker processes that decode the bars' answers of a run with many range requests
    (POLYGON_DECODE_PROCESSES; default 1 on a machine with 2 or more cores, else 0; 0: decoded in the
    run's own process). Each costs about 100 MB and a second to start."""
    raw = _set("POLYGON_DECODE_PROCESSES")
    if raw is None:
        return default_decode_processes()
    if not re.fullmatch(r"[0-9]{1,3}", raw) or int(raw) > 64:
        raise SettingsError(
            f"POLYGON_DECODE_PROCESSES={raw!r} is not a whole number from 0 to 64: set e.g. "
            "POLYGON_DECODE_PROCESSES=1 (or 0 to decode in the run's own process)"
        )
    return int(raw)


DEFAULT_CHARTS_PER_RUN = 100
MAX_CHARTS_PER_RUN = 100_000


def charts_per_run() -> int:
    """How many charts one run draws at most (MARKET_PIPELINE_CHARTS_PER_RUN, default 100; 0: none):
    the symbols whose history a run changed most first, then those it only appended sessions to, whose
    chart is the oldest. Each costs tens of milliseconds and about 20 kB of event log."""
    raw = _set("MARKET_PIPELINE_CHARTS_PER_RUN")
    if raw is None:
        return DEFAULT_CHARTS_PER_RUN
    if not re.fullmatch(r"[0-9]{1,6}", raw) or int(raw) > MAX_CHARTS_PER_RUN:
        raise SettingsError(
            f"MARKET_PIPELINE_CHARTS_PER_RUN={raw!r} is not a whole number from 0 to {MAX_CHARTS_PER_RUN}: set e.g. "
            f"MARKET_PIPELINE_CHARTS_PER_RUN={DEFAULT_CHARTS_PER_RUN} (or 0 to draw no chart)"
        )
    return int(raw)


def step_retry_delay() -> float:
    """Seconds before Dagster retries a failed ohlcv_daily step (MARKET_PIPELINE_STEP_RETRY_DELAY, default 10)."""
    raw = _set("MARKET_PIPELINE_STEP_RETRY_DELAY")
    if raw is None:
        return 10.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise SettingsError(
            f"MARKET_PIPELINE_STEP_RETRY_DELAY={raw!r} is not a number of seconds of 0 or more: set e.g. "
            "MARKET_PIPELINE_STEP_RETRY_DELAY=10"
        )
    return value


def _number(raw: str) -> float:
    """`raw` as a finite number; -1.0 for anything else (below every setting's range)."""
    try:
        value = float(raw)
    except ValueError:
        return -1.0
    return value if math.isfinite(value) else -1.0


# The largest real answer, 50,000 daily bars, is about 5 MB of JSON; a whole market's grouped-daily
# day about 1.5 MB. An answer that decodes to more is refused as it is read (a decompression bomb,
# a broken server), so a run's memory stays bounded.
DEFAULT_MAX_ANSWER_MB = 25.0
MAX_MAX_ANSWER_MB = 4096.0


def max_answer_mb() -> float:
    """The most megabytes (10^6 bytes) one Polygon answer may decode to (POLYGON_MAX_ANSWER_MB,
    default 25: five times the largest real answer); past it the request fails at once."""
    raw = _set("POLYGON_MAX_ANSWER_MB")
    if raw is None:
        return DEFAULT_MAX_ANSWER_MB
    value = _number(raw)
    if not 0 < value <= MAX_MAX_ANSWER_MB:
        raise SettingsError(
            f"POLYGON_MAX_ANSWER_MB={raw!r} is not a number of megabytes above 0 (at most 4096): set e.g. "
            f"POLYGON_MAX_ANSWER_MB={DEFAULT_MAX_ANSWER_MB:g} (the largest real answer is about 5 MB)"
        )
    return value


DEFAULT_BACKFILL_INTERVAL_SECONDS = 2.0
MAX_BACKFILL_INTERVAL_SECONDS = 3600.0


def backfill_interval_seconds() -> float:
    """Seconds between two iterations of Dagster's backfill daemon when started by `market-pipeline
    daemon` or `make dev` (MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS, default 2; Dagster's own is 30)."""
    raw = _set("MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS")
    if raw is None:
        return DEFAULT_BACKFILL_INTERVAL_SECONDS
    value = _number(raw)
    if not 0 < value <= MAX_BACKFILL_INTERVAL_SECONDS:
        raise SettingsError(
            f"MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS={raw!r} is not a number of seconds above 0 (at most 3600): "
            "set e.g. MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS=2 (30 is Dagster's own)"
        )
    return value


MAX_REVISIONS_RETENTION_DAYS = 36_500


def revisions_retention_days() -> int | None:
    """How many days of revisions the weekly `revisions_retention_job` keeps
    (MARKET_PIPELINE_REVISIONS_RETENTION_DAYS; unset: every revision is kept). Reads as of an instant
    older than that are refused once it has run."""
    raw = _set("MARKET_PIPELINE_REVISIONS_RETENTION_DAYS")
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= MAX_REVISIONS_RETENTION_DAYS:
        raise SettingsError(
            f"MARKET_PIPELINE_REVISIONS_RETENTION_DAYS={raw!r} is not a whole number of days from 1 to "
            f"{MAX_REVISIONS_RETENTION_DAYS}: set e.g. MARKET_PIPELINE_REVISIONS_RETENTION_DAYS=365 (or unset it to keep every revision)"
        )
    return int(raw)


def check_base_url(raw: str) -> str:
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018  (raises for a port that is not a number or out of range)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            f"POLYGON_BASE_URL={raw!r} is not an http(s) URL with a host: set e.g. "
            "POLYGON_BASE_URL=https://api.massive.com (or unset it)"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise SettingsError(
            "POLYGON_BASE_URL must be a plain API root without credentials, query or fragment: set e.g. "
            "POLYGON_BASE_URL=https://api.massive.com"
        )
    return raw.rstrip("/")


def check_dagster_home(raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise SettingsError(
            f"DAGSTER_HOME={raw!r} is not an absolute path: set e.g. DAGSTER_HOME={Path(raw).resolve()} "
            "(or unset it to use the project's home folder)"
        )
    if path.exists() and not path.is_dir():
        raise SettingsError(f"DAGSTER_HOME={raw!r} is a file, not a folder: set DAGSTER_HOME to a folder")
    return path


def check_db_url(raw: str) -> str:
    """The URL's form, and for a SQLite file that its folder exists (a new warehouse is created only
    where its folder exists: a typo must not create folders and an empty warehouse elsewhere)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = raw
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    backend = parsed.get_backend_name() if parsed is not None else None
    if backend not in ("sqlite", "postgresql"):
        raise SettingsError(
            "MARKET_PIPELINE_DB_URL is not a SQLite or PostgreSQL URL: set e.g. "
            "MARKET_PIPELINE_DB_URL=sqlite:////srv/market/warehouse.sqlite or "
            "postgresql+psycopg2://user:password@host:5432/dbname"
        )
    if backend == "sqlite":
        check_sqlite_folder(parsed.database or "", parsed.query)
    return raw


def check_sqlite_folder(database: str, query) -> None:
    path = database
    if query.get("uri") == "true" and path.startswith("file:"):
        path = path[len("file:"):].split("?")[0]
    if not path or path == ":memory:":
        return
    folder = Path(path).expanduser().resolve().parent
    if not folder.is_dir():
        raise SettingsError(
            f"MARKET_PIPELINE_DB_URL: the folder {folder} of the SQLite warehouse does not exist: create it "
            f"(mkdir -p {folder}) or set MARKET_PIPELINE_DB_URL=sqlite:////an/existing/folder/warehouse.sqlite"
        )


def validate() -> None:
    """Check every environment setting once, at start-up (the CLI and the code location call this):
    raises SettingsError with a one-line message naming the variable and a valid value."""
    requests_per_minute()
    max_in_flight()
    decode_processes()
    max_answer_mb()
    step_retry_delay()
    backfill_interval_seconds()
    charts_per_run()
    revisions_retention_days()
    if _set("POLYGON_BASE_URL"):
        check_base_url(_set("POLYGON_BASE_URL"))
    if _set("DAGSTER_HOME"):
        check_dagster_home(os.environ["DAGSTER_HOME"].strip())
    if _set("MARKET_PIPELINE_DB_URL"):
        check_db_url(_set("MARKET_PIPELINE_DB_URL"))
