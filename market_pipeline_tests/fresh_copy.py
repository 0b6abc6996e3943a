"""A fresh copy of the project, as `git clone` gives it (no .venv, no home folder, no Dagster
storage), run with this suite's installed dependencies: what a newcomer's checkout looks like."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# what .gitignore keeps out of a clone, and Dagster's temporary homes
IGNORED = (".git", ".venv", ".market_pipeline", "__pycache__", ".pytest_cache", "*.egg-info", ".tmp_dagster_home_*",
           "build", "dist")


def fresh_copy(target: Path) -> Path:
    shutil.copytree(PROJECT, target, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)
    return target


def newcomer_env(copy: Path, **extra) -> dict:
    """The environment of a newcomer's shell in `copy`: no API key, no DAGSTER_HOME, no project
    variables; the copy's code first on the path, this suite's virtualenv on PATH."""
    env = {
        k: v for k, v in os.environ.items()
        # MAKELEVEL and MAKEFLAGS too: under `make test` a `make` the newcomer types would be a sub-make
        # (printing "Entering directory" lines a shell never shows)
        if not k.startswith(("MARKET_PIPELINE_", "POLYGON_", "MASSIVE_", "DAGSTER_", "MAKE", "MFLAGS"))
    }
    env.update(PYTHONPATH=str(copy), PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", COLUMNS="250")
    env.update(extra)
    return env


def interruptible() -> None:
    """For `preexec_fn` of a process a test stops with SIGINT, as Ctrl-C in a terminal would: SIGINT
    back to its default. When the suite itself runs as a shell's background job (`make test &`,
    nohup, a CI runner), SIGINT is ignored here, an ignored signal stays ignored across exec, and GNU
    make, which keeps a signal ignored at its start ignored, would never see it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
