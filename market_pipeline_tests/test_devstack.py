"""`make dev` as an operator uses it: one stack per port and Dagster home, no misleading start-up
warning, and Ctrl-C or SIGTERM stops it within seconds, without a traceback, leaving nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from market_pipeline.devtools.stack import descendants, free_port
from market_pipeline.sandbox import SANDBOX_API_KEY
from market_pipeline_tests.dagster_helpers import wait_for
from market_pipeline_tests.waiting import scaled

pytestmark = pytest.mark.slow

DEVSTACK = [sys.executable, "-m", "market_pipeline.devtools.devstack"]


def _env(tmp_path, sandbox, dagster_home=None) -> dict:
    env = {
        **os.environ,
        "MARKET_PIPELINE_HOME": str(tmp_path / "home"),
        "MARKET_PIPELINE_DB_URL": f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
        "POLYGON_API_KEY": SANDBOX_API_KEY,
        "POLYGON_BASE_URL": sandbox.url,
        "POLYGON_REQUESTS_PER_MINUTE": "0",
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("DAGSTER_HOME", None)
    if dagster_home:
        env["DAGSTER_HOME"] = str(dagster_home)
    return env


def _second(env, port) -> subprocess.CompletedProcess:
    started = time.monotonic()
    done = subprocess.run([*DEVSTACK, "--port", str(port)], env=env, capture_output=True, text=True, timeout=scaled(60))
    done.elapsed = time.monotonic() - started
    return done


def test_second_make_dev_refuses_and_sigterm_stops_the_first(tmp_path, sandbox):
    port = free_port()
    env = _env(tmp_path, sandbox)
    log = open(tmp_path / "first.log", "w+")
    first = subprocess.Popen(
        [*DEVSTACK, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for(lambda: "Dagster UI:" in (tmp_path / "first.log").read_text() or first.poll() is not None,
                 timeout=240, what="the first stack to come up")
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        stack_pids = descendants(first.pid) + [first.pid]

        # the same port: refused in one line, nothing started
        same_port = _second(env, port)
        assert same_port.returncode != 0 and same_port.elapsed < scaled(30)
        lines = [line for line in (same_port.stdout + same_port.stderr).splitlines() if line.strip()]
        assert len(lines) == 1 and "Dagster home" in lines[0] and "already run" in lines[0], lines
        # another port, but the same Dagster home: a second daemon would run the schedules twice
        other_port = _second(env, free_port())
        assert other_port.returncode != 0 and "already run on the Dagster home" in other_port.stderr
        assert "Dagster UI:" not in other_port.stdout
        # another home, the first one's port
        elsewhere = _second(_env(tmp_path, sandbox, dagster_home=tmp_path / "other-home"), port)
        assert elsewhere.returncode != 0 and f"port {port}" in elsewhere.stderr and "in use" in elsewhere.stderr
        assert not (tmp_path / "other-home" / "history").exists()  # no Dagster storage was created

        # SIGTERM (a process manager's stop) ends it within seconds, cleanly
        first.send_signal(signal.SIGTERM)
        started = time.monotonic()
        first.wait(timeout=scaled(60))
        assert time.monotonic() - started < scaled(20)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    output = (tmp_path / "first.log").read_text()
    assert first.returncode == 0, output
    assert "Traceback" not in output, output
    assert "will not be used" not in output  # no dagster.yaml warning: the stack runs from its Dagster home
    assert "superseded" not in output.lower()  # dg dev, not the deprecated dagster dev
    wait_for(lambda: not [p for p in stack_pids if _alive(p)], timeout=20, what="every process of the stack to end")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False
