"""`make dev`: the Dagster UI and daemon on http://127.0.0.1:3000 with the project's instance.

With no POLYGON_API_KEY the built-in sandbox serves synthetic bars on a loopback port for the
lifetime of the stack, and the code location talks to it (no pacing, as the sandbox has no limit).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from market_pipeline import settings


def dagster_dev_command(host: str, port: int) -> list[str]:
    dagster = Path(sys.executable).with_name("dagster")
    return [str(dagster), "dev", "-w", str(settings.project_dir() / "workspace.yaml"), "-h", host, "-p", str(port)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m market_pipeline.devstack", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    home = settings.ensure_dagster_home()
    env = dict(os.environ, DAGSTER_HOME=str(home))
    sandbox = None
    if not settings.polygon_api_key():
        from market_pipeline.sandbox import SANDBOX_API_KEY, SandboxServer

        sandbox = SandboxServer(host="127.0.0.1", port=0).start()
        env.update(POLYGON_API_KEY=SANDBOX_API_KEY, POLYGON_BASE_URL=sandbox.url, POLYGON_REQUESTS_PER_MINUTE="0")
        print(f"No POLYGON_API_KEY set: the built-in sandbox serves SYNTHETIC bars at {sandbox.url}", flush=True)
    print(f"Dagster home: {home}\nWarehouse: {settings.db_url()}\nUI: http://{args.host}:{args.port}", flush=True)
    process = subprocess.Popen(dagster_dev_command(args.host, args.port), env=env, cwd=settings.project_dir())
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        return process.wait()
    finally:
        if sandbox is not None:
            sandbox.stop()


if __name__ == "__main__":
    sys.exit(main())
