"""The pure corporate-actions package: parsing, duplicates, factors, consistency, withdrawals."""

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from market_pipeline.corporate_actions import (
    StoredEvent,
    diff_events,
    evaluate_consistency,
    factor_ranges,
    factors_on,
    parse_dividend,
    parse_split,
    resolve_duplicates,
)
from market_pipeline_tests.ca_payloads import V1_DIVIDEND, V1_SPLITS, V3_DIVIDENDS, V3_SPLITS

D = dt.date.fromisoformat


def as_traded(start: str, end: str, splits: dict[str, float], price: float = 100.0) -> pd.DataFrame:
    """Flat bars (open = close = price on today's basis) shown as traded: before each split date the
    price is divided by the split's price factor (a 4-for-1 traded 4x higher before it) and the share
    volume multiplied by it (a quarter of the shares changed hands)."""
    dates = pd.bdate_range(start, end)
    factor = np.ones(len(dates))
    for day, price_factor in splits.items():
        factor[dates < pd.Timestamp(day)] /= price_factor
    close = price * factor
    return pd.DataFrame({"date": dates, "open": close, "high": close, "low": close, "close": close, "volume": 1e6 / factor})


def splits_of(payload, ticker):
    return [parse_split(row) for row in payload["results"] if row["ticker"] == ticker]


def test_v3_split_rows_parse_with_derived_type_and_stable_id():
    rows = [parse_split(r) for r in V3_SPLITS["results"]]
    assert all(s.status == "active" for s in rows)
    brw = next(s for s in rows if s.symbol == "BRW")
    assert brw.adjustment_type == "reverse_split" and brw.price_factor == 2.0 and brw.label == "1-for-2"
    assert parse_split(V3_SPLITS["results"][0]).provider_id == rows[0].provider_id  # stable across reads
    v1 = parse_split(V1_SPLITS["results"][0])
    assert (v1.provider_id, v1.execution_date, v1.price_factor) == ("E1", D("2020-08-31"), 0.25)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"split_from": 0}, "split_from must be positive"),
        ({"split_to": -4}, "split_to must be positive"),
        ({"split_to": None}, "missing split_to"),
        ({"adjustment_type": "spin_off"}, "unknown adjustment_type"),
        ({"execution_date": "2020-13-45"}, "unparseable execution_date"),
        ({"split_to": "abc"}, "not a number"),
    ],
)
def test_bad_split_rows_are_flagged_not_applied(change, reason):
    split = parse_split({**V1_SPLITS["results"][0], **change})
    assert split.status == "invalid" and reason in split.reason
    assert factor_ranges([split]).frame.empty


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"cash_amount": -0.1}, "cash_amount must be positive"),
        ({"currency": "CAD"}, "not USD"),
        ({"distribution_type": "bonus"}, "unknown distribution_type"),
        ({"ex_dividend_date": "soon"}, "unparseable ex_dividend_date"),
        ({"cash_amount": None}, "missing cash_amount"),
    ],
)
def test_bad_dividend_rows_are_flagged(change, reason):
    dividend = parse_dividend({**V1_DIVIDEND, **change})
    assert dividend.status == "invalid" and reason in dividend.reason


def test_v3_dividends_parse():
    rows = [parse_dividend(r) for r in V3_DIVIDENDS["results"]]
    assert [r.status for r in rows] == ["active", "active"]
    assert rows[0].distribution_type == "recurring" and rows[0].currency == "USD"
    assert rows[0].ex_dividend_date == D("2025-06-12") and rows[0].cash_amount == 0.59375
    v1 = parse_dividend(V1_DIVIDEND)
    assert (v1.provider_id, v1.status, v1.pay_date) == ("D1", "active", D("2024-04-01"))


def test_shop_duplicate_listing_gives_factor_10_not_100():
    splits = splits_of(V3_SPLITS, "SHOP")
    # a 10-for-1 split (split_from 1, split_to 10): the price falls tenfold overnight on 06-29, not on 06-22
    bars = as_traded("2022-06-01", "2022-07-15", {"2022-06-29": 0.1})
    resolved = resolve_duplicates(splits, bars)
    by_date = {s.execution_date: s for s in resolved}
    assert by_date[D("2022-06-29")].status == "active"
    assert by_date[D("2022-06-22")].status == "duplicate"
    assert by_date[D("2022-06-29")].reason is None
    assert "2022-06-29" in by_date[D("2022-06-22")].reason
    ranges = factor_ranges(resolved).frame
    assert factors_on(ranges, [D("2022-06-01")])["split_factor"].tolist() == [pytest.approx(0.1)]
    # without bars the earliest listing is applied, still once
    blind = resolve_duplicates(splits, None)
    assert sorted(s.status for s in blind) == ["active", "duplicate"]
    assert factors_on(factor_ranges(blind).frame, [D("2022-06-01")])["split_factor"].iloc[0] == pytest.approx(0.1)
    # the check names the duplicate and passes
    report = evaluate_consistency(bars, resolved)
    assert report.passed and report.duplicates[0]["date"] == "2022-06-22"


def test_seven_for_one_then_four_for_one_gives_28_before_both():
    splits = splits_of(V1_SPLITS, "AAPL")
    frame = factor_ranges(splits).frame
    factors = factors_on(frame, [D("2014-06-06"), D("2014-06-09"), D("2020-08-28"), D("2020-08-31"), D("2024-01-02")])
    assert (1 / factors["split_factor"]).round(9).tolist() == [28, 4, 4, 1, 1]
    # adjusted prices are on today's basis: a bar traded at 28 x 10 before both reads 10
    bars = as_traded("2014-05-01", "2020-10-01", {"2014-06-09": 1 / 7, "2020-08-31": 0.25}, price=10.0)
    adjusted = bars["close"].to_numpy() * factors_on(frame, bars["date"])["split_factor"].to_numpy()
    assert np.allclose(adjusted, 10.0)
    assert evaluate_consistency(bars, splits).passed


def test_reverse_split_multiplies_earlier_prices_and_volume_shrinks():
    brw = splits_of(V3_SPLITS, "BRW")  # 1-for-2 reverse: two old shares become one
    frame = factor_ranges(brw).frame
    before, on = factors_on(frame, [D("2022-05-19"), D("2022-05-20")])["split_factor"].tolist()
    assert (before, on) == (2.0, 1.0)
    bars = as_traded("2022-05-02", "2022-06-01", {"2022-05-20": 2.0}, price=50.0)
    assert bars.loc[bars["date"] == "2022-05-19", "close"].item() == 25.0  # traded at half
    assert evaluate_consistency(bars, brw).passed


def test_dividend_total_return_factor_by_hand():
    # closes 50 on 2024-03-13, ex-date 2024-03-14, cash 0.485 (KO row): before E prices x (1 - 0.485/50)
    dividend = parse_dividend(V1_DIVIDEND)
    bars = as_traded("2024-03-01", "2024-03-29", {}, price=50.0)
    ranges = factor_ranges([], [dividend], bars)
    assert not ranges.unapplied
    factors = factors_on(ranges.frame, [D("2024-03-13"), D("2024-03-14")])
    assert factors["total_return_factor"].tolist() == [pytest.approx(0.9903), 1.0]
    assert factors["split_factor"].tolist() == [1.0, 1.0]
    # with a later 2-for-1 split both multiply: 0.5 * 0.9903
    split = parse_split({"id": "S", "ticker": "KO", "execution_date": "2024-03-25", "split_from": 1, "split_to": 2})
    both = factor_ranges([split], [dividend], as_traded("2024-03-01", "2024-03-29", {"2024-03-25": 0.5}, 25.0))
    f = factors_on(both.frame, [D("2024-03-13"), D("2024-03-20"), D("2024-03-26")])
    assert f["total_return_factor"].tolist() == [pytest.approx(0.5 * 0.9903), 0.5, 1.0]
    assert f["split_factor"].tolist() == [0.5, 0.5, 1.0]


def test_dividend_without_a_close_before_the_ex_date_is_not_applied():
    ranges = factor_ranges([], [parse_dividend(V1_DIVIDEND)], as_traded("2024-03-20", "2024-03-29", {}))
    assert "no stored close" in ranges.unapplied["D1"] and ranges.frame.empty


def test_unrecorded_split_fails_the_check_until_recorded():
    # the reverse split: closes 28.08 then 56.55 across 2023-03-20 with nothing recorded
    bars = as_traded("2023-03-01", "2023-04-14", {"2023-03-20": 2.0}, price=56.0)
    report = evaluate_consistency(bars, [])
    assert not report.passed and [j["date"] for j in report.unexplained_jumps] == ["2023-03-20"]
    assert report.metadata()["unexplained_jump_dates"] == "2023-03-20"
    assert report.severity == "ERROR"
    late = parse_split({"id": "R", "ticker": "X", "execution_date": "2023-03-20", "split_from": 2, "split_to": 1})
    assert evaluate_consistency(bars, [late]).passed


def test_a_split_the_prices_do_not_show_is_unconfirmed():
    bars = as_traded("2023-03-01", "2023-04-14", {})
    wrong = parse_split({"id": "W", "ticker": "X", "execution_date": "2023-03-20", "split_from": 1, "split_to": 3})
    report = evaluate_consistency(bars, [wrong])
    assert not report.passed and report.unconfirmed_splits[0]["date"] == "2023-03-20"
    assert report.unconfirmed_splits[0]["expected_move"] == pytest.approx(1 / 3, rel=1e-5)


def test_ordinary_gaps_pass_and_a_split_with_a_gap_is_confirmed():
    bars = as_traded("2023-03-01", "2023-04-14", {"2023-03-20": 0.5})
    bars.loc[bars["date"] == "2023-03-20", "open"] *= 1.08  # an 8% gap on top of the split
    bars.loc[bars["date"] == "2023-03-10", ["open", "close"]] *= 1.15  # an ordinary 15% move
    split = parse_split({"id": "S", "ticker": "X", "execution_date": "2023-03-20", "split_from": 1, "split_to": 2})
    assert evaluate_consistency(bars, [split]).passed


def test_withdrawn_only_on_a_complete_reread():
    a = parse_split(V1_SPLITS["results"][0])
    b = parse_split(V1_SPLITS["results"][1])
    stored = {
        ("AAPL", "E1"): StoredEvent("AAPL", "E1", a.content(), "active"),
        ("AAPL", "E2"): StoredEvent("AAPL", "E2", b.content(), "active"),
        ("MSFT", "M1"): StoredEvent("MSFT", "M1", (), "active"),
    }
    corrected = dataclasses.replace(a, split_to=5.0)
    changes = diff_events(stored, [corrected, parse_split({**V1_SPLITS["results"][0], "id": "E3"})], ["AAPL"])
    assert [e.provider_id for e in changes.changed] == ["E1"]
    assert [e.provider_id for e in changes.new] == ["E3"]
    assert [e.provider_id for e in changes.withdrawn] == ["E2"]  # MSFT was not re-read: untouched
    assert changes.touched_symbols == {"AAPL"}
    partial = diff_events(stored, [a], [])
    assert not partial.withdrawn and [e.provider_id for e in partial.unchanged] == ["E1"]
