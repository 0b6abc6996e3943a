"""This process's own pacer, for a client without the deployment-wide budget
(`market_pipeline.warehouse.rate_limit.SharedRateLimiter`, what the pipeline uses)."""

from __future__ import annotations

import threading
import time


class Pacer:
    """Spaces requests evenly: at most `per_minute` a minute from this process (0: no pacing)."""

    def __init__(self, per_minute: int):
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event | None = None) -> float:
        """Block until this process's next request may start (cut short when `stop` is set)."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = time.monotonic()
            delay = max(0.0, self._next - now)
            self._next = max(now, self._next) + self.interval
        if delay:
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
        return delay


_pacers: dict[tuple[str, int], Pacer] = {}
_pacers_lock = threading.Lock()


def shared_pacer(base_url: str, per_minute: int) -> Pacer:
    """One pacer per (host, plan rate) per process, shared by every client in it."""
    with _pacers_lock:
        return _pacers.setdefault((base_url, per_minute), Pacer(per_minute))
