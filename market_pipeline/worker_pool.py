"""Worker processes for CPU work a run would otherwise do on its own core, under its one GIL.

`WorkerPool` is a `concurrent.futures.ProcessPoolExecutor` started with `spawn` (nothing of the
run's threads and locks is copied) that never costs the caller its work: until a worker has started
(about a second), and for good once a worker is gone (killed, a broken pool) or hangs (no answer
within `timeout`), `submit` answers None and `wait` answers `UNAVAILABLE`, and the caller does the
work on its own thread. Closing it stops the workers; a worker whose run's process dies (even by
SIGKILL) exits within moments.

Used for the range answers' decoding (`polygon.decode_process`) and the charts of a run
(`charts.process`).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import threading
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

UNAVAILABLE = object()  # `wait`'s answer when the workers could not do the work: do it yourself
_GONE = (BrokenProcessPool, CancelledError, RuntimeError, OSError, TimeoutError)
# RuntimeError: the pool was shut down meanwhile; OSError: a pipe to a dead worker; TimeoutError: a
# worker that hangs (stopped, swapping) must not hang the run with it


def _started(modules: tuple[str, ...]) -> bool:
    """The worker's first task: import what its work needs, so `ready` means ready to work."""
    for module in modules:
        importlib.import_module(module)
    return True


def _exit_with_parent() -> None:
    """In the worker: end it when the run's process is gone. A pool worker waits on its task pipe,
    whose write end it holds itself, so a parent killed with SIGKILL would leave it running for
    good; the spawn parent's sentinel (a pipe the parent holds open) reaches EOF when it dies."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class WorkerPool:
    """`processes` worker processes (see the module docstring). `what` names them in the one log
    line said when they stop answering."""

    what = "the worker process"
    fallback = "the work is done in the run's process from now on"
    modules: tuple[str, ...] = ()  # imported by each worker before it counts as started

    def __init__(self, processes: int = 1, logger: logging.Logger | None = None, timeout: float = 60.0):
        self.log = logger or logging.getLogger("market_pipeline")
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            max_workers=max(1, processes), mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent,
        )
        self._started: Future = self._pool.submit(_started, self.modules)

    @property
    def ready(self) -> bool:
        """Whether work goes to the workers now (started, not broken, not closed)."""
        return self._pool is not None and self._started.done() and not self._started.cancelled() and self._started.exception() is None

    def submit(self, fn, *args, **kwargs) -> Future | None:
        """`fn(*args, **kwargs)` on a worker (a module-level function and picklable arguments), or
        None when the caller should run it itself (not started yet, or the workers are gone)."""
        pool = self._pool
        if pool is None or not self.ready:
            return None
        try:
            return pool.submit(fn, *args, **kwargs)
        except _GONE as exc:
            self._give_up(exc)
            return None

    def wait(self, future: Future):
        """The future's result, or UNAVAILABLE when the workers could not give it (the pool broke,
        was closed, or no answer came within `timeout`). An exception `fn` raised is raised here."""
        try:
            return future.result(timeout=self.timeout)
        except _GONE as exc:
            self._give_up(exc)
            return UNAVAILABLE

    def _take_pool(self) -> ProcessPoolExecutor | None:
        """The pool, taken out of use (None when it already was): exactly one caller shuts it down."""
        with self._lock:
            pool, self._pool = self._pool, None
        return pool

    def _give_up(self, exc: BaseException) -> None:
        pool = self._take_pool()
        if pool is not None:
            why = f"no answer within {self.timeout:g} s" if isinstance(exc, TimeoutError) else type(exc).__name__
            self.log.warning(f"{self.what} stopped ({why}); {self.fallback}")
            # a hung worker would stay otherwise (ProcessPoolExecutor.kill_workers comes with Python 3.14)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                try:
                    process.kill()
                except (OSError, ValueError):  # already gone, or closed
                    pass
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the workers (work already running finishes; waiting callers get UNAVAILABLE)."""
        pool = self._take_pool()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
