"""The Dagster home of a Dagster command run in the project folder without DAGSTER_HOME.

`dagster dev`, `dg dev`, `dg check defs` and `dg list defs` then keep their storage in a temporary
folder Dagster makes in the current folder (`.tmp_dagster_home_*`, deleted when the command exits),
configured by the `dagster.yaml` of the current folder: the project's. `make dev` and the CLI use the
project's home folder instead. When such an instance opens, one line (Dagster's INFO log, which
`dagster dev` shows) says what differs from `make dev`.
"""

from __future__ import annotations

import logging
import os

TEMPORARY_HOME_PREFIX = ".tmp_dagster_home_"  # dagster._cli.utils.TMP_DAGSTER_HOME_PREFIX
NOTED = "MARKET_PIPELINE_TEMPORARY_HOME_NOTED"  # inherited by the webserver and daemon: one line per session


def is_temporary_home(root: str) -> bool:
    return os.path.basename(os.path.normpath(root)).startswith(TEMPORARY_HOME_PREFIX)


def temporary_home_note(root: str) -> str:
    return (
        f"market_pipeline: DAGSTER_HOME is not set, so this instance keeps its runs in {root}, which Dagster "
        "deletes on exit (the project's dagster.yaml is in force); `make dev` keeps them in "
        ".market_pipeline/dagster/, serves the sandbox when POLYGON_API_KEY is unset and starts backfills "
        "within 2 s instead of 30 s"
    )


def note_temporary_home(root: str) -> None:
    """Log the note once per process tree when `root` is a temporary home Dagster made."""
    if not is_temporary_home(root) or os.environ.get(NOTED):
        return
    os.environ[NOTED] = root
    logging.getLogger("dagster").info(temporary_home_note(root))
