"""Shared fixtures: a throwaway warehouse, a real sandbox server on a free port, a Dagster instance.

Tests never touch the developer's own home folder, warehouse or API key.
"""

from __future__ import annotations

import os
import warnings

import pytest

pytest_plugins = ["market_pipeline_tests.postgres_cluster"]

warnings.filterwarnings("ignore", module="dagster")
# read when market_pipeline.defs.bars.assets is imported: keep Dagster's step retries quick in tests
os.environ["MARKET_PIPELINE_STEP_RETRY_DELAY"] = "0.2"


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """A private project home, no inherited API key or warehouse URL."""
    home = tmp_path_factory.mktemp("home")
    saved = dict(os.environ)
    for key in ("POLYGON_API_KEY", "MASSIVE_API_KEY", "POLYGON_BASE_URL", "POLYGON_REQUESTS_PER_MINUTE",
                "MARKET_PIPELINE_DB_URL", "DAGSTER_HOME"):
        os.environ.pop(key, None)
    os.environ["MARKET_PIPELINE_HOME"] = str(home)
    yield home
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _signal_handlers_as_they_were():
    """SIGINT's and SIGTERM's handlers put back after each test. Dagster's in-process runs end by giving
    SIGTERM SIGINT's handler: when the suite runs as a background job (SIGINT ignored), every later
    subprocess would otherwise start with SIGTERM ignored too, and GNU make, which keeps a signal
    ignored at its start ignored, could no longer be stopped."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    yield
    for sig, handler in saved.items():
        if handler is not None and signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.sqlite'}"


@pytest.fixture
def warehouse_url(sqlite_url) -> str:
    """The warehouse under test (SQLite; PostgreSQL variants use `any_warehouse_url`)."""
    return sqlite_url


@pytest.fixture(params=["sqlite", "postgres"])
def any_warehouse_url(request, tmp_path) -> str:
    """Run a test against SQLite and against a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def sandbox():
    """A fresh Polygon-compatible sandbox on a free loopback port, stopped afterwards."""
    from market_pipeline.sandbox import SandboxServer

    with SandboxServer(host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
def polygon_env(monkeypatch, sandbox, warehouse_url):
    """Environment of a run against the sandbox and the test warehouse, with no pacing."""
    from market_pipeline.sandbox import SANDBOX_API_KEY

    monkeypatch.setenv("POLYGON_API_KEY", SANDBOX_API_KEY)
    monkeypatch.setenv("POLYGON_BASE_URL", sandbox.url)
    monkeypatch.setenv("POLYGON_REQUESTS_PER_MINUTE", "0")
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", warehouse_url)
    return sandbox


@pytest.fixture
def instance(tmp_path):
    """A throwaway Dagster instance with the event log storage of the project's dagster.yaml."""
    from dagster import instance_for_test

    from market_pipeline.storage.config import project_event_log_storage

    home = tmp_path / "dagster_home"
    home.mkdir()
    with instance_for_test(temp_dir=str(home), overrides=project_event_log_storage(home)) as inst:
        yield inst
