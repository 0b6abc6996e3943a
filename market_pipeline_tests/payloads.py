"""The project's own Polygon payloads, written from the wire facts in POLYGON_API.md."""

# /v2/aggs/ticker/AAPL/range/1/day/2005-04-01/2005-04-04: two bars either side of the 2005 DST change
AAPL_RANGE = {
    "ticker": "AAPL",
    "queryCount": 2,
    "resultsCount": 2,
    "adjusted": True,
    "results": [
        {"v": 642646396.0, "vw": 1.469, "o": 1.5032, "c": 1.4604, "h": 1.5064, "l": 1.4489, "t": 1112331600000, "n": 82132},
        {"v": 5.78172308e8, "vw": 1.4589, "o": 1.4639, "c": 1.4675, "h": 1.4754, "l": 1.4343, "t": 1112587200000, "n": 65543},
    ],
    "status": "OK",
    "request_id": "0123456789abcdef0123456789abcdef",
    "count": 2,
}

# a weekend range of a crypto pair with no trades: no `results`, no `count`
EMPTY_RANGE = {"ticker": "X:ETHUSD", "queryCount": 0, "resultsCount": 0, "adjusted": True, "status": "OK",
               "request_id": "fedcba9876543210fedcba9876543210"}

# X:BTCUSD 2023-01-01 at 00:00 UTC, fractional volume in exponent form, no vw/n
BTC_RANGE = {
    "ticker": "X:BTCUSD", "queryCount": 1, "resultsCount": 1, "adjusted": True,
    "results": [{"v": 1.029145e+06, "o": 16530.0, "c": 16611.0, "h": 16630.0, "l": 16490.0, "t": 1672531200000}],
    "status": "DELAYED", "request_id": "00000000000000000000000000000001", "count": 1,
}

# grouped daily: stocks at 16:00 New York (2024-03-08 16:00 EST = 21:00Z), crypto at 23:59:59.999 UTC
GROUPED_STOCKS = {
    "queryCount": 2, "resultsCount": 2, "adjusted": True,
    "results": [
        {"T": "AAPL", "v": 1.0e7, "vw": 170.1, "o": 169.0, "c": 170.7, "h": 171.2, "l": 168.5, "t": 1709931600000, "n": 100},
        {"T": "BRK.B", "v": 2.0e6, "vw": 410.0, "o": 409.0, "c": 411.0, "h": 412.0, "l": 408.0, "t": 1709931600000, "n": 50},
    ],
    "status": "OK", "request_id": "00000000000000000000000000000002", "count": 2,
}
GROUPED_CRYPTO = {
    "queryCount": 1, "resultsCount": 1, "adjusted": True,
    "results": [{"T": "X:BTCUSD", "v": 12.5, "vw": 68000.0, "o": 67000.0, "c": 68500.0, "h": 69000.0, "l": 66500.0,
                 "t": 1709942399999, "n": 9}],
    "status": "OK", "request_id": "00000000000000000000000000000003", "count": 1,
}
