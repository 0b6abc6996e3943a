"""The sandbox models a rename as one security: FB and META are two names of one price series, so the
history stitched by `symbols rename FB META` is continuous and split_consistency has nothing to say;
the `stitch_unrelated_series` knob serves them as unrelated series again, and the check lists the
false jump (never as a split). Real HTTP to the sandbox, real Dagster runs, dates injected."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import requests

from market_pipeline.corporate_actions import evaluate_consistency
from market_pipeline.devtools import runner
from market_pipeline.sandbox import SANDBOX_API_KEY, SandboxServer, as_traded_bars, synthetic_bars
from market_pipeline.warehouse import BarStore
from market_pipeline_tests.dagster_helpers import check_metadata, check_passed, latest_check_records
from market_pipeline_tests.test_assets import track
from market_pipeline_tests.test_lifecycle_assets import UTC, at, run
from market_pipeline_tests.test_registry_cli import cli

RENAMED = dt.date(2022, 6, 9)


def served(server: SandboxServer, ticker: str, start: str, end: str) -> pd.DataFrame:
    body = requests.get(
        f"{server.url}/v2/aggs/ticker/{ticker}/range/1/day/{start}/{end}?adjusted=false",
        headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"}, timeout=30,
    ).json()
    frame = pd.DataFrame(body.get("results", []))
    frame["date"] = pd.to_datetime(frame["t"], unit="ms", utc=True).dt.tz_convert("America/New_York").dt.date
    return frame


def overnight_at_rename(fb: pd.DataFrame, meta: pd.DataFrame) -> float:
    return float(meta.iloc[0]["o"] / fb.iloc[-1]["c"])


def test_fb_and_meta_are_one_price_series_unless_stitched_unrelated():
    with SandboxServer() as server:
        fb = served(server, "FB", "2022-05-02", "2022-08-01")
        meta = served(server, "META", "2022-05-02", "2022-08-01")
        assert fb["date"].max() == RENAMED - dt.timedelta(days=1) and meta["date"].min() == RENAMED
        assert 0.9 < overnight_at_rename(fb, meta) < 1.1  # an ordinary overnight gap
        whole = synthetic_bars("META", dt.date(2022, 5, 2), dt.date(2022, 6, 8))
        assert np.array_equal(fb["c"].to_numpy(), whole["c"].to_numpy())  # FB's bars are META's series
        assert np.array_equal(as_traded_bars("FB", dt.date(2022, 5, 2), dt.date(2022, 6, 8))["c"].to_numpy(), whole["c"].to_numpy())
        grouped = requests.get(
            f"{server.url}/v2/aggs/grouped/locale/us/market/stocks/2022-06-08",
            headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"}, timeout=30,
        ).json()["results"]
        assert next(r for r in grouped if r["T"] == "FB")["c"] == fb.iloc[-1]["c"]

        server.stitch_unrelated_series("META")
        unrelated = served(server, "FB", "2022-05-02", "2022-08-01")
        assert np.array_equal(unrelated["c"].to_numpy(), synthetic_bars("FB", dt.date(2022, 5, 2), dt.date(2022, 6, 8))["c"].to_numpy())
        assert not 0.5 < overnight_at_rename(unrelated, meta) < 2  # the false jump of two unrelated series
        server.stitch_unrelated_series("FB", unrelated=False)
        assert served(server, "FB", "2022-05-02", "2022-08-01")["c"].equals(fb["c"])
        with pytest.raises(ValueError, match="not a name of a renamed security"):
            server.stitch_unrelated_series("AAPL")


@pytest.mark.parametrize("unrelated", [False, True], ids=["one security", "stitched unrelated"])
def test_the_renamed_history_through_the_pipeline(polygon_env, instance, warehouse_url, capsys, monkeypatch, unrelated):
    """Fetch FB, `symbols rename FB META`, fetch META: one series gives a continuous history the check
    passes with nothing listed; unrelated series give a jump the check lists as a large move, not a split."""
    sandbox = polygon_env
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", warehouse_url)
    if unrelated:
        sandbox.stitch_unrelated_series("FB")
    registry = track(warehouse_url, instance, {"FB": "stock"}, start="2022-05-02")
    config = at(dt.datetime(2022, 8, 1, 23, 30, tzinfo=UTC), sandbox)
    assert run(instance, ["FB"], config).success
    code, _, err = cli(capsys, "symbols", "rename", "FB", "META")
    assert code == 0, err
    runner.reconcile_partitions(instance, registry)
    assert run(instance, ["META"], config).success
    history = BarStore(warehouse_url).read_bars("META")
    assert history["date"].min().date() == dt.date(2022, 5, 2) and history["date"].max().date() == dt.date(2022, 8, 1)
    i = int(np.flatnonzero(history["date"].dt.date.to_numpy() == RENAMED)[0])
    move = history["open"].iloc[i] / history["close"].iloc[i - 1]
    record = latest_check_records(instance, "split_consistency")["META"]
    metadata = check_metadata(record)
    report = evaluate_consistency(history, [])
    if not unrelated:
        assert 0.9 < move < 1.1
        assert check_passed(record) and "large_moves" not in metadata and "unexplained_jumps" not in metadata
        assert report.large_moves == [] and report.unexplained_jumps == []
    else:
        assert not 0.5 < move < 2  # the README's false jump
        assert check_passed(record) and metadata["large_move_dates"] == RENAMED.isoformat()
        assert [m["date"] for m in report.large_moves] == [RENAMED.isoformat()]
