"""Rebuilds the excerpts listed in events.json from the public Yahoo Finance dumps it names.

Usage: python make_excerpts.py BLUEFIN_DIR DIEPERDEV_DIR CAPARISUN_DIR WIKI_AAPL_CSV
Each directory is a checkout of the repository events.json names, at the commit it names. Not run by
the tests (they read the excerpts); kept so every number in the excerpts can be traced to its source.
"""

import json
import os
import sys

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
SESSIONS = 30  # kept either side of the event, unless the entry gives a window
COLUMNS = {"Date": "date", "Open": "open", "High": "high", "Low": "low", "Close": "close", "Volume": "volume"}


def load(entry: dict, roots: dict) -> pd.DataFrame:
    source = entry["source"]
    path = roots["wiki"] if source["dump"] == "wiki" else os.path.join(roots[source["dump"]], source["path"])
    df = pd.read_csv(path).rename(columns=COLUMNS)[list(COLUMNS.values())].dropna()
    df = df.astype({name: float for name in ("open", "high", "low", "close", "volume")})
    df["date"] = pd.to_datetime(df["date"]).dt.strftime("%Y-%m-%d")
    return df.sort_values("date").reset_index(drop=True)


def excerpt(entry: dict, roots: dict) -> pd.DataFrame:
    """The entry's bars as traded: Yahoo's split-adjusted values times new/old before each split to
    undo (its volume divided by it); Quandl WIKI's unadjusted columns as they are."""
    df = load(entry, roots)
    for day, new, old in entry["undo"]:
        before = df["date"] < day
        df.loc[before, ["open", "high", "low", "close"]] *= new / old
        df.loc[before, "volume"] *= old / new
    if "window" in entry:
        first, last = entry["window"]
        df = df[(df["date"] >= first) & (df["date"] <= last)]
    else:
        i = int(np.searchsorted(df["date"].to_numpy(), entry["event"]))
        df = df.iloc[max(0, i - SESSIONS) : i + SESSIONS]
    df[["open", "high", "low", "close"]] = df[["open", "high", "low", "close"]].round(6)
    df["volume"] = df["volume"].round(0).astype("int64")
    return df


def main() -> None:
    roots = dict(zip(("bluefin", "dieperdev", "caparisun", "wiki"), sys.argv[1:5]))
    for entry in json.load(open(os.path.join(HERE, "events.json"))):
        excerpt(entry, roots).to_csv(os.path.join(HERE, entry["file"]), index=False)


if __name__ == "__main__":
    main()
