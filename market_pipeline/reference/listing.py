"""Polygon's list of tickers (`/v3/reference/tickers`) as reference records, and how to walk it. Pure.

A list row carries every identity field a run decides from (type, market, active, composite FIGI…)
but no `list_date`: a record read from the list says so in its status text until the weekly
`symbol_reference` refresh fills the date in with the ticker's own lookup.

`ListWalk` plans the pages that answer a set of tickers of one market, the cheaper way:

- each page asks for the active list from the first ticker not yet answered (`ticker.gte`) up to the
  last one wanted (`ticker.lte`), 1,000 rows (`limit`), sorted by ticker, so no page is spent on a
  stretch of the list without a wanted ticker and every page answers at least one (it is listed, or
  the page shows it is not in the active list);
- a page's `next_url` is not followed: the next page's query moves `ticker.gte` to the next ticker not
  answered, which covers at least what the cursor's page would;
- pages stop paying when they answer fewer than `MIN_YIELD` wanted tickers each on average (the
  tickers are sparse in the list) or one ticker is left: the rest then get single-ticker lookups,
  which cost the same and carry `list_date`. So the pages never cost more requests than one lookup
  per ticker.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from market_pipeline.reference.mismatch import classify, compare_identity
from market_pipeline.reference.records import ReferenceRecord, parse_ticker_details

LIST_LIMIT = 1000  # rows a page (Polygon's maximum)
MIN_YIELD = 2.0  # wanted tickers a page must answer on average to keep paging
LIST_DATE_PENDING = (
    "read from Polygon's list of tickers, which has no list date: the weekly symbol_reference refresh "
    "fills it in with the ticker's own lookup"
)


class ListPageError(Exception):
    """A page of the list that cannot be used (malformed, or not moving past what was asked)."""


@dataclass(frozen=True)
class ListPage:
    rows: dict[str, dict]  # ticker -> its row (the first row of a ticker, active list)
    last: str | None  # the greatest ticker the page lists
    more: bool  # the page says more rows follow (`next_url`)
    problems: tuple[str, ...] = ()  # rows set aside, with why


def parse_list_page(body) -> ListPage:
    """The usable rows of one list answer; `ListPageError` when the answer is not a page of rows."""
    if not isinstance(body, dict):
        raise ListPageError("the list answer is not a JSON object")
    results = body.get("results", [])
    if results is None:
        results = []
    if not isinstance(results, list):
        raise ListPageError(f"the list answer's `results` is {type(results).__name__}, not a list of tickers")
    rows: dict[str, dict] = {}
    problems = []
    for i, row in enumerate(results):
        ticker = row.get("ticker") if isinstance(row, dict) else None
        if not isinstance(ticker, str) or not ticker.strip():
            problems.append(f"row {i} has no ticker")
            continue
        if ticker in rows:
            problems.append(f"{ticker} is listed twice (the first row is used)")
            continue
        rows[ticker] = row
    if results and not rows:
        raise ListPageError(f"none of the list answer's {len(results)} rows names a ticker")
    next_url = body.get("next_url")
    return ListPage(rows, max(rows) if rows else None, isinstance(next_url, str) and bool(next_url.strip()), tuple(problems))


def parse_list_row(row: dict, symbol: str, asset_class: str) -> ReferenceRecord:
    """A list row as a record, validated like a ticker detail answer (the same statuses); an `ok`
    stock's or ETF's record says that its list date is still to come (a crypto pair has none)."""
    record = parse_ticker_details({"results": row}, symbol, asset_class)
    if record.status == "ok" and asset_class != "crypto":
        return record.with_status("ok", LIST_DATE_PENDING)
    return record


def listed_record(row: dict, symbol: str, asset_class: str, stored: ReferenceRecord | None) -> tuple[ReferenceRecord, bool]:
    """(record, needs its own lookup) for a tracked symbol found in the list. The stored list date is
    kept while the composite FIGI is the same security's; a new FIGI under the ticker (reused) needs
    the new security's lookup once, for its list date: the stored history ends the day before it."""
    record = classify(parse_list_row(row, symbol, asset_class))
    same = stored is not None and stored.composite_figi and stored.composite_figi == record.composite_figi
    if same and stored.list_date is not None:
        record = replace(record, list_date=stored.list_date)
        if record.status == "ok":
            record = record.with_status("ok", "")
    checked = compare_identity(stored, record)
    reused = checked is not record and checked.status == "mismatch" and stored is not None
    return checked, bool(reused and stored.delisted_on is None)


def known_inactive(stored: ReferenceRecord | None) -> bool:
    """A symbol whose stored reference already says it stopped trading under its ticker (delisted,
    renamed, reused, an inactive pair): its absence from the active list changes nothing."""
    return stored is not None and stored.active is False and stored.status not in ("error", "not_found", "invalid")


def list_market(asset_class: str) -> str:
    return "crypto" if asset_class == "crypto" else "stocks"


@dataclass
class ListWalk:
    """The pages answering `tickers` (Polygon tickers of one market); see the module doc."""

    market: str
    tickers: list[str]
    type: str | None = None  # e.g. "ETF" when every wanted ticker is registered as an ETF
    limit: int = LIST_LIMIT
    pages: int = 0
    listed: int = 0  # wanted tickers the pages found
    remaining: list[str] = field(init=False)

    def __post_init__(self):
        self.remaining = sorted(set(self.tickers))

    def next_query(self) -> dict | None:
        """The next page's query, or None when paging is over (see `leftover`)."""
        if not self.remaining or len(self.remaining) == 1:
            return None
        if self.pages and self.listed / self.pages < MIN_YIELD:
            return None
        params = {
            "market": self.market, "active": "true", "ticker.gte": self.remaining[0], "ticker.lte": self.remaining[-1],
            "limit": str(self.limit), "sort": "ticker", "order": "asc",
        }
        if self.type:
            params["type"] = self.type
        return params

    def take(self, page: ListPage) -> tuple[dict[str, dict], list[str]]:
        """The wanted tickers this page answers: ({ticker: row} of those listed, [those not in the
        active list]). `ListPageError` when the page does not answer the first ticker asked for."""
        first = self.remaining[0]
        covered = [t for t in self.remaining if not page.more or (page.last is not None and t <= page.last)]
        if not covered:
            raise ListPageError(
                f"the page asked to start at {first} ended at {page.last or 'nothing'} and says more follow: "
                "it does not move through the list"
            )
        self.pages += 1
        found = {t: page.rows[t] for t in covered if t in page.rows}
        self.listed += len(found)
        answered = set(covered)
        self.remaining = [t for t in self.remaining if t not in answered]
        return found, [t for t in covered if t not in found]

    def leftover(self) -> list[str]:
        """The tickers no page answered: each gets its own lookup."""
        return list(self.remaining)
