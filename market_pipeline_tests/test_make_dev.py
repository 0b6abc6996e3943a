"""`make dev` as a process manager or a script stops it: a signal to make's own PID (SIGTERM, which
GNU make passes on, and SIGINT, which it does not) stops the whole stack within seconds, with no
traceback and nothing left running; the daemon logs at WARNING, the webserver's start line and the
URL stay."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from market_pipeline.devtools.processes import _alive, descendants, free_port
from market_pipeline_tests.dagster_helpers import wait_for
from market_pipeline_tests.fresh_copy import PROJECT, VENV_BIN, interruptible
from market_pipeline_tests.waiting import scaled

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_makes_pid_stops_make_dev(tmp_path, sig):
    port = free_port()
    # a shell's environment: not a sub-make of `make test` (MAKELEVEL, MAKEFLAGS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYGON_", "MASSIVE_", "DAGSTER_HOME", "MAKE", "MFLAGS"))}
    env.update(MARKET_PIPELINE_HOME=str(tmp_path / "home"), MARKET_PIPELINE_DB_URL=f"sqlite:///{tmp_path / 'w.sqlite'}")
    log_path = tmp_path / "make-dev.log"
    venv = VENV_BIN.parent
    with open(log_path, "w") as log:
        make = subprocess.Popen(
            ["make", "-o", f"{venv}/.installed-market-pipeline", "dev", f"VENV={venv}", f"DEV_ARGS=--port {port}"],
            cwd=PROJECT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=interruptible,  # as from a terminal, even when the suite runs with SIGINT ignored (`make test &`)
        )
    stack: list[int] = []
    try:
        wait_for(lambda: "Dagster UI:" in log_path.read_text() or make.poll() is not None, timeout=240,
                 what="make dev to serve the UI")
        assert make.poll() is None, log_path.read_text()
        stack = descendants(make.pid)
        assert len(stack) >= 4  # devstack, dg dev, webserver, daemon (and the code server)
        os.kill(make.pid, sig)  # make's own PID, not its process group
        make.wait(timeout=scaled(90))
        wait_for(lambda: not [p for p in stack if _alive(p)], timeout=30, what="every process of the stack to end")
    finally:
        for pid in [make.pid, *stack]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        make.wait()
    output = log_path.read_text()
    assert "Traceback" not in output, output
    assert "Stopping the Dagster UI and daemon" in output
    # the daemon at WARNING: no INFO line per sensor and run-queue tick; the webserver's start line and the URL stay
    assert "SensorDaemon" not in output and "QueuedRunCoordinatorDaemon" not in output, output
    assert f"Serving dagster-webserver on http://127.0.0.1:{port}" in output
    assert f"Dagster UI: http://127.0.0.1:{port}" in output
