"""`dg dev` whose daemon is the project's (`market_pipeline.devtools.daemon`): what `make dev` and
`DagsterStack` start.

`dg dev` (Dagster's `dev_command_impl`) starts the webserver and `python -m dagster._daemon run ...`
as two subprocesses. This runs `dg dev` unchanged except that the daemon subprocess is
`python -m market_pipeline.devtools.daemon run ...` with the same arguments, so its backfill daemon
iterates every MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS (default 2) instead of 30 s, and logs at
`--daemon-log-level` (default warning: every sensor and run-queue tick is an INFO line every few
seconds) while the webserver keeps `dg dev`'s own level (its start line names the URL).

    python -m market_pipeline.devtools.dev -w workspace.yaml -h 127.0.0.1 -p 3000   # any `dg dev` option
    python -m market_pipeline.devtools.dev --daemon-log-level info ...              # the daemon's INFO lines too
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from market_pipeline import settings

DAGSTER_DAEMON_MODULE = "dagster._daemon"
PROJECT_DAEMON_MODULE = "market_pipeline.devtools.daemon"


DAEMON_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def with_project_daemon(command: Sequence[str], log_level: str | None = None) -> list[str]:
    """`[python, -m, dagster._daemon, ...]` -> `[python, -m, market_pipeline.devtools.daemon, ...]`
    (logging at `log_level` when given); any other command unchanged."""
    parts = list(command)
    if len(parts) >= 3 and parts[1] == "-m" and parts[2] == DAGSTER_DAEMON_MODULE:
        parts[2] = PROJECT_DAEMON_MODULE
        if log_level is not None and "--log-level" in parts[:-1]:
            parts[parts.index("--log-level") + 1] = log_level
    return parts


def use_project_daemon(log_level: str | None = None) -> None:
    """Make `dagster dev` / `dg dev` in this process start the project's daemon (at `log_level`)."""
    import dagster._cli.dev as dagster_dev

    original = getattr(dagster_dev, "open_ipc_subprocess", None)
    if original is None:  # a Dagster release that starts its services differently: fail loudly
        raise RuntimeError("dagster._cli.dev has no open_ipc_subprocess: market_pipeline.devtools.dev needs updating")
    if getattr(original, "market_pipeline", False):
        return

    def open_ipc_subprocess(parts, *args, **kwargs):
        return original(with_project_daemon(parts, log_level), *args, **kwargs)

    open_ipc_subprocess.market_pipeline = True  # type: ignore[attr-defined]
    dagster_dev.open_ipc_subprocess = open_ipc_subprocess


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings.backfill_interval_seconds()  # refuse a bad value before anything starts
    except settings.SettingsError as exc:
        print(f"market-pipeline dev: error: {exc}", file=sys.stderr)
        return 2
    args = list(sys.argv[1:] if argv is None else argv)
    level = "warning"
    if "--daemon-log-level" in args[:-1]:
        at = args.index("--daemon-log-level")
        level = args[at + 1].lower()
        del args[at : at + 2]
        if level not in DAEMON_LOG_LEVELS:
            print(f"market-pipeline dev: error: --daemon-log-level {level}: use one of {', '.join(DAEMON_LOG_LEVELS)}", file=sys.stderr)
            return 2
    use_project_daemon(level)
    from dagster_dg_cli.cli import ENV_PREFIX, cli

    args = ["dev", *args]
    try:
        cli.main(args=args, prog_name="dg", auto_envvar_prefix=ENV_PREFIX)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
