"""One page of a range answer (`/v2/aggs/ticker/.../range/1/day/...`), from its raw bytes to usable
bars and bars set aside, and the pages of one symbol put together. Pure functions.

`decode_range_page` is the CPU-heavy part of a fetch (JSON, the wire checks, the frame): 15-25 ms for
a 20-year history, which the client runs either on its fetch thread or in a decoding process
(`market_pipeline.polygon.decode_process`). It never raises: what went wrong comes back as the
page's `problem`, worded for the user, for the client to raise (a truncated body is `transient`:
the request is sent again). Everything in a `RangePage` pickles, so it crosses to another process.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd

from market_pipeline.polygon.answers import answer_body
from market_pipeline.polygon.bars import BarParseError, empty_bars, parse_aggregate_results
from market_pipeline.polygon.validate_bars import CONFLICTING, SetAside, expected_t, raw_json, split_bars, usable_range_frame


@dataclass
class RangePage:
    """What one page brought: its usable bars (None: none), the bars set aside, the next page's URL;
    or a `problem` (then nothing else counts)."""

    frame: pd.DataFrame | None = None
    set_aside: list[SetAside] = field(default_factory=list)
    next_url: str | None = None
    problem: str | None = None  # e.g. "truncated or invalid JSON from /v2/aggs/..."
    transient: bool = False  # the problem may go away when the request is sent again


def decode_range_page(
    content: bytes, asset_class: str, last_session: dt.date | None, path: str, span: tuple[dt.date, dt.date] | None = None,
) -> RangePage:
    """The page's bars: decoded, each checked (`validate_bars`; `span`: the first and last date asked
    for), the usable ones parsed. Never raises."""
    body, problem, transient = answer_body(content, path)
    if body is None:
        return RangePage(problem=problem, transient=transient)
    results = body.get("results") or []
    if not isinstance(results, list):
        return RangePage(problem="unexpected `results` from Polygon (not a list)")
    next_url = body.get("next_url") or None
    if not results:
        return RangePage(next_url=next_url)
    frame = usable_range_frame(results, asset_class, last_session, span)  # one pass, what Polygon sends
    if frame is not None:
        return RangePage(frame, [], next_url)
    usable, aside = split_bars(results, asset_class, last_session, "range", span)
    try:
        return RangePage(parse_aggregate_results(usable, asset_class) if usable else None, aside, next_url)
    except BarParseError as exc:
        return RangePage(problem=f"unusable bars from Polygon: {exc}")


def combine_pages(pages: list[RangePage], asset_class: str = "stock") -> tuple[pd.DataFrame, list[SetAside]]:
    """One symbol's bars from its pages, in date order with one bar per date, and every bar set aside,
    in wire order. A date that two pages both bring is kept once when the bars are identical; when they
    differ, every copy is set aside as `conflicting duplicates` (its raw JSON rebuilt from the values:
    the page kept the parsed bar, not its text)."""
    aside = [bar for page in pages for bar in page.set_aside]
    frames = [page.frame for page in pages if page.frame is not None and not page.frame.empty]
    if not frames:
        return empty_bars(), aside
    if len(frames) == 1:
        return frames[0], aside
    frame = pd.concat(frames, ignore_index=True)
    days = frame["date"].to_numpy()
    if not (days[1:] > days[:-1]).all():
        frame = frame.drop_duplicates(keep="first")  # identical copies: one
        repeated = frame["date"].duplicated(keep=False)
        for row in frame[repeated].itertuples(index=False):
            aside.append(SetAside(row.date.date(), raw_json(wire_row(row, asset_class)), CONFLICTING))
        frame = frame[~repeated].sort_values("date", kind="stable").reset_index(drop=True)
    return frame, aside


def wire_row(bar, asset_class: str) -> dict:
    """A parsed range bar as Polygon sent it (`o h l c v vw n t`; `vw`, `n` left out when absent)."""
    row = {"v": bar.volume, "vw": bar.vwap, "o": bar.open, "c": bar.close, "h": bar.high, "l": bar.low,
           "t": expected_t(bar.date.date(), asset_class, "range"), "n": bar.transactions}
    return {key: (int(value) if key == "n" else value) for key, value in row.items() if not pd.isna(value)}
