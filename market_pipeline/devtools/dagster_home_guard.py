"""Dagster's own commands (`dg`, `dagster`, `dagster-daemon`, `dagster-webserver`) with a DAGSTER_HOME
that cannot be used stop with one line naming the variable, instead of Dagster's traceback.

Dagster reads DAGSTER_HOME before any code of the project runs, so the check runs when the interpreter
starts: `make install` writes `market_pipeline_dagster_home.pth` into the virtualenv's site-packages
(`python -m market_pipeline.devtools.dagster_home_guard install`). Its one line costs every other
Python process of the virtualenv one look-up of the environment; only a process that has DAGSTER_HOME
set imports this module, and only Dagster's commands are checked. Unset (or empty), DAGSTER_HOME is
left to Dagster: its commands then use a temporary home with the project's dagster.yaml.

A usable DAGSTER_HOME is an absolute path of an existing folder in which a file can be created. The
`market-pipeline` commands and `make dev` have their own check (they create a missing folder).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
from pathlib import Path

PTH_NAME = "market_pipeline_dagster_home.pth"
PTH_LINE = (
    "import os; 'DAGSTER_HOME' in os.environ and "
    "__import__('market_pipeline.devtools.dagster_home_guard', fromlist=['check']).check()\n"
)
COMMANDS = ("dg", "dagster", "dagster-daemon", "dagster-webserver", "dagster-graphql")
MODULES = ("dagster", "dagster_webserver", "dagster_graphql", "dagster_dg_cli")
EXIT_USAGE = 2


def command(argv: list[str], orig_argv: list[str]) -> str | None:
    """The Dagster command this process runs (`dg`, `dagster`, ...; `python -m dagster`), or None."""
    if not argv:
        return None
    name = os.path.basename(argv[0])
    if name in COMMANDS:
        return name
    if argv[0] == "-m" and "-m" in orig_argv[:-1]:
        module = orig_argv[orig_argv.index("-m") + 1]
        if module.split(".")[0] in MODULES:
            return f"python -m {module}"
    return None


def problem(raw: str) -> str | None:
    """Why DAGSTER_HOME=`raw` cannot be used by Dagster's commands, or None."""
    path = Path(raw).expanduser()
    if not path.is_absolute():
        return "it is not an absolute path"
    if not path.exists():
        return "the folder does not exist"
    if not path.is_dir():
        return "it is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"a file cannot be created in it ({exc.strerror or type(exc).__name__})"
    return None


def check() -> None:
    """At start-up (the .pth line): stop a Dagster command whose DAGSTER_HOME cannot be used, exit 2."""
    raw = os.environ.get("DAGSTER_HOME", "").strip()
    name = command(sys.argv, getattr(sys, "orig_argv", []))
    if not raw or name is None:
        return
    why = problem(raw)
    if why is None:
        return
    sys.stderr.write(
        f"{name}: error: DAGSTER_HOME={raw} cannot be used: {why}. Set DAGSTER_HOME to an absolute path of "
        "a folder you can write (e.g. export DAGSTER_HOME=\"$PWD/.market_pipeline/dagster\"), or unset it\n"
    )
    sys.stderr.flush()
    os._exit(EXIT_USAGE)  # an exception in a .pth line would only be printed, and start-up go on


def install() -> Path:
    """Write the .pth file into this interpreter's site-packages."""
    target = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    target.write_text(PTH_LINE)
    return target


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit(f"usage: python -m {__spec__.name} install")
    print(f"wrote {install()}")
