"""Issue 15, the client against a hostile sandbox over real HTTP: the key stays on the configured
origin, pagination that does not end is a failure, a trickling body meets a deadline."""

import datetime as dt
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from market_pipeline.polygon.origin import same_origin
from market_pipeline.polygon.pagination import PageGuard, PaginationError
from market_pipeline.polygon.client import PolygonClient, PolygonError, RetryPolicy
from market_pipeline.sandbox import SANDBOX_API_KEY
from market_pipeline_tests.waiting import scaled

FAST_RETRY = RetryPolicy(max_attempts=3, max_total_wait=10.0, backoff_base=0.01, backoff_max=0.05)
START, END = dt.date(2024, 1, 2), dt.date(2024, 12, 31)


def client_for(sandbox, **kw) -> PolygonClient:
    kw.setdefault("retry", FAST_RETRY)
    return PolygonClient(SANDBOX_API_KEY, sandbox.url, 0, **kw)


class Recorder:
    """A second loopback HTTP server that records every request and its Authorization header."""

    def __init__(self):
        self.requests: list[tuple[str, str | None]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                recorder.requests.append((self.path, self.headers.get("Authorization")))
                body = b'{"status":"OK","request_id":"x","results":[]}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def recorder():
    server = Recorder()
    yield server
    server.close()


@pytest.mark.parametrize(
    "url, same",
    [
        ("https://api.polygon.io/v2/aggs", True),
        ("https://API.Polygon.io:443/v2/aggs?cursor=x", True),
        ("https://evilpolygon.io/v2/aggs", False),
        ("https://attacker-massive.com/v2/aggs", False),
        ("https://api.polygon.io.evil.com/v2/aggs", False),
        ("http://api.polygon.io/v2/aggs", False),  # a downgrade to plain text
        ("https://api.polygon.io:8443/v2/aggs", False),
        ("https://massive.com/v2/aggs", False),
        ("/v2/aggs", False),
        ("ftp://api.polygon.io/v2/aggs", False),
        ("https://api.polygon.io:99999/v2/aggs", False),
    ],
)
def test_only_the_exact_origin_of_the_base_url_is_the_same_origin(url, same):
    assert same_origin(url, "https://api.polygon.io") is same


def test_the_key_is_never_put_on_a_request_to_a_look_alike_or_downgraded_host():
    client = PolygonClient("secret-key-1", "https://api.massive.com", 0)
    assert client._headers("https://api.massive.com/v2/aggs/x")["Authorization"] == "Bearer secret-key-1"
    for url in ("https://evilmassive.com/v2/x", "http://api.massive.com/v2/x", "https://api.polygon.io/v2/x"):
        with pytest.raises(PolygonError) as info:
            client._headers(url)
        assert "secret-key-1" not in str(info.value) and not info.value.transient


@pytest.mark.parametrize("kind", ["other_port", "look_alike", "other_scheme"])
def test_a_next_url_leaving_the_origin_is_refused_and_nothing_reaches_the_other_host(sandbox, recorder, kind):
    sandbox.page_size = 50
    target = {
        "other_port": recorder.url,
        "look_alike": "https://evilpolygon.io",
        "other_scheme": "https://127.0.0.1:1",  # same host, another scheme and port: refused (the http downgrade of an https base is in the test above)
    }[kind]
    sandbox.next_url_origin("AAPL", target)
    with client_for(sandbox) as client, pytest.raises(PolygonError) as info:
        client.daily_bars("AAPL", "stock", START, END)
    message = str(info.value)
    assert message.startswith("AAPL: pagination did not end: refused a next_url on ")
    assert target.split("//")[1].split(":")[0] in message and SANDBOX_API_KEY not in message
    assert not info.value.transient
    assert sandbox.request_counts()["aggs_range"] == 1  # the first page only, not retried
    assert recorder.requests == []  # the other server never heard from us, key or not


def test_a_next_url_on_the_same_origin_is_followed_with_the_key(sandbox):
    sandbox.page_size = 100
    with client_for(sandbox) as client:
        frame = client.daily_bars("AAPL", "stock", START, END)
    assert len(frame) == 252 and sandbox.request_counts()["aggs_range"] == 3
    assert {entry.key_source for entry in sandbox.request_log()} == {"header"}


@pytest.mark.parametrize(
    "kind, page_size, requests",
    [("self_loop", None, 1), ("cursor_cycle", 100, 3), ("cursor_cycle", None, 3)],
)
def test_pagination_that_repeats_is_a_failure_not_a_history(sandbox, kind, page_size, requests):
    sandbox.page_size = page_size
    sandbox.paginate_badly("AAPL", kind)
    with client_for(sandbox) as client, pytest.raises(PolygonError) as info:
        client.daily_bars("AAPL", "stock", START, END)
    assert str(info.value).startswith("AAPL: pagination did not end: Polygon repeated a next_url")
    assert not info.value.transient
    assert sandbox.request_counts()["aggs_range"] == requests


@pytest.mark.parametrize("max_pages", [25, 1000])
def test_an_endless_chain_fails_at_max_pages(sandbox, max_pages):
    sandbox.paginate_badly("AAPL", "endless")
    with client_for(sandbox, max_pages=max_pages) as client, pytest.raises(PolygonError) as info:
        client.daily_bars("AAPL", "stock", START, END)
    assert f"pagination did not end: more than {max_pages} pages" in str(info.value)
    assert sandbox.request_counts()["aggs_range"] == max_pages


def test_page_guard_unit():
    guard = PageGuard("https://api.polygon.io/v2/a?x=1&y=2", "https://api.polygon.io", what="T", max_pages=3)
    assert guard.follow("https://api.polygon.io/v2/b?cursor=c&apiKey=leak") == "https://api.polygon.io/v2/b?cursor=c"
    with pytest.raises(PaginationError, match="repeated"):
        guard.follow("https://api.polygon.io/v2/a?y=2&x=1")  # same page, parameters reordered
    assert guard.follow("https://api.polygon.io/v2/c") == "https://api.polygon.io/v2/c"
    with pytest.raises(PaginationError, match="more than 3 pages"):
        guard.follow("https://api.polygon.io/v2/d")


def test_a_trickling_body_is_cut_at_the_deadline_then_retried(sandbox):
    sandbox.trickle_next(1, bytes_per_second=500)  # a year of bars (~28 kB) would take about a minute
    with client_for(sandbox, request_deadline=0.5) as client:
        started = time.monotonic()
        frame = client.daily_bars("AAPL", "stock", START, END)
    assert len(frame) == 252
    assert 0.5 <= time.monotonic() - started < scaled(5)
    assert client.stats.retries == 1 and sandbox.request_counts()["aggs_range"] == 2


def test_a_body_that_always_trickles_fails_clearly(sandbox):
    sandbox.trickle_next(10, bytes_per_second=500)
    with client_for(sandbox, request_deadline=0.4) as client, pytest.raises(PolygonError) as info:
        started = time.monotonic()
        client.daily_bars("AAPL", "stock", START, END)
    message = str(info.value)
    assert "gave up after 3 attempts" in message and "did not finish within its 0.4s deadline" in message
    assert info.value.transient and time.monotonic() - started < scaled(5)


def test_validate_bars_unit():
    import datetime as dt
    import json

    from market_pipeline.polygon.validate_bars import expected_t, split_bars

    day = dt.date(2024, 11, 29)  # the day after Thanksgiving: an early close at 13:00 New York
    good = {"o": 1.0, "h": 2.0, "l": 0.5, "c": 1.5, "v": 10.0}
    rows = json.loads(json.dumps([
        {**good, "t": expected_t(day, "stock", "range")},
        {**good, "h": float("inf"), "t": expected_t(dt.date(2024, 11, 27), "stock", "range")},
        {**good, "t": expected_t(day, "crypto", "range")},  # 00:00 UTC: 19:00 New York the day before
        {**good, "t": expected_t(dt.date(2024, 12, 2), "stock", "range")},  # after the last session
        {"o": 1.0, "t": expected_t(dt.date(2024, 11, 26), "stock", "range")},
        "garbage",
    ]))
    usable, aside = split_bars(rows, "stock", dt.date(2024, 11, 29))
    assert usable == [rows[0]]
    assert [a.reason.split(" (")[0] for a in aside] == [
        "non-finite or non-numeric high",
        f"t={expected_t(day, 'crypto', 'range')}",
        "dated 2024-12-02, after the last completed session 2024-11-29",
        "missing high, low, close, volume",
        "not a bar object",
    ]
    assert aside[1].date == dt.date(2024, 11, 28)
    close_1300 = int(dt.datetime(2024, 11, 29, 13, tzinfo=dt.timezone(dt.timedelta(hours=-5))).timestamp() * 1000)
    grouped = [{**good, "T": "AAPL", "t": close_1300}, {**good, "T": "MSFT", "t": expected_t(day, "stock", "grouped")},
               {**good, "T": "IBM", "t": expected_t(day, "stock", "range")}]
    usable, aside = split_bars(grouped, "stock", day, "grouped")
    assert [r["T"] for r in usable] == ["AAPL", "MSFT"] and [a.ticker for a in aside] == ["IBM"]


@pytest.mark.parametrize("asset_class, ticker", [("stock", "AAPL"), ("crypto", "X:BTCUSD")])
def test_the_fast_check_passes_clean_bars_and_hands_every_bad_one_to_the_row_by_row_check(asset_class, ticker):
    import json

    from market_pipeline.polygon.validate_bars import all_usable, split_bars, why_unusable
    from market_pipeline.sandbox import market

    series = market.ticker_series(ticker)
    rows = json.loads(b"[" + bytes(series.joined(0, 2000)) + b"]")
    last = dt.date(2030, 1, 1)
    assert all_usable(rows, asset_class, last)
    assert all(why_unusable(row, asset_class, last)[0] is None for row in rows)  # the slow check agrees
    for kind in market.WIRE_CORRUPTIONS:
        if kind == "utc_midnight_t" and asset_class == "crypto":
            continue  # 00:00 UTC is a crypto bar's boundary
        bad = [*rows[:10], json.loads(market.edit_bar(series.fragment(10), corruption=kind)), *rows[11:20]]
        assert not all_usable(bad, asset_class, last), kind
        usable, aside = split_bars(bad, asset_class, last)
        assert len(usable) == 19 and len(aside) == 1, kind
    assert not all_usable(rows, asset_class, dt.date(1995, 6, 1))  # after the last completed session
    assert not all_usable([{**rows[0], "vw": float("nan")}], asset_class, last)
    assert not all_usable([{**rows[0], "o": True}], asset_class, last)
    # a number sent as text is not a number, as the row-by-row check says: the fast check used to
    # convert it (numpy reads "10.5" as 10.5) and store the bar, unless another row was bad
    for key in ("c", "vw", "n"):
        texted = [*rows[:10], {**rows[10], key: str(rows[10][key])}, *rows[11:20]]
        assert why_unusable(texted[10], asset_class, last)[0] is not None
        assert not all_usable(texted, asset_class, last), key
        usable, aside = split_bars(texted, asset_class, last)
        assert len(usable) == 19 and len(aside) == 1, key
