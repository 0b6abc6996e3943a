"""The resources: PolygonResource (the Dagster face of the Polygon client) and WarehouseResource
(the bar store and symbol registry).

PolygonResource:
Fields left unset are read from the environment when a run uses the resource, so the key never
enters run configuration: POLYGON_API_KEY (or MASSIVE_API_KEY), POLYGON_BASE_URL,
POLYGON_REQUESTS_PER_MINUTE, POLYGON_MAX_IN_FLIGHT (requests one op may have in flight at once;
the plan's budget, not this number, sets the pace), POLYGON_DECODE_PROCESSES (processes decoding the
bars' answers of a run with many range requests), POLYGON_MAX_ANSWER_MB (the most one answer may
decode to).
"""

from __future__ import annotations

import logging

import dagster as dg
from dagster import ConfigurableResource
from pydantic import Field

from market_pipeline import settings
from market_pipeline.polygon.client import PolygonClient, RetryPolicy
from market_pipeline.warehouse.rate_limit import SharedRateLimiter
from market_pipeline.warehouse.reference import ReferenceStore
from market_pipeline.warehouse.registry import SymbolRegistry
from market_pipeline.warehouse.store import BarStore


class PolygonResource(ConfigurableResource):
    base_url: str | None = Field(default=None, description="API root; default POLYGON_BASE_URL or https://api.massive.com")
    requests_per_minute: int | None = Field(
        default=None, description="Plan rate; default POLYGON_REQUESTS_PER_MINUTE or 5 (free plan); 0 = no pacing"
    )
    max_in_flight: int | None = Field(
        default=None,
        description="Requests one op may have in flight at once; default POLYGON_MAX_IN_FLIGHT or 8; 1 = one at a time",
    )
    decode_processes: int | None = Field(
        default=None,
        description=(
            "Worker processes decoding the bars' answers of a run with many range requests; default "
            "POLYGON_DECODE_PROCESSES or 1 on a machine with 2 or more cores; 0 = in the run's own process"
        ),
    )
    decode_in_process_from: int = Field(
        default=32, description="Range requests a run must have before its answers are decoded in a separate process"
    )
    adjusted: bool = Field(
        default=True,
        description="Polygon's adjusted flag for crypto bars; stock and ETF bars are always fetched as traded (adjusted=false)",
    )
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    max_attempts: int = Field(default=6, description="Attempts per request for 429/5xx/timeouts")
    max_retry_wait_seconds: float = Field(default=300.0, description="Total time one request may spend retrying")
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    request_deadline_seconds: float = Field(
        default=120.0, description="Overall time one request may take, body included (a trickling server is cut off)"
    )
    max_pages: int = Field(default=1000, description="A paginated answer longer than this is a failure, not a history")
    max_answer_mb: float | None = Field(
        default=None,
        description=(
            "Megabytes one answer may decode to (a larger one fails at once: a decompression bomb or a broken "
            "server); default POLYGON_MAX_ANSWER_MB or 25 (the largest real answer is about 5 MB)"
        ),
    )

    def get_client(self, logger: logging.Logger | None = None) -> PolygonClient:
        rpm = self.requests_per_minute if self.requests_per_minute is not None else settings.requests_per_minute()
        in_flight = self.max_in_flight if self.max_in_flight is not None else settings.max_in_flight()
        if in_flight < 1:
            raise settings.SettingsError(
                f"PolygonResource max_in_flight={in_flight} is not a whole number of 1 or more: set e.g. "
                f"max_in_flight={settings.DEFAULT_MAX_IN_FLIGHT} (or 1 for one request at a time)"
            )
        decoders = self.decode_processes if self.decode_processes is not None else settings.decode_processes()
        if decoders < 0:
            raise settings.SettingsError(
                f"PolygonResource decode_processes={decoders} is not a whole number of 0 or more: set e.g. "
                "decode_processes=1 (or 0 to decode in the run's own process)"
            )
        max_mb = self.max_answer_mb if self.max_answer_mb is not None else settings.max_answer_mb()
        if not max_mb > 0:
            raise settings.SettingsError(
                f"PolygonResource max_answer_mb={max_mb} is not a number of megabytes above 0: set e.g. "
                f"max_answer_mb={settings.DEFAULT_MAX_ANSWER_MB:g}"
            )
        base_url = (self.base_url or settings.polygon_base_url()).rstrip("/")
        # the plan's rate holds for the whole deployment: every process using this warehouse shares one budget
        limiter = SharedRateLimiter(settings.db_url(), base_url, rpm) if rpm > 0 else None
        return PolygonClient(
            api_key=settings.polygon_api_key(),
            base_url=base_url,
            requests_per_minute=rpm,
            limiter=limiter,
            adjusted=self.adjusted,
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
            retry=RetryPolicy(
                max_attempts=self.max_attempts,
                max_total_wait=self.max_retry_wait_seconds,
                backoff_base=self.backoff_base_seconds,
                backoff_max=self.backoff_max_seconds,
            ),
            logger=logger,
            request_deadline=self.request_deadline_seconds,
            max_pages=self.max_pages,
            max_answer_bytes=int(max_mb * 1_000_000),
            max_in_flight=in_flight,
            decode_processes=decoders,
            decode_from=self.decode_in_process_from,
        )


class WarehouseResource(ConfigurableResource):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default MARKET_PIPELINE_DB_URL or the SQLite file in the project home",
    )

    def resolved_url(self) -> str:
        return self.url or settings.db_url()

    def bars(self) -> BarStore:
        return BarStore(self.resolved_url())

    def registry(self) -> SymbolRegistry:
        return SymbolRegistry(self.resolved_url())

    def references(self) -> ReferenceStore:
        return ReferenceStore(self.resolved_url())


@dg.definitions
def resources() -> dg.Definitions:
    """Bound under the names the assets ask for; every setting comes from the environment at run time."""
    return dg.Definitions(resources={"polygon": PolygonResource(), "warehouse": WarehouseResource()})
