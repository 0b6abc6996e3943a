"""`dg dev` whose daemon is the project's (`market_pipeline.devtools.daemon`): what `make dev` and
`DagsterStack` start.

`dg dev` (Dagster's `dev_command_impl`) starts the webserver and `python -m dagster._daemon run ...`
as two subprocesses. This runs `dg dev` unchanged except that the daemon subprocess is
`python -m market_pipeline.devtools.daemon run ...` with the same arguments, so its backfill daemon
iterates every MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS (default 2) instead of 30 s.

    python -m market_pipeline.devtools.dev -w workspace.yaml -h 127.0.0.1 -p 3000   # any `dg dev` option
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from market_pipeline import settings

DAGSTER_DAEMON_MODULE = "dagster._daemon"
PROJECT_DAEMON_MODULE = "market_pipeline.devtools.daemon"


def with_project_daemon(command: Sequence[str]) -> list[str]:
    """`[python, -m, dagster._daemon, ...]` -> `[python, -m, market_pipeline.devtools.daemon, ...]`;
    any other command unchanged."""
    parts = list(command)
    if len(parts) >= 3 and parts[1] == "-m" and parts[2] == DAGSTER_DAEMON_MODULE:
        parts[2] = PROJECT_DAEMON_MODULE
    return parts


def use_project_daemon() -> None:
    """Make `dagster dev` / `dg dev` in this process start the project's daemon."""
    import dagster._cli.dev as dagster_dev

    original = getattr(dagster_dev, "open_ipc_subprocess", None)
    if original is None:  # a Dagster release that starts its services differently: fail loudly
        raise RuntimeError("dagster._cli.dev has no open_ipc_subprocess: market_pipeline.devtools.dev needs updating")
    if getattr(original, "market_pipeline", False):
        return

    def open_ipc_subprocess(parts, *args, **kwargs):
        return original(with_project_daemon(parts), *args, **kwargs)

    open_ipc_subprocess.market_pipeline = True  # type: ignore[attr-defined]
    dagster_dev.open_ipc_subprocess = open_ipc_subprocess


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings.backfill_interval_seconds()  # refuse a bad value before anything starts
    except settings.SettingsError as exc:
        print(f"market-pipeline dev: error: {exc}", file=sys.stderr)
        return 2
    use_project_daemon()
    from dagster_dg_cli.cli import ENV_PREFIX, cli

    args = ["dev", *(sys.argv[1:] if argv is None else argv)]
    try:
        cli.main(args=args, prog_name="dg", auto_envvar_prefix=ENV_PREFIX)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
