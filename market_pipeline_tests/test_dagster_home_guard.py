"""The start-up check of Dagster's commands' DAGSTER_HOME (market_pipeline/devtools/dagster_home_guard.py):
which processes it looks at, what it calls unusable, and that `make install` put it in the virtualenv."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from market_pipeline.devtools import dagster_home_guard as guard
from market_pipeline_tests.waiting import scaled


@pytest.mark.parametrize(
    "argv, orig_argv, expected",
    [
        (["/venv/bin/dg", "check", "defs"], ["/venv/bin/python", "/venv/bin/dg", "check", "defs"], "dg"),
        (["/venv/bin/dagster-webserver"], ["python", "/venv/bin/dagster-webserver"], "dagster-webserver"),
        (["-m", "dev"], ["python", "-m", "dagster", "dev"], "python -m dagster"),
        (["-m"], ["python", "-m", "dagster_webserver"], "python -m dagster_webserver"),
        (["-m", "run"], ["python", "-m", "market_pipeline.devtools.daemon", "run"], None),
        (["/venv/bin/market-pipeline", "run"], ["python", "/venv/bin/market-pipeline", "run"], None),
        (["-c", "print(1)"], ["python", "-c", "print(1)"], None),
        ([], [], None),
    ],
)
def test_only_dagsters_commands_are_checked(argv, orig_argv, expected):
    assert guard.command(argv, orig_argv) == expected


def test_what_is_unusable(tmp_path):
    assert guard.problem(str(tmp_path)) is None
    assert guard.problem("dagster_home") == "it is not an absolute path"
    assert guard.problem(str(tmp_path / "missing")) == "the folder does not exist"
    (tmp_path / "file").write_text("")
    assert guard.problem(str(tmp_path / "file")) == "it is a file, not a folder"
    assert guard.problem("/proc/1") is not None and guard.problem("/proc/1").startswith("a file cannot be created in it")


def test_the_virtualenv_runs_the_check_at_start_up(tmp_path):
    pth = Path(sysconfig.get_paths()["purelib"]) / guard.PTH_NAME
    assert pth.read_text() == guard.PTH_LINE  # written by `make install`
    other = subprocess.run([sys.executable, "-c", "print('ok')"], env={"DAGSTER_HOME": "relative"},
                           capture_output=True, text=True, timeout=scaled(60))
    assert (other.returncode, other.stdout, other.stderr) == (0, "ok\n", "")  # not a Dagster command: untouched
    dagster = subprocess.run([sys.executable, "-m", "dagster", "--version"], env={"DAGSTER_HOME": "relative"},
                             capture_output=True, text=True, timeout=scaled(60))
    assert dagster.returncode == 2 and dagster.stderr.startswith("python -m dagster: error: DAGSTER_HOME=relative cannot be used")
