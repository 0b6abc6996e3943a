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
import threading

from market_pipeline.polygon.range_pages import RangePage, decode_range_page
from market_pipeline.worker_pool import UNAVAILABLE, WorkerPool

log = logging.getLogger("market_pipeline.polygon")
DECODE_TIMEOUT = 60.0  # seconds a page may take in the worker (a 20-year history takes 15-25 ms)


class DecodeProcess(WorkerPool):
    """A pool of `processes` worker processes decoding range pages (see the module docstring)."""

    what = "the decoding process"
    fallback = "answers are decoded in the run's process from now on"
    modules = ("market_pipeline.polygon.range_pages",)

    def __init__(self, processes: int = 1, logger: logging.Logger | None = None, timeout: float = DECODE_TIMEOUT):
        super().__init__(processes, logger or log, timeout)
        self._count = threading.Lock()
        self.decoded = 0  # pages decoded by the workers (the rest: on the caller's threads)

    def decode(
        self, content: bytes, asset_class: str, last_session: dt.date | None, path: str, span: tuple[dt.date, dt.date] | None = None,
    ) -> RangePage | None:
        """The page decoded by a worker; None when the caller should decode it itself (not started
        yet, or the workers are gone)."""
        future = self.submit(decode_range_page, content, asset_class, last_session, path, span)
        page = UNAVAILABLE if future is None else self.wait(future)
        if page is UNAVAILABLE:
            return None
        with self._count:
            self.decoded += 1
        return page
