"""Issue 12: the bars' answers decoded in a separate process (POLYGON_DECODE_PROCESSES).

The page decoder as pure functions (pages put together as one answer), the worker process giving
exactly what this process would (clean, partly unusable, broken answers), the client over real HTTP
to the sandbox with the worker on and after it is killed (no bar lost), when a run uses it, the
setting, and a real Dagster run that says how its answers were decoded."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import time

import pytest
from pandas.testing import assert_frame_equal

from market_pipeline import settings
from market_pipeline.polygon.bars import parse_aggregate_results
from market_pipeline.polygon.client import PolygonClient, RetryPolicy
from market_pipeline.polygon.decode_process import DecodeProcess
from market_pipeline.polygon.range_pages import combine_pages, decode_range_page
from market_pipeline.polygon.validate_bars import split_bars
from market_pipeline.sandbox import SANDBOX_API_KEY
from market_pipeline_tests.waiting import scaled

FAST_RETRY = RetryPolicy(max_attempts=3, max_total_wait=5.0, backoff_base=0.01, backoff_max=0.02)
NY_MIDNIGHT_MS = 1_704_171_600_000  # 2024-01-02 00:00 America/New_York
DAY_MS = 86_400_000
LAST = dt.date(2024, 12, 31)
PATH = "/v2/aggs/ticker/ZAA/range/1/day/2024-01-02/2024-12-31"


def bar(day: int, close: float = 10.0, **changes) -> dict:
    row = {"v": 1000.0 + day, "vw": close, "o": close, "c": close, "h": close + 1, "l": close - 1,
           "t": NY_MIDNIGHT_MS + day * DAY_MS, "n": 10 + day}
    row.update(changes)
    return row


def body(rows, **extra) -> bytes:
    return json.dumps({"ticker": "ZAA", "status": "OK", "resultsCount": len(rows), "results": rows, **extra}).encode()


def wait_ready(decoder: DecodeProcess, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + scaled(seconds)
    while not decoder.ready:
        assert time.monotonic() < deadline, "the decoding process did not start"
        time.sleep(0.05)


# ---- pure: pages put together ----------------------------------------------------------------


def test_pages_put_together_are_the_answer_parsed_whole():
    """Two pages overlapping by dates, one of them with an unusable bar: the bars and the bars set
    aside are those of the whole answer checked and parsed at once: a date both pages bring with
    different bars is set aside whole (`conflicting duplicates`), one they bring identical is kept once."""
    first = [bar(0), bar(1), bar(2, close=11.0), bar(5)]
    second = [bar(2, close=12.0), bar(3, c=float("nan")), bar(4), bar(1, close=13.0), bar(5)]
    pages = [decode_range_page(body(first, next_url="x"), "stock", LAST, PATH), decode_range_page(body(second), "stock", LAST, PATH)]
    assert pages[0].next_url == "x" and pages[1].next_url is None
    frame, aside = combine_pages(pages)
    usable, expected_aside = split_bars(first + second, "stock", LAST, "range")
    assert_frame_equal(frame, parse_aggregate_results(usable, "stock"))
    assert sorted(aside, key=repr) == sorted(expected_aside, key=repr) and len(aside) == 5
    assert sorted(a.reason for a in aside if "close" in a.reason) == ["non-finite or non-numeric close (close=nan)"]
    conflicting = sorted((a.date.day, json.loads(a.raw)["c"]) for a in aside if a.reason == "conflicting duplicates")
    assert conflicting == [(3, 10.0), (3, 13.0), (4, 11.0), (4, 12.0)]  # days 1 and 2 of January: every copy
    assert frame["close"].tolist() == [10.0, 10.0, 10.0]  # dates 0, 4 and 5 (sent twice, identical)


@pytest.mark.parametrize(
    "content, problem, transient",
    [
        (b'{"status": "OK", "results": [{"v": 1', "truncated or invalid JSON from " + PATH, True),
        (b"[1, 2]", "unexpected payload from " + PATH, False),
        (b'{"status": "ERROR", "error": "Unknown API Key"}', "Polygon answered status 'ERROR': Unknown API Key", False),
        (b'{"status": "OK", "results": {"v": 1}}', "unexpected `results` from Polygon (not a list)", False),
    ],
)
def test_a_broken_page_is_a_problem_not_an_exception(content, problem, transient):
    page = decode_range_page(content, "stock", LAST, PATH)
    assert (page.problem, page.transient, page.frame) == (problem, transient, None)


def test_an_empty_answer_gives_an_empty_frame():
    frame, aside = combine_pages([decode_range_page(body([]), "stock", LAST, PATH)])
    assert frame.empty and list(frame.columns)[0] == "date" and aside == []


# ---- the worker process ------------------------------------------------------------------------


def test_the_worker_decodes_exactly_what_this_process_would():
    pages = [
        body([bar(i) for i in range(40)]),  # what Polygon sends (midnights in New York's winter time)
        body([bar(0), bar(1, h=float("inf")), bar(2, t=NY_MIDNIGHT_MS + 2 * DAY_MS + 5 * 3_600_000), bar(3, n=None)]),
        body([bar(i) for i in range(40)] + [bar(50)], next_url="https://api.massive.com/next"),  # a late bar
        b'{"status": "OK", "results": [',
        b'{"status": "NOT_AUTHORIZED", "message": "plan"}',
    ]
    with DecodeProcess(1) as decoder:
        wait_ready(decoder)
        for content in pages:
            there = decoder.decode(content, "stock", dt.date(2024, 2, 15), PATH)
            here = decode_range_page(content, "stock", dt.date(2024, 2, 15), PATH)
            assert (there.problem, there.transient, there.next_url, there.set_aside) == (
                here.problem, here.transient, here.next_url, here.set_aside,
            )
            if here.frame is None:
                assert there.frame is None
            else:
                assert_frame_equal(there.frame, here.frame)
        assert decoder.decoded == len(pages)
        clean, odd, late = (decode_range_page(content, "stock", dt.date(2024, 2, 15), PATH) for content in pages[:3])
        assert len(clean.frame) == 40 and not clean.set_aside
        assert len(odd.frame) == 2 and len(odd.set_aside) == 2  # the infinite high, the bar off midnight
        assert len(late.frame) == 40 and "after the last completed session" in late.set_aside[0].reason
    assert not decoder.ready and decoder.decode(pages[0], "stock", LAST, PATH) is None  # closed: the caller decodes


ORPHAN_SCRIPT = """
import sys, time
from market_pipeline.polygon.decode_process import DecodeProcess
if __name__ == "__main__":
    decoder = DecodeProcess(1)
    deadline = time.monotonic() + 60
    while not decoder.ready and time.monotonic() < deadline:
        time.sleep(0.05)
    print(*decoder._pool._processes, flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"  # a zombie is gone, only not yet reaped
    except FileNotFoundError:
        return False


def test_a_worker_does_not_outlive_a_killed_run_process(tmp_path):
    """A run worker killed with SIGKILL (the UI's terminate after its grace, the OOM killer) must not
    leave its decoding process behind: a pool worker waits on a pipe it holds open itself."""
    import subprocess
    import sys

    script = tmp_path / "run_process.py"
    script.write_text(ORPHAN_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(pid) for pid in proc.stdout.readline().split()]
        assert workers and all(_alive(pid) for pid in workers)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + scaled(20)
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "the decoding process outlived its run's process"


def test_a_hung_worker_is_given_up_and_killed(caplog):
    """A worker that stops answering (here: SIGSTOP) costs one timeout, then the caller decodes
    itself, the worker is killed, and the warning says why."""
    content = body([bar(i) for i in range(40)])
    with DecodeProcess(1, timeout=1.0) as decoder, caplog.at_level(logging.WARNING):
        wait_ready(decoder)
        assert decoder.decode(content, "stock", LAST, PATH) is not None
        (pid,) = list(decoder._pool._processes)
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        assert decoder.decode(content, "stock", LAST, PATH) is None
        assert time.monotonic() - started < scaled(10)
        assert not decoder.ready and decoder.decode(content, "stock", LAST, PATH) is None
        deadline = time.monotonic() + scaled(10)
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = _alive(pid)
        if alive:
            os.kill(pid, signal.SIGKILL)
        assert not alive, "the hung worker was left running"
    stopped = [r.getMessage() for r in caplog.records if "decoding process stopped" in r.getMessage()]
    assert stopped == ["the decoding process stopped (no answer within 1 s); answers are decoded in the run's process from now on"]


def _client(sandbox, **options) -> PolygonClient:
    return PolygonClient(SANDBOX_API_KEY, sandbox.url, 0, retry=FAST_RETRY, max_in_flight=4, **options)


def test_the_client_fetches_the_same_bars_through_the_worker_and_after_it_is_killed(sandbox, caplog):
    """Over real HTTP: bars (and bars set aside) fetched through the worker equal those decoded in
    this process, on several pages; a killed worker loses no bar: the next answers are decoded here,
    with one warning."""
    sandbox.page_size = 700
    sandbox.corrupt_bars("ZBA", [dt.date(2024, 3, 5)], "nan_in_close")
    start, end = dt.date(2020, 1, 2), dt.date(2025, 6, 2)
    symbols = ["ZAA", "ZBA", "ZCA", "ZDA"]
    with _client(sandbox) as plain:
        expected = {s: plain.fetch_daily_bars(s, "stock", start, end) for s in symbols}
    assert len(expected["ZAA"].bars) > 700 and len(expected["ZBA"].set_aside) == 1
    with _client(sandbox, decode_processes=1, decode_from=2) as client, caplog.at_level(logging.WARNING):
        with client.decoding(len(symbols)) as decoder:
            assert isinstance(decoder, DecodeProcess)
            wait_ready(decoder)
            for symbol in symbols[:2]:
                fetched = client.fetch_daily_bars(symbol, "stock", start, end)
                assert_frame_equal(fetched.bars, expected[symbol].bars)
                assert fetched.set_aside == expected[symbol].set_aside
            assert decoder.decoded >= 4  # two symbols of two pages or more each
            for pid in list(decoder._pool._processes):
                os.kill(pid, signal.SIGKILL)
            for symbol in symbols[2:]:
                fetched = client.fetch_daily_bars(symbol, "stock", start, end)
                assert_frame_equal(fetched.bars, expected[symbol].bars)
            assert not decoder.ready
        assert client._decoder is None
    stopped = [r for r in caplog.records if "decoding process stopped" in r.getMessage()]
    assert len(stopped) == 1 and "decoded in the run's process" in stopped[0].getMessage()


def test_a_process_only_for_many_answers(sandbox):
    with _client(sandbox, decode_processes=1, decode_from=32) as client:
        with client.decoding(31) as decoder:
            assert decoder is None
    with _client(sandbox, decode_processes=0, decode_from=1) as client:
        with client.decoding(10_000) as decoder:
            assert decoder is None


# ---- the setting ------------------------------------------------------------------------------


def test_the_setting_defaults_to_one_process_on_two_cores(monkeypatch):
    monkeypatch.delenv("POLYGON_DECODE_PROCESSES", raising=False)
    assert settings.decode_processes() == (1 if (os.cpu_count() or 1) >= 2 else 0)
    monkeypatch.setenv("POLYGON_DECODE_PROCESSES", " 0 ")
    assert settings.decode_processes() == 0
    monkeypatch.setenv("POLYGON_DECODE_PROCESSES", "2")
    assert settings.decode_processes() == 2


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "65", "two"])
def test_a_bad_setting_is_one_line_naming_it_and_a_valid_value(monkeypatch, value):
    monkeypatch.setenv("POLYGON_DECODE_PROCESSES", value)
    with pytest.raises(settings.SettingsError) as raised:
        settings.validate()
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"POLYGON_DECODE_PROCESSES={value!r} is not a whole number")
    assert "POLYGON_DECODE_PROCESSES=1" in message


# ---- a real run --------------------------------------------------------------------------------


def test_a_run_decodes_its_answers_in_a_separate_process_and_says_so(polygon_env, instance, warehouse_url):
    """A real Dagster run with the worker on (from 2 range requests): it succeeds, stores the bars
    this process would have decoded, and its log says how many answers the worker decoded."""
    from market_pipeline.definitions import defs
    from market_pipeline.defs.bars.partitions import symbols_partitions
    from market_pipeline.defs.bars.reconcile import range_tags
    from market_pipeline.warehouse import BarStore, SymbolRegistry

    symbols = [f"Z{chr(65 + i)}B" for i in range(6)]
    SymbolRegistry(warehouse_url).add(symbols, "stock", "2024-01-02")
    instance.add_dynamic_partitions(symbols_partitions.name, symbols)
    polygon_env.add_to_universe(symbols)
    result = defs.resolve_job_def("ohlcv_daily_job").execute_in_process(
        instance=instance,
        tags=range_tags(symbols),
        run_config={
            "ops": {"ohlcv_daily": {"config": {"as_of": "2025-06-02T22:00:00+00:00"}}},
            "resources": {"polygon": {"config": {"decode_processes": 1, "decode_in_process_from": 2, "max_in_flight": 2}}},
        },
    )
    assert result.success
    messages = [e.user_message for e in instance.all_logs(result.run_id) if not e.is_dagster_event]
    said = [m for m in messages if "decoded in a separate process" in m]
    assert len(said) == 1 and said[0].split(" of ", 1)[1].startswith("6 range answer(s)")
    store = BarStore(warehouse_url)
    with PolygonClient(SANDBOX_API_KEY, polygon_env.url, 0) as plain:
        for symbol in symbols:
            expected = plain.fetch_daily_bars(symbol, "stock", dt.date(2024, 1, 2), dt.date(2025, 6, 2)).bars
            stored = store.read_bars(symbol)
            assert len(stored) == len(expected) > 300
            assert_frame_equal(stored, expected.reset_index(drop=True), check_dtype=False)  # every column, every bar
