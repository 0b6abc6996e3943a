"""Where things live and which environment variables configure them.

One project home folder (git-ignored) holds Dagster's storage and the default SQLite warehouse:

    <project>/.market_pipeline/dagster/   DAGSTER_HOME when it is not set (dagster.yaml is linked in)
    <project>/.market_pipeline/data/      the default SQLite warehouse, warehouse.sqlite

`MARKET_PIPELINE_HOME` moves the home folder; `DAGSTER_HOME` and `MARKET_PIPELINE_DB_URL`, when set,
win over the defaults.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_BASE_URL = "https://api.massive.com"
DEFAULT_REQUESTS_PER_MINUTE = 5


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


def requests_per_minute() -> int:
    raw = os.environ.get("POLYGON_REQUESTS_PER_MINUTE")
    if raw is None or raw.strip() == "":
        return DEFAULT_REQUESTS_PER_MINUTE
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"POLYGON_REQUESTS_PER_MINUTE={raw!r} is not a whole number: set 5 for the free plan, "
            "a higher number for a paid plan, or 0 for no pacing"
        ) from None
    if value < 0:
        raise ValueError("POLYGON_REQUESTS_PER_MINUTE must be 0 (no pacing) or more")
    return value


def step_retry_delay() -> float:
    """Seconds before Dagster retries a failed ohlcv_daily step (MARKET_PIPELINE_STEP_RETRY_DELAY, default 10)."""
    return float(os.environ.get("MARKET_PIPELINE_STEP_RETRY_DELAY") or 10.0)
