"""`market-pipeline daemon`: Dagster's daemon (`dagster-daemon run`) with a short backfill iteration.

Dagster 1.13's backfill daemon sleeps a fixed 30 s between iterations
(`dagster._daemon.backfill.execute_backfill_iteration_loop` reads
`dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS` each time it sleeps); no dagster.yaml
key or environment variable changes it. So a backfill launched from the UI waits up to 30 s before
its first run is submitted, and up to 30 s after its last run ends before it is marked complete.

This entry point sets that interval to MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS (default 2) and then
runs Dagster's own daemon command, unchanged otherwise:

    market-pipeline daemon                                   # = dagster-daemon run -w <project>/workspace.yaml
    market-pipeline daemon run -w /srv/workspace.yaml        # any `dagster-daemon run` option
    python -m market_pipeline.devtools.daemon run ...        # what `make dev` (dev.py) starts

The interval is Dagster's only use of that constant besides the legacy (non-sensor) auto-materialize
tick, which this project does not use (its automation condition sensor has its own interval). The
other daemons keep their own settings (the run queue: `run_coordinator.config.dequeue_interval_seconds`
in dagster.yaml; sensors: their `minimum_interval_seconds`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from market_pipeline import settings

PROG = "market-pipeline daemon"


def apply_backfill_interval(seconds: float) -> None:
    """Make the backfill daemon of this process iterate every `seconds` (Dagster's default is 30)."""
    from dagster._daemon import backfill, controller

    if not hasattr(controller, "DEFAULT_DAEMON_INTERVAL_SECONDS") or not hasattr(
        backfill, "execute_backfill_iteration_loop"
    ):  # a Dagster release that moved it: fail loudly rather than silently keep 30 s
        raise RuntimeError(
            "this Dagster release has no dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS: "
            "market_pipeline.devtools.daemon needs updating"
        )
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = seconds


def dagster_daemon_args(argv: Sequence[str]) -> list[str]:
    """`dagster-daemon` arguments: `run` when no subcommand is given, and the project's workspace.yaml
    when `run` names no code location (as `dagster-daemon run` would look for one in the current folder)."""
    args = list(argv)
    if not args or args[0].startswith("-"):
        args = ["run", *args]
    if args[0] == "run":
        targets = ("-w", "--workspace", "-m", "--module-name", "-f", "--python-file", "--grpc-port",
                   "--grpc-socket", "--grpc-host", "--empty-workspace", "--package-name",
                   "--autoload-defs-module-name")
        named = any(a in targets or a.split("=", 1)[0] in targets for a in args[1:])
        workspace = settings.project_dir() / "workspace.yaml"
        if not named and "--help" not in args and workspace.exists():
            args += ["-w", str(workspace)]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = dagster_daemon_args(sys.argv[1:] if argv is None else argv)
    try:
        settings.validate()
        seconds = settings.backfill_interval_seconds()
    except settings.SettingsError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    if args[0] == "run" and "--help" not in args:
        from market_pipeline.devtools.instance import DagsterStorageError, prepare_dagster_home

        try:  # the project's home (and dagster.yaml) when DAGSTER_HOME is unset
            prepare_dagster_home(PROG)
        except DagsterStorageError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
    apply_backfill_interval(seconds)
    print(
        f"{PROG}: the backfill daemon iterates every {seconds:g} s (MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS; "
        "Dagster's default is 30)",
        file=sys.stderr,
        flush=True,
    )
    from dagster._daemon.cli import cli

    try:
        cli.main(args=args, prog_name=PROG, obj={})
    except SystemExit as exc:  # click ends with sys.exit
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
