"""No stray bar slips into a history and no duplicate is resolved silently: bars outside the requested
range (a 1970 bar in a 2024 answer, a 2100 bar, a grouped-daily bar of another date) and every copy of
a conflicting duplicate (within a page, across the pages of one answer, decoded in this process or in
the decoding process) are quarantined with their reason and counted; identical copies are kept once.
Pure decoding, the client over real HTTP, and real Dagster runs against the sandbox."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from pandas.testing import assert_frame_equal

from market_pipeline.calendars import ms_at_local_midnight
from market_pipeline.polygon.client import PolygonClient, RetryPolicy
from market_pipeline.polygon.range_pages import combine_pages, decode_range_page
from market_pipeline.polygon.validate_bars import CONFLICTING, OUTSIDE_RANGE
from market_pipeline.refresh.grouped import refresh_grouped
from market_pipeline.sandbox import SANDBOX_API_KEY
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.quarantine import QuarantineStore
from market_pipeline_tests.dagster_helpers import check_metadata, latest_check_records, materialization_metadata
from market_pipeline_tests.test_hardening_pipeline import clean_dates, run, stored_dates, track

PATH = "/v2/aggs/ticker/ZAA/range/1/day/2024-01-02/2024-03-28"
SPAN = (dt.date(2024, 1, 2), dt.date(2024, 3, 28))
LAST = dt.date(2024, 12, 31)
FAST_RETRY = RetryPolicy(max_attempts=2, max_total_wait=5.0, backoff_base=0.01, backoff_max=0.05)


def bar(day: dt.date, close: float = 101.2, **changes) -> dict:
    row = {"v": 1000.0, "vw": close, "o": close, "c": close, "h": close + 1, "l": close - 1,
           "t": ms_at_local_midnight(day, "stock"), "n": 10}
    return {**row, **changes}


def page(rows) -> bytes:
    return json.dumps({"ticker": "ZAA", "status": "OK", "resultsCount": len(rows), "results": rows}).encode()


# ---- pure --------------------------------------------------------------------------------------


def test_a_1970_and_a_2100_bar_in_a_2024_answer_are_set_aside_outside_the_requested_range():
    rows = [bar(dt.date(2024, 1, 2)), bar(dt.date(1970, 1, 2)), bar(dt.date(2024, 1, 3)), bar(dt.date(2100, 1, 4))]
    decoded = decode_range_page(page(rows), "stock", LAST, PATH, SPAN)
    assert [d.date() for d in decoded.frame["date"]] == [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    assert [(a.date, a.reason) for a in decoded.set_aside] == [
        (dt.date(1970, 1, 2), OUTSIDE_RANGE), (dt.date(2100, 1, 4), OUTSIDE_RANGE),
    ]
    assert json.loads(decoded.set_aside[0].raw)["t"] == rows[1]["t"]  # the raw values kept
    # without the range (a caller that does not say it), the 2100 bar is still after the last session
    loose = decode_range_page(page(rows), "stock", LAST, PATH)
    assert len(loose.frame) == 3 and "after the last completed session" in loose.set_aside[0].reason


def test_conflicting_duplicates_are_all_set_aside_and_identical_ones_kept_once():
    day, other = dt.date(2024, 1, 3), dt.date(2024, 1, 4)
    rows = [bar(dt.date(2024, 1, 2)), bar(day), bar(day, close=999.0), bar(other), bar(other), bar(dt.date(2024, 1, 5))]
    decoded = decode_range_page(page(rows), "stock", LAST, PATH, SPAN)
    assert [d.date() for d in decoded.frame["date"]] == [dt.date(2024, 1, 2), other, dt.date(2024, 1, 5)]
    assert sorted((a.date, a.reason, json.loads(a.raw)["c"]) for a in decoded.set_aside) == [
        (day, CONFLICTING, 101.2), (day, CONFLICTING, 999.0),
    ]


def test_a_clean_page_still_takes_the_one_pass_path():
    rows = [bar(dt.date(2024, 1, 2) + dt.timedelta(days=k)) for k in (0, 1, 2, 3)]
    decoded = decode_range_page(page(rows), "stock", LAST, PATH, SPAN)
    assert len(decoded.frame) == 4 and decoded.set_aside == []


def test_a_date_two_pages_bring_is_kept_once_when_identical_and_set_aside_when_not():
    first = decode_range_page(page([bar(dt.date(2024, 1, 2)), bar(dt.date(2024, 1, 3))]), "stock", LAST, PATH, SPAN)
    same = decode_range_page(page([bar(dt.date(2024, 1, 3)), bar(dt.date(2024, 1, 4))]), "stock", LAST, PATH, SPAN)
    other = decode_range_page(page([bar(dt.date(2024, 1, 3), close=999.0), bar(dt.date(2024, 1, 4))]), "stock", LAST, PATH, SPAN)
    frame, aside = combine_pages([first, same])
    assert len(frame) == 3 and aside == []
    frame, aside = combine_pages([first, other])
    assert [d.date() for d in frame["date"]] == [dt.date(2024, 1, 2), dt.date(2024, 1, 4)]
    assert sorted((a.reason, json.loads(a.raw)["c"]) for a in aside) == [(CONFLICTING, 101.2), (CONFLICTING, 999.0)]
    # the raw JSON rebuilt from the kept values is the wire row
    assert json.loads(next(a.raw for a in aside if "999" in a.raw)) == bar(dt.date(2024, 1, 3), close=999.0)


# ---- the client over real HTTP ------------------------------------------------------------------


def _client(sandbox, **options) -> PolygonClient:
    return PolygonClient(SANDBOX_API_KEY, sandbox.url, 0, retry=FAST_RETRY, **options)


@pytest.mark.parametrize("in_worker", [False, True], ids=["this process", "decoding process"])
def test_overlapping_pages_conflicting_or_identical(sandbox, in_worker):
    """Every page after the first starts again with the previous page's last bar: identical copies
    leave the history as a clean answer gives it; conflicting ones take those sessions out, every copy
    quarantined, whichever process decoded the pages."""
    start, end = dt.date(2023, 1, 3), dt.date(2024, 6, 28)
    with _client(sandbox) as plain:
        clean = plain.fetch_daily_bars("ZAA", "stock", start, end).bars
    sandbox.page_size = 100
    options = {"decode_processes": 1, "decode_from": 1} if in_worker else {}
    with _client(sandbox, **options) as client, client.decoding(1) as decoder:
        if in_worker:
            deadline = time.monotonic() + 60
            while not decoder.ready:
                assert time.monotonic() < deadline, "the decoding process did not start"
                time.sleep(0.05)
        sandbox.overlap_pages("ZAA", conflicting=False)
        same = client.fetch_daily_bars("ZAA", "stock", start, end)
        sandbox.overlap_pages("ZAA", conflicting=True)
        other = client.fetch_daily_bars("ZAA", "stock", start, end)
        if in_worker:
            assert decoder.decoded >= 8  # both answers' pages went through the worker
    assert_frame_equal(same.bars, clean) and same.set_aside == []
    boundaries = sorted({a.date for a in other.set_aside})
    assert len(boundaries) == 3 and len(other.set_aside) == 6  # 4 pages: 3 overlaps, both copies each
    assert {a.reason for a in other.set_aside} == {CONFLICTING}
    assert_frame_equal(other.bars, clean[~clean["date"].dt.date.isin(boundaries)].reset_index(drop=True))


def test_a_grouped_answer_with_a_bar_of_another_date(sandbox, warehouse_url):
    day = dt.date(2024, 3, 5)
    sandbox.grouped_stray_bars("AAPL", [dt.date(2024, 2, 1)])
    with _client(sandbox) as client:
        fetched = client.fetch_grouped_daily("stock", day)
        assert set(fetched.bars["date"].dt.date) == {day}
        assert [(a.ticker, a.date, a.reason) for a in fetched.set_aside] == [("AAPL", dt.date(2024, 2, 1), OUTSIDE_RANGE)]
        registry = SymbolRegistry(warehouse_url)
        registry.add(["AAPL"], "stock", "2024-03-01")
        results = list(refresh_grouped(
            client, BarStore(warehouse_url), registry, [(registry.get("AAPL"), dt.date(2024, 3, 5))], [day], day, run_id="r1",
        ))
    assert [(r.symbol, r.quarantined, r.quarantined_outside_range) for r in results] == [("AAPL", 1, 1)]
    assert stored_dates(warehouse_url, "AAPL") == [day]
    assert [(q.date, q.reason) for q in QuarantineStore(warehouse_url).list("AAPL")] == [(dt.date(2024, 2, 1), OUTSIDE_RANGE)]


# ---- real Dagster runs --------------------------------------------------------------------------


def test_stray_and_duplicate_bars_through_a_run(polygon_env, instance, warehouse_url):
    """The issue's answers: a bar dated 1970-01-02 and one dated 2100 inside a 2024 answer, a
    session sent twice with closes 101.2-like and 999.0, one sent twice identical. The run stores the
    rest, quarantines the four with their reasons, counts them in the partition's metadata; the session
    with two answers counts as missing until a later fetch gives one."""
    sandbox = polygon_env
    registry = track(warehouse_url, instance, {"AAPL": "stock"})
    sandbox.serve_stray_bars("AAPL", ["1970-01-02", "2100-01-04"])
    sandbox.duplicate_bars("AAPL", ["2024-02-01"], conflicting=True)
    sandbox.duplicate_bars("AAPL", ["2024-02-02"], conflicting=False)
    assert run(instance, "AAPL").success
    clean = clean_dates("AAPL", "stock")
    assert stored_dates(warehouse_url, "AAPL") == [d for d in clean if d != dt.date(2024, 2, 1)]
    quarantined = sorted((q.date, q.reason) for q in QuarantineStore(warehouse_url).list("AAPL"))
    assert quarantined == [
        (dt.date(1970, 1, 2), OUTSIDE_RANGE), (dt.date(2024, 2, 1), CONFLICTING), (dt.date(2024, 2, 1), CONFLICTING),
        (dt.date(2100, 1, 4), OUTSIDE_RANGE),
    ]
    metadata = materialization_metadata(instance, "AAPL")
    assert (metadata["quarantined"], metadata["quarantined_outside_range"], metadata["quarantined_conflicting"]) == (4, 2, 2)
    assert registry.get("AAPL").quarantined_bars == 4
    gaps = check_metadata(latest_check_records(instance, "date_gaps")["AAPL"])
    assert gaps["gaps_detected"] == "1"  # the conflicting session, not 7,975 sessions since 1970
    # the next fetch covering it gives one answer: the session is stored
    sandbox.clear_wire_faults()
    registry.add(["AAPL"], "stock", "2024-01-01")  # an earlier start: the whole history again
    assert run(instance, "AAPL").success
    assert stored_dates(warehouse_url, "AAPL") == clean_dates("AAPL", "stock", dt.date(2024, 1, 1))
    assert materialization_metadata(instance, "AAPL")["quarantined"] == 0


def test_bars_before_the_listing_date_are_outside_the_range(polygon_env, instance, warehouse_url):
    """A symbol whose reference says it listed on 2024-02-01: a January bar in its answer is not its own."""
    sandbox = polygon_env
    track(warehouse_url, instance, {"AAPL": "stock"})
    sandbox.set_listing_date("AAPL", "2024-02-01")
    sandbox.serve_stray_bars("AAPL", ["2024-01-10"])
    assert run(instance, "AAPL").success
    assert min(stored_dates(warehouse_url, "AAPL")) == dt.date(2024, 2, 1)
    assert [(q.date, q.reason) for q in QuarantineStore(warehouse_url).list("AAPL")] == [(dt.date(2024, 1, 10), OUTSIDE_RANGE)]


def test_a_grouped_answer_with_a_ticker_twice():
    from market_pipeline.polygon.validate_bars import expected_t, split_bars

    day = dt.date(2024, 3, 5)
    t = expected_t(day, "stock", "grouped")
    rows = [{**bar(day), "t": t, "T": "AAPL"}, {**bar(day), "t": t, "T": "MSFT"}, {**bar(day, close=999.0), "t": t, "T": "AAPL"},
            {**bar(day), "t": t, "T": "KO"}, {**bar(day), "t": t, "T": "KO"}]
    usable, aside = split_bars(rows, "stock", day, "grouped", span=(day, day))
    assert [row["T"] for row in usable] == ["MSFT", "KO"]
    assert [(a.ticker, a.reason) for a in aside] == [("AAPL", CONFLICTING), ("AAPL", CONFLICTING)]
