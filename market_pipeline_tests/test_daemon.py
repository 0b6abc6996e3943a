"""The project's daemon entry point (`market-pipeline daemon`, `python -m market_pipeline.devtools.daemon`)
and the `dg dev` that starts it (`market_pipeline.devtools.dev`): the backfill interval setting is
validated, reaches Dagster's real backfill loop, and the entry point runs Dagster's daemon."""

from __future__ import annotations

import logging
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from market_pipeline import settings
from market_pipeline.devtools import daemon as project_daemon
from market_pipeline.devtools.dev import PROJECT_DAEMON_MODULE, with_project_daemon
from market_pipeline.sandbox import SANDBOX_API_KEY
from market_pipeline_tests.dagster_helpers import wait_for
from market_pipeline_tests.waiting import scaled

PROJECT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("market-pipeline"))
VARIABLE = "MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS"


def test_interval_setting_default_and_values(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert settings.backfill_interval_seconds() == 2.0
    for raw, value in (("5", 5.0), (" 0.5 ", 0.5), ("30", 30.0), ("", 2.0)):
        monkeypatch.setenv(VARIABLE, raw)
        assert settings.backfill_interval_seconds() == value
    for raw in ("abc", "0", "-1", "nan", "inf", "1e9"):
        monkeypatch.setenv(VARIABLE, raw)
        with pytest.raises(settings.SettingsError, match=VARIABLE) as error:
            settings.backfill_interval_seconds()
        assert "\n" not in str(error.value) and f"{VARIABLE}=2" in str(error.value)
        with pytest.raises(settings.SettingsError):
            settings.validate()  # checked with every other setting when a command or the code location starts


@pytest.mark.parametrize("raw", ["abc", "0", "-3"])
@pytest.mark.parametrize(
    "command",
    [[CLI, "daemon"], [sys.executable, "-m", "market_pipeline.devtools.daemon"],
     [sys.executable, "-m", "market_pipeline.devtools.dev", "-p", "1"]],
    ids=["market-pipeline daemon", "python -m devtools.daemon", "python -m devtools.dev"],
)
def test_a_bad_interval_is_refused_in_one_line_and_nothing_starts(tmp_path, command, raw):
    dagster_home = tmp_path / "dagster"
    env = {**os.environ, VARIABLE: raw, "DAGSTER_HOME": str(dagster_home), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=scaled(120))
    assert done.returncode == 2
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"{VARIABLE}={raw!r}" in lines[0] and f"set e.g. {VARIABLE}=2" in lines[0]
    assert not dagster_home.exists()  # no Dagster storage was created


def test_dagsters_backfill_loop_sleeps_the_configured_interval(monkeypatch, instance):
    """Dagster's own loop (`execute_backfill_iteration_loop`, one real iteration with no backfill)
    waits the interval the entry point set, not 30 s."""
    from dagster._daemon import controller
    from dagster._daemon.backfill import execute_backfill_iteration_loop

    monkeypatch.setattr(controller, "DEFAULT_DAEMON_INTERVAL_SECONDS", controller.DEFAULT_DAEMON_INTERVAL_SECONDS)
    assert controller.DEFAULT_DAEMON_INTERVAL_SECONDS == 30  # Dagster's default, which the project shortens
    project_daemon.apply_backfill_interval(1.5)

    class Recording(threading.Event):
        """A shutdown event that records how long the loop asks to sleep, without sleeping."""

        def __init__(self):
            super().__init__()
            self.waited: list[float] = []

        def wait(self, timeout=None):
            self.waited.append(timeout)
            return False

    shutdown = Recording()
    context = SimpleNamespace(instance=instance)  # an iteration with no backfill reads only the instance
    loop = execute_backfill_iteration_loop(context, logging.getLogger("test_daemon"), shutdown)
    for _ in range(40):  # up to the first sleep
        next(loop)
        if shutdown.waited:
            break
    assert len(shutdown.waited) == 1 and 0 <= shutdown.waited[0] <= 1.5


def test_daemon_arguments():
    workspace = str(PROJECT / "workspace.yaml")
    assert project_daemon.dagster_daemon_args([]) == ["run", "-w", workspace]
    assert project_daemon.dagster_daemon_args(["--log-level", "debug"]) == ["run", "--log-level", "debug", "-w", workspace]
    assert project_daemon.dagster_daemon_args(["run", "-w", "/srv/w.yaml"]) == ["run", "-w", "/srv/w.yaml"]
    assert project_daemon.dagster_daemon_args(["run", "--workspace=/srv/w.yaml"]) == ["run", "--workspace=/srv/w.yaml"]
    assert project_daemon.dagster_daemon_args(["run", "-m", "market_pipeline.definitions"]) == [
        "run", "-m", "market_pipeline.definitions"]
    assert project_daemon.dagster_daemon_args(["liveness-check"]) == ["liveness-check"]


def test_dev_starts_the_project_daemon_and_nothing_else_changes():
    args = ["--instance-ref", "{}", "--workspace", "/tmp/w.yaml"]
    assert with_project_daemon([sys.executable, "-m", "dagster._daemon", "run", *args]) == [
        sys.executable, "-m", PROJECT_DAEMON_MODULE, "run", *args]
    webserver = [sys.executable, "-m", "dagster_webserver", "--port", "3000", *args]
    assert with_project_daemon(webserver) == webserver


def test_market_pipeline_daemon_runs_dagsters_daemon_with_the_interval(tmp_path, sandbox):
    """`market-pipeline daemon` on a fresh Dagster home: Dagster's daemons start (the backfill daemon
    among them, heartbeating in the instance), it says which interval it uses, and SIGTERM stops it."""
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(PROJECT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {
        **os.environ, VARIABLE: "1", "DAGSTER_HOME": str(dagster_home), "PYTHONWARNINGS": "ignore",
        "MARKET_PIPELINE_DB_URL": f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
        "POLYGON_API_KEY": SANDBOX_API_KEY, "POLYGON_BASE_URL": sandbox.url, "POLYGON_REQUESTS_PER_MINUTE": "0",
    }
    log = open(tmp_path / "daemon.log", "w+")
    # the instance's storage made before the daemon starts: two processes creating a new home's SQLite
    # storage at once race in Dagster's own schema set-up (`table alembic_version already exists`)
    with _instance(dagster_home):
        pass
    process = subprocess.Popen([CLI, "daemon"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        with _instance(dagster_home) as inst:
            wait_for(lambda: process.poll() is not None or "BACKFILL" in inst.get_daemon_heartbeats(),
                     timeout=180, what="the backfill daemon's heartbeat", poll=1.0)
        assert process.poll() is None, (tmp_path / "daemon.log").read_text()
        output = (tmp_path / "daemon.log").read_text()
        assert "the backfill daemon iterates every 1 s (MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS" in output
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=scaled(60))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@contextlib.contextmanager
def _instance(dagster_home: Path):
    """The instance of `dagster_home` as the daemon sees it (the project's event log storage keeps its
    files under DAGSTER_HOME)."""
    from dagster import DagsterInstance

    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    try:
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            yield instance
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved
