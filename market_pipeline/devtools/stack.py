"""The Dagster webserver and daemon (`dg dev`, with the project's daemon: devtools/dev.py) as one object: start, talk GraphQL, stop.

`make dev` runs one on http://127.0.0.1:3000; the full-stack test and the UI-path benchmark run one in
a temporary home on a free port. It talks to the webserver exactly as the UI does (the same GraphQL
mutations), so what works here works from the browser.

    stack = DagsterStack(home, env).start()
    backfill_id = stack.launch_partition_backfill()        # "Materialize all" -> Launch backfill
    status = stack.wait_backfill(backfill_id, timeout=300)  # "COMPLETED_SUCCESS"
    stack.stop()                                            # nothing left running

`dg dev` runs in its own session and process group, from the Dagster home folder (so the instance
configuration in force is that folder's dagster.yaml, and Dagster has no other dagster.yaml in sight
to warn about); `stop()` interrupts it (it shuts its webserver, daemon, code server and run workers
down), then SIGTERM and SIGKILL any process of the stack still alive, and returns only when none is.

One stack per Dagster home and per port: `start()` refuses, before starting anything, when the port is
taken or another stack holds the home's lock file (two daemons on one home would both run schedules).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import requests

from market_pipeline import settings
from market_pipeline.devtools.graphql import (
    BACKFILL_STATUS_QUERY,
    DAEMON_HEALTH_QUERY,
    LAUNCH_BACKFILL_MUTATION,
    LAUNCH_RUN_MUTATION,
    RUN_STATUS_QUERY,
    WORKSPACE_QUERY,
)
from market_pipeline.devtools.processes import (  # noqa: F401  (descendants, group_members: used by tests)
    _alive,
    _signal,
    _wait_gone,
    descendants,
    free_port,
    group_members,
    port_in_use,
)

BACKFILL_TERMINAL = frozenset({"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"})
RUN_TERMINAL = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


class StackError(RuntimeError):
    """The stack could not start, or the webserver answered with an error."""


LOCK_FILE = ".dev-stack.lock"



class DagsterStack:
    """`dagster dev` (webserver, daemon, one code server) for the project's workspace.

    `home` is the Dagster home (DAGSTER_HOME) unless `env` names one: `env["DAGSTER_HOME"]` wins, and
    when `env["MARKET_PIPELINE_HOME"]` is `home` the Dagster home is `home/dagster`, where the
    project's CLI keeps it (settings.ensure_dagster_home). The project's dagster.yaml is copied in
    when the home has none. `env` is the environment of every process of the stack (the Polygon
    key or sandbox URL, the warehouse URL). `port` None picks a free port.
    """

    def __init__(
        self,
        home: Path,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        workspace: Path | None = None,
        log_path: Path | None = None,
        daemon_log_level: str = "warning",
    ):
        self.home = Path(home)
        self.env = dict(os.environ if env is None else env)
        self.host = host
        self.port = port or free_port(host)
        self.workspace = Path(workspace or settings.project_dir() / "workspace.yaml")
        self.log_path = log_path  # None: the stack writes to this process's stdout/stderr
        self.daemon_log_level = daemon_log_level  # the webserver logs at INFO (its start line names the URL)
        self.dagster_home = self._resolve_dagster_home()
        self.location_name: str | None = None
        self.repository_name: str | None = None
        self.process: subprocess.Popen | None = None
        self._log: IO | None = None
        self._lock: IO | None = None
        self._session = requests.Session()

    def _resolve_dagster_home(self) -> Path:
        if self.env.get("DAGSTER_HOME"):
            return Path(self.env["DAGSTER_HOME"])
        project_home = self.env.get("MARKET_PIPELINE_HOME")
        if project_home and Path(project_home).resolve() == self.home.resolve():
            return self.home / "dagster"
        return self.home

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "DagsterStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- lifecycle ----------------------------------------------------------------------------
    def command(self) -> list[str]:
        # `dg dev` with the project's daemon (devtools/dev.py): backfills iterate every
        # MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS instead of Dagster's 30 s
        return [sys.executable, "-m", "market_pipeline.devtools.dev", "-w", str(self.workspace.resolve()),
                "-h", self.host, "-p", str(self.port), "--daemon-log-level", self.daemon_log_level]

    def claim(self) -> None:
        """Take the Dagster home's lock and check the port; StackError (nothing started) if either is taken."""
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        lock = open(self.dagster_home / LOCK_FILE, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            owner = lock.read().strip() or "unknown"
            lock.close()
            raise StackError(
                f"another Dagster UI and daemon (pid {owner}) already run on the Dagster home {self.dagster_home}: "
                "stop it first (Ctrl-C in its terminal), or use another DAGSTER_HOME"
            ) from None
        if port_in_use(self.host, self.port):
            lock.close()
            raise StackError(
                f"port {self.port} on {self.host} is in use (another `make dev`?): stop it, or choose another port "
                "with `python -m market_pipeline.devtools.devstack --port N`"
            )
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def start(self, timeout: float = 180.0, wait_for_daemon: bool = True) -> "DagsterStack":
        """Start `dagster dev`; return once GraphQL answers, the code location is loaded and (by
        default) every required daemon reports healthy. Raises StackError (and stops) otherwise."""
        if self.process is not None:
            raise StackError("the stack is already running")
        if self._lock is None:
            self.claim()
        config = self.dagster_home / "dagster.yaml"
        if not config.exists():
            shutil.copyfile(settings.project_dir() / "dagster.yaml", config)
        env = {**self.env, "DAGSTER_HOME": str(self.dagster_home)}
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(),
            env=env,
            cwd=self.dagster_home,  # Dagster warns about a dagster.yaml in its working folder that is not DAGSTER_HOME's
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
            start_new_session=True,  # our own process group: the terminal's Ctrl-C reaches us, not it
        )
        try:
            deadline = time.monotonic() + timeout
            self._wait_for_location(deadline)
            if wait_for_daemon:
                self._wait_for_daemon(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _check_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise StackError(f"dagster dev exited (code {code}) while starting{self._log_tail()}")

    def _wait_for_location(self, deadline: float) -> None:
        last = "no answer from the webserver"
        while time.monotonic() < deadline:
            self._check_running()
            try:
                data = self.graphql(WORKSPACE_QUERY, timeout=5)
            except (requests.RequestException, StackError) as exc:
                last = str(exc)
                time.sleep(0.5)
                continue
            workspace = data["workspaceOrError"]
            for entry in workspace.get("locationEntries") or []:
                location = entry.get("locationOrLoadError") or {}
                if location.get("__typename") == "PythonError":
                    raise StackError(f"code location {entry['name']} failed to load: {location['message']}")
                if location.get("__typename") == "RepositoryLocation":
                    self.location_name = location["name"]
                    self.repository_name = location["repositories"][0]["name"]
                    return
            last = f"code location loading ({[e.get('loadStatus') for e in workspace.get('locationEntries') or []]})"
            time.sleep(0.5)
        raise StackError(f"the stack did not come up in time: {last}{self._log_tail()}")

    def _wait_for_daemon(self, deadline: float) -> None:
        unhealthy: list[str] = []
        while time.monotonic() < deadline:
            self._check_running()
            statuses = self.graphql(DAEMON_HEALTH_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
            unhealthy = [s["daemonType"] for s in statuses if s["required"] and not s["healthy"]]
            if statuses and not unhealthy:
                return
            time.sleep(0.5)
        raise StackError(f"daemons not healthy in time: {', '.join(unhealthy)}{self._log_tail()}")

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until `dagster dev` exits (its return code) or `timeout` passes (None)."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30.0) -> None:
        """Interrupt `dagster dev` and wait; then SIGTERM, then SIGKILL whatever of it is left."""
        process, self.process = self.process, None
        if process is None:
            self.release()
            return
        group = process.pid  # start_new_session: the group id is the leader's pid
        tree = descendants(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # dagster dev shuts its services down on Ctrl-C
            try:
                process.wait(timeout)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):  # too slow, or a second Ctrl-C
                self._kill_group(group, signal.SIGTERM)
                try:
                    process.wait(5)
                except (subprocess.TimeoutExpired, KeyboardInterrupt):
                    self._kill_group(group, signal.SIGKILL)
                    process.wait()
        survivors = [p for p in set(tree + descendants(process.pid) + group_members(group)) if _alive(p)]
        if survivors:
            self._kill_group(group, signal.SIGTERM)
            _signal(survivors, signal.SIGTERM)
            survivors = _wait_gone(survivors, 5)
        if survivors:
            self._kill_group(group, signal.SIGKILL)
            _signal(survivors, signal.SIGKILL)
            _wait_gone(survivors, 5)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._session.close()
        self.release()

    @staticmethod
    def _kill_group(group: int, sig: int) -> None:
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n--- dagster dev log (tail) ---\n" + self.log_path.read_text(errors="replace")[-chars:]

    # ---- GraphQL ------------------------------------------------------------------------------
    def graphql(self, query: str, variables: dict | None = None, *, timeout: float = 60.0) -> dict:
        """POST a query to the webserver's /graphql; returns its `data`. Raises StackError on errors."""
        response = self._session.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=timeout
        )
        try:
            body = response.json()
        except ValueError:
            raise StackError(f"GraphQL HTTP {response.status_code}: {response.text[:500]}") from None
        if body.get("errors"):
            raise StackError(f"GraphQL errors: {body['errors']}")
        if response.status_code != 200:
            raise StackError(f"GraphQL HTTP {response.status_code}: {body}")
        return body["data"]

    def launch_partition_backfill(
        self,
        asset_key: str = "ohlcv_daily",
        partition_names: list[str] | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        title: str | None = None,
    ) -> str:
        """Launch a backfill of `asset_key` (path parts joined by "/") as the UI's dialog does:
        every partition when `partition_names` is None. Returns the backfill id."""
        params: dict = {
            "assetSelection": [{"path": asset_key.split("/")}],
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        if partition_names is None:
            params["allPartitions"] = True
        else:
            params.update(partitionNames=list(partition_names), fromFailure=False)
        if title:
            params["title"] = title
        result = self.graphql(LAUNCH_BACKFILL_MUTATION, {"backfillParams": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise StackError(f"launchPartitionBackfill: {result}")
        return result["backfillId"]

    def backfill_status(self, backfill_id: str) -> str:
        result = self.graphql(BACKFILL_STATUS_QUERY, {"backfillId": backfill_id})["partitionBackfillOrError"]
        if result["__typename"] != "PartitionBackfill":
            raise StackError(f"backfill {backfill_id}: {result}")
        return result["status"]

    def wait_backfill(self, backfill_id: str, timeout: float = 600.0, poll: float = 1.0) -> str:
        """Poll until the backfill reaches a terminal status (COMPLETED_SUCCESS, COMPLETED_FAILED,
        FAILED, CANCELED, ...) and return it; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        status = None
        while True:
            status = self.backfill_status(backfill_id)
            if status in BACKFILL_TERMINAL:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"backfill {backfill_id} still {status} after {timeout:.0f}s")
            time.sleep(poll)

    def launch_run(
        self,
        job_name: str = "ohlcv_daily_job",
        *,
        partition_key: str | None = None,
        partition_range: tuple[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        run_config: dict | None = None,
    ) -> str:
        """Launch one run of a job (the UI's Launchpad); returns the run id."""
        all_tags = dict(tags or {})
        if partition_key is not None:
            all_tags["dagster/partition"] = partition_key
        if partition_range is not None:
            all_tags["dagster/asset_partition_range_start"], all_tags["dagster/asset_partition_range_end"] = partition_range
        params = {
            "selector": {
                "repositoryLocationName": self.location_name,
                "repositoryName": self.repository_name,
                "jobName": job_name,
            },
            "runConfigData": run_config or {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in all_tags.items()]},
        }
        result = self.graphql(LAUNCH_RUN_MUTATION, {"executionParams": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise StackError(f"launchRun: {result}")
        return result["run"]["runId"]

    def run_status(self, run_id: str) -> str:
        result = self.graphql(RUN_STATUS_QUERY, {"runId": run_id})["runOrError"]
        if result["__typename"] != "Run":
            raise StackError(f"run {run_id}: {result}")
        return result["status"]

    def wait_run(self, run_id: str, timeout: float = 300.0, poll: float = 0.5) -> str:
        """Poll until the run is SUCCESS, FAILURE or CANCELED and return it; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.run_status(run_id)
            if status in RUN_TERMINAL:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} still {status} after {timeout:.0f}s")
            time.sleep(poll)
