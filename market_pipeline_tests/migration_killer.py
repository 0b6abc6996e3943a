"""A process that migrates fresh SQLite warehouses and SIGKILLs itself at chosen points of the upgrade.

    python -m market_pipeline_tests.migration_killer FOLDER kill P1 P2 ...  -> {"P1": "killed", ...}
    python -m market_pipeline_tests.migration_killer FOLDER sweep FIRST STEP
        -> {"statements": N, "outcomes": {...}}: points 1..FIRST, then every STEP-th, then "commit"

`sweep` first migrates FOLDER/count.sqlite to count the SQL statements the upgrade sends. `kill`
forks one child per point P (this process is single-threaded: forking is safe); the child opens
FOLDER/killed-P.sqlite with the project's `get_engine` (which upgrades it) and kills itself with
SIGKILL just before its P-th statement is sent, or, for P = "commit", just before the upgrade's
transaction commits: the same as a user's kill -9 landing there, but at an exact place.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import sqlalchemy as sa

from market_pipeline.warehouse.engine import get_engine


def _count(folder: Path) -> int:
    path = folder / "count.sqlite"
    sent = []

    def count(conn, *_args) -> None:
        if conn.engine.url.database == str(path):  # the warehouse's statements only
            sent.append(1)

    sa.event.listen(sa.Engine, "before_cursor_execute", count)
    get_engine(f"sqlite:///{path}")
    sa.event.remove(sa.Engine, "before_cursor_execute", count)
    return len(sent)


def _die_at(point: str, path: Path) -> None:
    def die(conn, *_args) -> None:
        if conn.engine.url.database == str(path):
            os.kill(os.getpid(), signal.SIGKILL)

    if point == "commit":
        sa.event.listen(sa.Engine, "commit", die)
        return
    sent = [0]

    def before(conn, *_args) -> None:
        if conn.engine.url.database == str(path):
            sent[0] += 1
            if sent[0] == int(point):
                die(conn)

    sa.event.listen(sa.Engine, "before_cursor_execute", before)


def _kill(folder: Path, points: list[str]) -> dict[str, str]:
    outcomes = {}
    for point in points:
        pid = os.fork()
        if pid == 0:  # the child: upgrade a fresh warehouse and die at `point`
            path = folder / f"killed-{point}.sqlite"
            try:
                _die_at(point, path)
                get_engine(f"sqlite:///{path}")
            finally:
                os._exit(0)  # only reached when the upgrade had fewer statements than `point`
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        outcomes[point] = "killed" if killed else f"finished ({status})"
    return outcomes


def main(argv: list[str]) -> None:
    folder, mode, *points = argv
    if mode == "sweep":
        first, step = int(points[0]), int(points[1])
        statements = _count(Path(folder))
        points = [str(p) for p in range(1, statements + 1) if p <= first or p % step == 0] + ["commit"]
        print(json.dumps({"statements": statements, "outcomes": _kill(Path(folder), points)}))
    else:
        print(json.dumps(_kill(Path(folder), points)))


if __name__ == "__main__":
    main(sys.argv[1:])
