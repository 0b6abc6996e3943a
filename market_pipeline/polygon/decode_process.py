"""Decoding range answers in a separate process, so the run's own process keeps its core for storing.

With requests in flight, a run's process is CPU-bound: the fetch threads decode each answer (JSON,
the wire checks, the frame: 15-25 ms for a 20-year history) and the thread that stores them writes
the bars and records Dagster's events, all under one GIL, while the machine's other core idles.
`DecodeProcess` hands each page's raw bytes to a worker process (`concurrent.futures`, started with
`spawn`: nothing of the run's threads and locks is copied) running
`range_pages.decode_range_page`, and gives back its `RangePage`: the same function, the same result.

It never costs a bar: until the worker has started (about a second), and for good if it is gone (a
killed worker, a broken pool) or hangs (no answer within `timeout`), `decode` answers None and the
caller decodes on its own thread.
Closing it stops the worker; a worker whose run's process dies (even by SIGKILL) exits within moments.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import threading
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from market_pipeline.polygon.range_pages import RangePage, decode_range_page

log = logging.getLogger("market_pipeline.polygon")
DECODE_TIMEOUT = 60.0  # seconds a page may take in the worker (a 20-year history takes 15-25 ms)


def _started() -> bool:
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


class DecodeProcess:
    """A pool of `processes` worker processes decoding range pages (see the module docstring)."""

    def __init__(self, processes: int = 1, logger: logging.Logger | None = None, timeout: float = DECODE_TIMEOUT):
        self.log = logger or log
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            max_workers=max(1, processes), mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent,
        )
        self._started: Future = self._pool.submit(_started)
        self.decoded = 0  # pages decoded by the workers (the rest: on the caller's threads)

    @property
    def ready(self) -> bool:
        """Whether pages go to the worker now (started, not broken, not closed)."""
        return self._pool is not None and self._started.done() and not self._started.cancelled() and self._started.exception() is None

    def decode(
        self, content: bytes, asset_class: str, last_session: dt.date | None, path: str, span: tuple[dt.date, dt.date] | None = None,
    ) -> RangePage | None:
        """The page decoded by a worker; None when the caller should decode it itself (not started
        yet, or the workers are gone)."""
        pool = self._pool
        if pool is None or not self.ready:
            return None
        try:
            page = pool.submit(decode_range_page, content, asset_class, last_session, path, span).result(timeout=self.timeout)
        except (BrokenProcessPool, CancelledError, RuntimeError, OSError, TimeoutError) as exc:
            # RuntimeError: the pool was shut down meanwhile; OSError: a pipe to a dead worker;
            # TimeoutError: a worker that hangs (stopped, swapping) must not hang the run with it
            self._give_up(exc)
            return None
        with self._lock:
            self.decoded += 1
        return page

    def _take_pool(self) -> ProcessPoolExecutor | None:
        """The pool, taken out of use (None when it already was): exactly one caller shuts it down."""
        with self._lock:
            pool, self._pool = self._pool, None
        return pool

    def _give_up(self, exc: BaseException) -> None:
        pool = self._take_pool()
        if pool is not None:
            why = f"no answer within {self.timeout:g} s" if isinstance(exc, TimeoutError) else type(exc).__name__
            self.log.warning(f"the decoding process stopped ({why}); answers are decoded in the run's process from now on")
            # a hung worker would stay otherwise (ProcessPoolExecutor.kill_workers comes with Python 3.14)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                try:
                    process.kill()
                except (OSError, ValueError):  # already gone, or closed
                    pass
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the workers (pages still being decoded finish; waiting callers get None)."""
        pool = self._take_pool()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
