"""Shared plumbing for the benchmark suite: symbols, a sandbox in its own process, measured child
processes, fresh warehouses, repetition statistics and a description of the machine.

The sandbox always runs in a separate process (never in the process being measured), so a
measured loop never shares its interpreter lock with the HTTP server feeding it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLI = str(BIN / "market-pipeline")
SANDBOX_API_KEY = "sandbox-key"  # market_pipeline.sandbox.SANDBOX_API_KEY (not imported here: keep this light)
ENV_CLEARED = (
    "POLYGON_API_KEY", "MASSIVE_API_KEY", "POLYGON_BASE_URL", "POLYGON_REQUESTS_PER_MINUTE",
    "MARKET_PIPELINE_DB_URL", "MARKET_PIPELINE_HOME", "DAGSTER_HOME",
)


# ---- symbols ------------------------------------------------------------------------------------
def stock_tickers(count: int, seed: int = 6) -> list[str]:
    """`count` unique, valid, letters-only stock tickers of 2-5 characters, deterministic for `seed`.

    Tickers of the sandbox's default universe are avoided so every benchmark symbol is new.
    """
    rng = random.Random(seed)
    reserved = {"AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "META", "TSLA", "NFLX", "INTC", "PEP", "JPM", "JNJ",
                "XOM", "UNH", "DIS", "SPY", "QQQ", "IWM", "PG", "HD", "KO", "V"}
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        ticker = "".join(rng.choices(string.ascii_uppercase, k=rng.choice((2, 3, 3, 4, 4, 4, 5, 5))))
        if ticker not in seen and ticker not in reserved:
            seen.add(ticker)
            out.append(ticker)
    return out


def crypto_pairs(count: int, seed: int = 7) -> list[str]:
    """`count` unique crypto pairs (base of 3-5 letters + USD), stored form (no X: prefix)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        pair = "".join(rng.choices(string.ascii_uppercase, k=rng.choice((3, 4, 5)))) + "USD"
        if pair not in seen and pair not in {"BTCUSD", "ETHUSD", "SOLUSD"}:
            seen.add(pair)
            out.append(pair)
    return out


def universe(count: int, crypto_share: float = 0.0) -> list[tuple[str, str]]:
    """(symbol, asset_class) pairs: `count` symbols, a `crypto_share` of them crypto pairs."""
    n_crypto = int(round(count * crypto_share))
    return [(s, "stock") for s in stock_tickers(count - n_crypto)] + [(s, "crypto") for s in crypto_pairs(n_crypto)]


def start_date_for(years: int, today: dt.date | None = None) -> dt.date:
    today = today or dt.date.today()
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


# ---- the sandbox in its own process ------------------------------------------------------------
class SandboxProcess:
    """A `SandboxServer` (no rate limit, no faults) in a child process (benchmarks.sandbox_worker),
    driven with one JSON line per command over its stdin/stdout."""

    def __init__(self, page_size: int | None = None):
        self.page_size = page_size
        self.url: str | None = None
        self._process: subprocess.Popen | None = None

    def start(self) -> "SandboxProcess":
        argv = [sys.executable, "-m", "benchmarks.sandbox_worker"]
        if self.page_size:
            argv += ["--page-size", str(self.page_size)]
        self._process = subprocess.Popen(
            argv, cwd=REPO, env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the sandbox process exited before it served")
        self.url = json.loads(line)["url"]
        return self

    def _call(self, command: str, args: Any = None) -> Any:
        self._process.stdin.write(json.dumps({"command": command, "args": args}) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the sandbox process died during {command!r}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"sandbox {command}: {answer['error']}")
        return answer.get("result")

    def add(self, symbols: Sequence[tuple[str, str]]) -> None:
        """Add (symbol, asset_class) pairs to the sandbox's universe (reference and grouped endpoints)."""
        stocks = [s for s, a in symbols if a != "crypto"]
        crypto = [f"X:{s}" for s, a in symbols if a == "crypto"]
        if stocks:
            self._call("add_to_universe", [stocks, "stocks"])
        if crypto:
            self._call("add_to_universe", [crypto, "crypto"])

    def warm(self, symbols: Sequence[tuple[str, str]]) -> float:
        """Render every symbol's series now (the sandbox caches them), so timed runs measure us, not it."""
        return self._call("warm", [f"X:{s}" if a == "crypto" else s for s, a in symbols])

    def counts(self) -> dict[str, int]:
        return self._call("counts")

    def counts_by_class(self) -> dict[str, int]:
        """Range requests per asset class and grouped requests per market since the last reset."""
        return self._call("counts_by_class")

    def reset_counts(self) -> None:
        self._call("reset")

    def set_latency(self, ms: float) -> None:
        """Slow every answer by `ms` milliseconds (the real API answers in 100-300 ms)."""
        self._call("set_latency", ms)

    def set_now(self, when: dt.datetime | None) -> None:
        """Freeze the sandbox's clock at `when` (tz-aware; None: the real clock again)."""
        self._call("set_now", None if when is None else when.isoformat())

    def stop(self) -> None:
        if self._process is None:
            return
        try:
            self._call("stop")
        except (BrokenPipeError, OSError, RuntimeError, ValueError):
            pass
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> "SandboxProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- environments and fresh homes ---------------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any inherited key, endpoint, warehouse or Dagster home."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_CLEARED}
    env["PYTHONWARNINGS"] = "ignore"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def pipeline_env(home: Path, sandbox_url: str, db_url: str | None = None) -> dict[str, str]:
    """The environment of a pipeline process: a private home, the sandbox, no pacing."""
    env = clean_env(
        MARKET_PIPELINE_HOME=str(home),
        POLYGON_API_KEY=SANDBOX_API_KEY,
        POLYGON_BASE_URL=sandbox_url,
        POLYGON_REQUESTS_PER_MINUTE="0",
    )
    if db_url:
        env["MARKET_PIPELINE_DB_URL"] = db_url
    return env


def sqlite_url(home: Path) -> str:
    """The default warehouse of a home folder (what settings.default_db_url() gives there); its folder
    is created here, as the pipeline creates a new SQLite warehouse only in a folder that exists."""
    (home / "data").mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'data' / 'warehouse.sqlite'}"


@contextmanager
def fresh_home(prefix: str = "bench-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def register(db_url: str, symbols: Sequence[tuple[str, str]], start: dt.date) -> None:
    """Track `symbols` in the warehouse at `db_url` with a start date (in this process)."""
    from market_pipeline.warehouse.engine import dispose_engine
    from market_pipeline.warehouse.registry import SymbolRegistry

    registry = SymbolRegistry(db_url)
    by_class: dict[str, list[str]] = {}
    for symbol, asset_class in symbols:
        by_class.setdefault(asset_class, []).append(symbol)
    for asset_class, names in by_class.items():
        for i in range(0, len(names), 2000):
            registry.add(names[i : i + 2000], asset_class, start)
    dispose_engine(db_url)  # release the file before a child process uses it


def stored_bars(db_url: str) -> int:
    from market_pipeline.warehouse.engine import dispose_engine
    from market_pipeline.warehouse.store import BarStore

    total = sum(n for n, _, _ in BarStore(db_url).summary().values())
    dispose_engine(db_url)
    return total


# ---- measured child processes ---------------------------------------------------------------------
@dataclass
class Measured:
    argv: list[str]
    seconds: float
    returncode: int
    max_rss_mb: float  # the child's own peak resident set (wait4's ru_maxrss)
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0  # user + system CPU of the child and the children it waited for (wait4)

    def check(self) -> "Measured":
        if self.returncode != 0:
            tail = "\n".join((self.stderr or self.stdout).splitlines()[-25:])
            raise RuntimeError(f"{' '.join(self.argv[:3])} ... exited {self.returncode}:\n{tail}")
        return self

    def json(self) -> Any:
        """The last line of stdout as JSON (worker scripts print their result there)."""
        return json.loads(self.stdout.strip().splitlines()[-1])


def run_measured(argv: Sequence[str], env: dict[str, str], timeout: float = 7200, cwd: Path = REPO) -> Measured:
    """Run a command to completion; wall time and its own peak RSS (not its parent's, not siblings')."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(list(argv), seconds, process.returncode, usage.ru_maxrss / 1024.0, out.read(), err.read(),
                        usage.ru_utime + usage.ru_stime)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# ---- repetitions ------------------------------------------------------------------------------------
@dataclass
class Stat:
    """Median, min and max of repeated measurements."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def lo(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def hi(self) -> float:
        return max(self.values) if self.values else float("nan")

    def fmt(self, digits: int = 2, unit: str = "") -> str:
        if not self.values:
            return "n/a"
        if len(self.values) == 1:
            return f"{self.median:,.{digits}f}{unit}"
        return f"{self.median:,.{digits}f}{unit} ({self.lo:,.{digits}f}–{self.hi:,.{digits}f})"


def repeat(n: int, fn: Callable[[int], dict[str, float]], log: Callable[[str], None] | None = None) -> dict[str, Stat]:
    """Call fn(i) n times; each call returns named numbers, gathered into one Stat per name."""
    out: dict[str, Stat] = {}
    for i in range(n):
        values = fn(i)
        for name, value in values.items():
            out.setdefault(name, Stat()).values.append(float(value))
        if log:
            log("  run %d/%d: %s" % (i + 1, n, ", ".join(f"{k}={v:,.2f}" for k, v in values.items() if isinstance(v, (int, float)))))
    return out


# ---- the machine -------------------------------------------------------------------------------------
def _meminfo_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        return None
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, str]:
    from importlib.metadata import version

    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    memory = _meminfo_gb()
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "cpu": _cpu_model(),
        "cores": f"{_usable_cores()} usable ({os.cpu_count()} online)",
        "memory": f"{memory:.1f} GB" if memory else "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "dagster": version("dagster"),
        "load average at start (1/5/15 min)": load,
    }
