"""Dagster's own commands in a fresh copy of the project, from a shell without DAGSTER_HOME:
`dg check defs`, `dg list defs`, `dg dev` and `dagster dev` work, with no traceback and no warning,
on an instance configured by the project's dagster.yaml, and say in one line what differs from
`make dev`. A DAGSTER_HOME that cannot be used stops `make validate` with one line naming it."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import requests

from market_pipeline.devtools.processes import free_port
from market_pipeline_tests.dagster_helpers import wait_for
from market_pipeline_tests.fresh_copy import VENV_BIN, fresh_copy, interruptible, newcomer_env
from market_pipeline_tests.waiting import scaled

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    return fresh_copy(tmp_path_factory.mktemp("newcomer") / "market_pipeline")


# Dagster's own notices that say nothing about this project: `dagster dev` is superseded by `dg dev`
# (with the line of code it points at), and the daemon's first start on a new home
DAGSTER_NOTICES = ("SupersessionWarning", "return callback(*args, **kwargs)", "No cursor for event type")


def _problems(output: str) -> list[str]:
    """Tracebacks, and warnings other than Dagster's own notices above."""
    return [
        line for line in output.splitlines()
        if ("Traceback" in line or "WARNING" in line or "Warning" in line) and not any(n in line for n in DAGSTER_NOTICES)
    ]


def test_dg_check_and_list_defs_without_dagster_home(copy):
    env = newcomer_env(copy)
    checked = subprocess.run([str(VENV_BIN / "dg"), "check", "defs"], cwd=copy, env=env, capture_output=True,
                             text=True, timeout=scaled(300))
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "All definitions loaded successfully" in checked.stdout
    assert not _problems(output), output
    listed = subprocess.run([str(VENV_BIN / "dg"), "list", "defs"], cwd=copy, env=env, capture_output=True,
                            text=True, timeout=scaled(300))
    assert listed.returncode == 0 and not _problems(listed.stdout + listed.stderr), listed.stdout + listed.stderr
    assert "ohlcv_daily" in listed.stdout and "stocks_daily_refresh" in listed.stdout
    assert not list(copy.glob(".tmp_dagster_home_*"))  # Dagster's temporary home is gone


@pytest.mark.parametrize("command", [["dg", "dev"], ["dagster", "dev"]], ids=["dg dev", "dagster dev"])
def test_dev_without_dagster_home_uses_the_projects_instance_and_says_what_differs(copy, tmp_path, command):
    port = free_port()
    env = newcomer_env(copy)
    left = set(copy.glob(".tmp_dagster_home_*"))  # by an earlier test's killed process, if any
    log = open(tmp_path / "dev.log", "w+")
    process = subprocess.Popen(
        [str(VENV_BIN / command[0]), *command[1:], "-p", str(port)], cwd=copy, env=env, stdin=subprocess.DEVNULL,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=interruptible,  # Ctrl-C stops it as from a terminal, even when the suite runs with SIGINT ignored
    )

    def instance_info():
        assert process.poll() is None, (tmp_path / "dev.log").read_text()
        try:
            answer = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": "{ instance { info } }"}, timeout=5)
            return answer.json()["data"]["instance"]["info"]
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return None

    try:
        info = wait_for(instance_info, timeout=240, what=f"`{' '.join(command)}` to serve its UI")
        # the instance is the project's dagster.yaml's: the pooled event log, the run queue, the pools
        assert "PooledSqliteEventLogStorage" in info and "default_limit: 1" in info, info
        assert "max_concurrent_runs: 2" in info and "run_retries:\n  enabled: true" in info, info
        homes = [h for h in copy.glob(".tmp_dagster_home_*") if h not in left]
        assert len(homes) == 1  # Dagster's temporary home, in the project folder
        process.send_signal(signal.SIGINT)
        process.wait(timeout=scaled(60))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = (tmp_path / "dev.log").read_text()
    assert process.returncode == 0, output
    assert not _problems(output), _problems(output)
    notes = [line for line in output.splitlines() if "market_pipeline: DAGSTER_HOME is not set" in line]
    assert len(notes) == 1, output  # one line, not one per process
    assert "make dev" in notes[0] and "sandbox" in notes[0] and str(homes[0]) in notes[0]
    assert not homes[0].exists()  # removed when dev stopped


@pytest.mark.parametrize(
    "home, needle",
    [("relative/dagster", "is not an absolute path"), ("/sys/kernel", "cannot be used (Permission denied)")],
)
def test_make_validate_with_an_unusable_dagster_home_says_so_in_one_line(copy, home, needle):
    env = newcomer_env(copy, DAGSTER_HOME=home)
    done = subprocess.run(["make", "-s", "validate", f"VENV={VENV_BIN.parent}", "-o", f"{VENV_BIN.parent}/.installed-market-pipeline"],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=scaled(120))
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if not line.startswith(("make: ", "make["))]  # make's own "Error 2"
    assert ours == [ours[0]] and ours[0].startswith("make validate: error: DAGSTER_HOME=") and needle in ours[0], done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "home, needle",
    [("relative/dagster", "it is not an absolute path"), ("{tmp}/missing/dagster", "the folder does not exist"),
     ("/sys/kernel", "a file cannot be created in it (Permission denied)"), ("/etc/hostname", "it is a file, not a folder")],
)
@pytest.mark.parametrize(
    "command", [["dg", "check", "defs"], ["dagster", "instance", "info"], ["dagster-daemon", "run"]],
    ids=["dg check defs", "dagster instance info", "dagster-daemon run"],
)
def test_dagster_commands_with_an_unusable_dagster_home_say_so_in_one_line(copy, tmp_path, home, needle, command):
    """Dagster reads DAGSTER_HOME before any project code runs: the virtualenv's start-up check
    (market_pipeline/devtools/dagster_home_guard.py, installed by `make install`) stops the command
    with one line naming the variable, exit 2, and creates nothing."""
    home = home.format(tmp=tmp_path)
    env = newcomer_env(copy, DAGSTER_HOME=home)
    done = subprocess.run([str(VENV_BIN / command[0]), *command[1:]], cwd=copy, env=env, capture_output=True,
                          text=True, timeout=scaled(120))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"{command[0]}: error: DAGSTER_HOME={home} cannot be used: {needle}."), done.stderr
    assert not (copy / "relative").exists() and not (tmp_path / "missing").exists()
