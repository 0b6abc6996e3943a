"""What every scenario gets: the parameters, the sandbox process, the symbols and the results."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import CLI, REPO, Measured, SandboxProcess, pipeline_env, run_measured, sqlite_url, stored_bars
from benchmarks.report import Results

_RUNS_RE = re.compile(r"completed in (\d+) run\(s\)")


@dataclass
class Bench:
    args: argparse.Namespace
    results: Results
    sandbox: SandboxProcess
    symbols: list[tuple[str, str]]  # the N symbols of the floor, main job, UI path and quality
    start: dt.date  # Y years back
    years: int
    repeats: int
    postgres: Any = None  # a started PostgresCluster with --postgres
    label: str = ""  # appended to section titles (" — full size")
    key_suffix: str = ""  # appended to section keys
    keep: dict[str, Any] = field(default_factory=dict)  # state handed from one scenario to another

    @property
    def latency_ms(self) -> float:
        return getattr(self.args, "latency_ms", 150.0)

    @property
    def in_flight(self) -> int:
        return getattr(self.args, "in_flight", 8)
    _temp: list[Path] = field(default_factory=list)
    _started: float = field(default_factory=time.perf_counter)

    def log(self, message: str) -> None:
        print(f"[{time.perf_counter() - self._started:7.1f}s] {message}", file=sys.stderr, flush=True)

    def temp_home(self, prefix: str) -> Path:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix=f"mp-bench-{prefix}-"))
        self._temp.append(path)
        return path

    def discard(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        if path in self._temp:
            self._temp.remove(path)

    def cleanup(self) -> None:
        for path in list(self._temp):
            self.discard(path)

    def warehouse_url(self, home: Path, engine: str = "sqlite") -> str:
        """A fresh warehouse: the home's SQLite file, or a new database on the throwaway PostgreSQL cluster."""
        if engine == "sqlite":
            return sqlite_url(home)
        name = f"bench_{uuid.uuid4().hex[:12]}"
        return self.postgres.create_database(name)

    def drop_warehouse(self, url: str) -> None:
        if url.startswith("postgresql"):
            from market_pipeline.warehouse.engine import dispose_engine

            dispose_engine(url)
            self.postgres.drop_database(url.rsplit("/", 1)[-1])

    def dagster_postgres_env(self, home: Path) -> tuple[dict[str, str], str]:
        """A Dagster home under `home` whose storage is a fresh database on the throwaway cluster
        (the project's dagster.postgres.yaml); returns (environment additions, database name)."""
        name = f"dagster_{uuid.uuid4().hex[:12]}"
        self.postgres.create_database(name)
        dagster_home = home / "dagster"
        dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / "dagster.postgres.yaml", dagster_home / "dagster.yaml")
        env = {
            "DAGSTER_HOME": str(dagster_home), "DAGSTER_PG_HOST": self.postgres.host, "DAGSTER_PG_PORT": str(self.postgres.port),
            "DAGSTER_PG_DB": name, "DAGSTER_PG_USER": self.postgres.user, "DAGSTER_PG_PASSWORD": "",
        }
        return env, name

    def run_main_job(
        self, home: Path, db_url: str | None = None, symbols: list[str] | None = None, dagster_postgres: bool = False,
        empty_dagster_home: bool = False,
    ) -> dict:
        """`market-pipeline run` in a child process against the sandbox; wall time, CPU, peak RSS, bars,
        runs, requests. `empty_dagster_home`: DAGSTER_HOME set to an empty folder (Dagster's default
        instance, as Dagster's docs have users set it) instead of the project's home."""
        before = self.sandbox.counts()
        env = pipeline_env(home, self.sandbox.url, db_url if db_url and db_url.startswith("postgresql") else None)
        if empty_dagster_home:
            (home / "empty-dagster-home").mkdir(parents=True, exist_ok=True)
            env["DAGSTER_HOME"] = str(home / "empty-dagster-home")
        dagster_db = None
        if dagster_postgres:
            extra, dagster_db = self.dagster_postgres_env(home)
            env.update(extra)
        try:
            measured: Measured = run_measured([CLI, "run", *(symbols or [])], env).check()
        finally:
            if dagster_db:
                self.postgres.kill_connections(dagster_db)
                self.postgres.drop_database(dagster_db)
        after = self.sandbox.counts()
        match = _RUNS_RE.search(measured.stdout)
        url = db_url or sqlite_url(home)
        def sent(*endpoints: str) -> int:
            return sum(after.get(e, 0) - before.get(e, 0) for e in endpoints)

        return {
            "seconds": measured.seconds,
            "cpu_seconds": measured.cpu_seconds,
            "bars": stored_bars(url),
            "runs": int(match.group(1)) if match else -1,
            "rss_mb": measured.max_rss_mb,
            "requests": after["total"] - before["total"],
            "range_requests": sent("aggs_range"),
            "grouped_requests": sent("grouped_stocks", "grouped_crypto"),
            "reference_requests": sent("tickers", "ticker_detail", "ticker_events"),
            "reference_pages": sent("tickers"),
            "corporate_action_requests": sent("splits", "dividends", "splits_v3", "dividends_v3"),
        }


def rate(bars: float, seconds: float) -> float:
    return bars / seconds if seconds > 0 else float("nan")


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"
