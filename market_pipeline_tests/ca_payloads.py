"""The project's own corporate-action payloads, written from the wire facts in POLYGON_API.md."""

# /v3/reference/splits (deprecated shape: no id, no adjustment_type), the SHOP listing twice
V3_SPLITS = {
    "results": [
        {"execution_date": "2022-07-18", "split_from": 1, "split_to": 20, "ticker": "GOOGL"},
        {"execution_date": "2022-06-29", "split_from": 1, "split_to": 10, "ticker": "SHOP"},
        {"execution_date": "2022-06-22", "split_from": 1, "split_to": 10, "ticker": "SHOP"},
        {"execution_date": "2022-05-20", "split_from": 2, "split_to": 1, "ticker": "BRW"},
        {"execution_date": "2022-05-02", "split_from": 3, "split_to": 4, "ticker": "CIG.C"},
    ],
    "status": "OK",
    "request_id": "b52de486daf5491e6b9ebdf5e0bf65bc",
}

# /stocks/v1/splits rows: AAPL's 7-for-1 (2014) and 4-for-1 (2020)
V1_SPLITS = {
    "results": [
        {"id": "E1", "ticker": "AAPL", "execution_date": "2020-08-31", "split_from": 1, "split_to": 4,
         "adjustment_type": "forward_split", "historical_adjustment_factor": 0.25},
        {"id": "E2", "ticker": "AAPL", "execution_date": "2014-06-09", "split_from": 1, "split_to": 7,
         "adjustment_type": "forward_split", "historical_adjustment_factor": 0.0357143},
    ],
    "status": "OK",
    "request_id": "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a",
}

# /v3/reference/dividends rows (dividend_type codes, no currency)
V3_DIVIDENDS = {
    "results": [
        {"cash_amount": 0.59375, "declaration_date": "2020-09-09", "dividend_type": "CD",
         "ex_dividend_date": "2025-06-12", "frequency": 4, "pay_date": "2025-06-30",
         "record_date": "2025-06-15", "ticker": "CSSEN"},
        {"cash_amount": 0.5, "declaration_date": "2022-02-10", "dividend_type": "CD",
         "ex_dividend_date": "2023-11-13", "frequency": 4, "pay_date": "2023-11-15",
         "record_date": "2023-11-14", "ticker": "AIRTP"},
    ],
    "status": "OK",
    "request_id": "1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b",
}

# /stocks/v1/dividends row
V1_DIVIDEND = {
    "id": "D1", "ticker": "KO", "ex_dividend_date": "2024-03-14", "declaration_date": "2024-02-15",
    "record_date": "2024-03-15", "pay_date": "2024-04-01", "cash_amount": 0.485, "currency": "USD",
    "split_adjusted_cash_amount": 0.485, "distribution_type": "recurring", "frequency": 4,
    "historical_adjustment_factor": 0.9921,
}
