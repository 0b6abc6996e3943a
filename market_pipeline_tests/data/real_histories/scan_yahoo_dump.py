"""How often does `split_consistency` call a split on Yahoo Finance daily histories that hold none?

Usage: python scan_yahoo_dump.py DIR [SINCE]
DIR holds one Yahoo CSV per symbol (Date,Open,High,Low,Close,Adj Close,Volume), split-adjusted as
Yahoo serves them: no split step is left in them, so every move the check calls an unrecorded split
is a false alarm, or a split Yahoo failed to adjust. Prints the counts and each such move.
"""
import os, sys, time
import numpy as np, pandas as pd
from market_pipeline.corporate_actions import evaluate_consistency
from market_pipeline.corporate_actions.consistency import LARGE_LOG_MOVE

root = sys.argv[1]
since = sys.argv[2] if len(sys.argv) > 2 else "2000-01-01"
symbols = bars = old = errors = notes = failed_symbols = 0
found = []
started = time.monotonic()
for name in sorted(os.listdir(root)):
    if not name.endswith(".csv"):
        continue
    try:
        df = pd.read_csv(os.path.join(root, name), usecols=["Date", "Open", "Close", "Volume"])
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        continue
    df = df.dropna()
    df = df[df["Date"] >= since]
    # Yahoo prints 6 decimals: below 0.10 a price is too coarse to tell a move from rounding
    df = df[(df["Open"] >= 0.1) & (df["Close"] >= 0.1)]
    if len(df) < 2:
        continue
    frame = pd.DataFrame({"date": pd.to_datetime(df["Date"]), "open": df["Open"].astype(float),
                          "close": df["Close"].astype(float), "volume": df["Volume"].astype(float)})
    symbols += 1
    bars += len(frame)
    o, c = frame["open"].to_numpy(), frame["close"].to_numpy()
    m, cc = np.log(o[1:] / c[:-1]), np.log(c[1:] / c[:-1])
    old += int(((np.abs(m) >= LARGE_LOG_MOVE) & (np.sign(m) == np.sign(cc)) & (np.abs(cc) >= LARGE_LOG_MOVE)).sum())
    report = evaluate_consistency(frame, [])
    jumps, _, large = report.counts()
    errors += jumps
    notes += large
    failed_symbols += jumps > 0
    found += [(name[:-4], j["date"], j["move"], j["ratio"]) for j in report.unexplained_jumps]
print(f"{symbols} symbols, {bars} bars since {since} ({time.monotonic() - started:.0f} s)")
print(f"old rule (overnight move >= 1.45x or <= 0.69x, confirmed by the close): {old} unrecorded splits")
print(f"split_consistency: {errors} unrecorded splits (ERROR) in {failed_symbols} symbols; {notes} large moves listed")
for row in found:
    print("  ", *row)
