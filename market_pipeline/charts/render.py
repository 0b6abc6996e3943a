"""The charts (see the package docstring). Pure: data in, PNG bytes out.

Size and time are bounded: a fixed 720 x 380 pixel canvas, long histories plotted as they are
(matplotlib's path simplification keeps 20 years of sessions cheap), at most `MAX_MARKS` marked
dates of each kind, the image quantized to a 64-colour palette (a few tens of kB at most).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import threading
from collections.abc import Sequence

import numpy as np
import pandas as pd

WIDTH, HEIGHT, DPI = 720, 380, 80
MAX_MARKS = 60  # dates marked per kind (splits, dividends, quarantined, missing ranges, named days)
PALETTE_COLOURS = 64
_GREY, _BLUE, _RED, _GREEN, _ORANGE = "#9a9a9a", "#1f5fbf", "#c62828", "#2e7d32", "#ef6c00"


@dataclasses.dataclass(frozen=True)
class Chart:
    png: bytes | None
    note: str | None = None  # why there is no image

    @property
    def drawn(self) -> bool:
        return self.png is not None


def markdown(chart: Chart, title: str) -> str:
    """The chart as Markdown: the image inline (a data URI), or the note."""
    if chart.png is None:
        return f"No chart: {chart.note}"
    return f"![{title}](data:image/png;base64,{base64.b64encode(chart.png).decode('ascii')})"


def _days(values) -> np.ndarray:
    """Dates (anything pandas reads) as float days since 1970-01-01 (matplotlib's date numbers)."""
    stamps = np.asarray(pd.to_datetime(pd.Series(values)).to_numpy(), dtype="datetime64[ns]").astype("datetime64[D]")
    return stamps.astype("int64").astype("float64")


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    from PIL import Image

    figure.canvas.draw()
    width, height = figure.canvas.get_width_height()
    image = Image.frombuffer("RGBA", (width, height), figure.canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")
    image = image.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def _date_ticks(axis, low: float, high: float, count: int = 6) -> None:
    """About `count` date ticks from `low` to `high` (float days), labelled by span."""
    if high <= low:
        high = low + 1
    ticks = np.linspace(low, high, count)
    span = high - low
    fmt = "%Y-%m-%d" if span < 400 else "%Y-%m"
    labels = [(dt.date(1970, 1, 1) + dt.timedelta(days=int(round(t)))).strftime(fmt) for t in ticks]
    axis.set_xticks(ticks, labels)
    axis.set_xlim(low - span * 0.01, high + span * 0.01)


def _style(axis, fontsize: float = 8) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.tick_params(labelsize=fontsize, length=3, pad=2)
    axis.yaxis.set_major_locator(MaxNLocator(4))
    axis.grid(True, color="#e6e6e6", linewidth=0.6)
    axis.set_axisbelow(True)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)


def _limited(values: Sequence, limit: int = MAX_MARKS) -> list:
    values = list(values)
    return values if len(values) <= limit else values[-limit:]


def symbol_chart(
    symbol: str,
    bars: pd.DataFrame,
    adjusted_close=None,
    *,
    splits: Sequence[tuple[dt.date, str]] = (),
    dividends: Sequence[dt.date] = (),
    quarantined: Sequence[dt.date] = (),
    missing: Sequence[tuple[dt.date, dt.date]] = (),
    subtitle: str = "",
) -> Chart:
    """A symbol's close as traded and split-adjusted (`adjusted_close`, aligned with `bars`; omitted:
    not drawn) over its stored history, volume below; splits (dashed lines, labelled), dividends
    (triangles), quarantined bars (crosses) and missing sessions (shaded) marked. `bars` has date,
    close, volume in date order."""
    if bars is None or bars.empty:
        return Chart(None, f"{symbol} has no stored bars" + (f" ({len(quarantined)} quarantined)" if quarantined else ""))
    try:
        return Chart(_symbol_png(symbol, bars, adjusted_close, splits, dividends, quarantined, missing, subtitle))
    except Exception as exc:  # a chart never fails the materialization
        return Chart(None, f"the chart could not be drawn ({type(exc).__name__}: {str(exc)[:200]})")


class _SymbolCanvas:
    """The figure of symbol charts, built once per process and reused: creating the axes and their
    ticks is most of a fresh figure's cost, so each chart only sets the data, limits, ticks and texts
    of the same artists (and removes the few it added). Used under `_LOCK`."""

    def __init__(self):
        figure = _figure()
        self.figure = figure
        self.price = figure.add_axes((0.085, 0.33, 0.895, 0.58))
        self.volume = figure.add_axes((0.085, 0.09, 0.895, 0.2), sharex=self.price)
        for axis in (self.price, self.volume):
            _style(axis)
        self.price.tick_params(labelbottom=False)
        self.volume.tick_params(labelleft=False, left=False)  # its scale is in the key: fewer texts to draw
        self.volume.grid(False)
        self.traded = self.price.plot([], [], linewidth=0.9)[0]
        self.adjusted = self.price.plot([], [], color=_BLUE, linewidth=1.1)[0]
        self.dividends = self.price.plot([], [], linestyle="none", marker="^", markersize=4, color=_GREEN)[0]
        self.quarantined = self.price.plot([], [], linestyle="none", marker="x", markersize=5, color=_RED)[0]
        self.title = figure.text(0.085, 0.955, "", fontsize=9, weight="bold", va="center")
        self.key = figure.text(0.085, 0.925, "", fontsize=7, color="#444444", va="center")
        self.subtitle = figure.text(0.98, 0.955, "", fontsize=7, color="#555555", va="center", ha="right")
        self.added: list = []

    def draw(self, symbol, bars, adjusted_close, splits, dividends, quarantined, missing, subtitle) -> bytes:
        for artist in self.added:
            artist.remove()
        self.added = []
        x = _days(bars["date"])
        close = bars["close"].to_numpy(dtype="float64")
        volume = np.nan_to_num(bars["volume"].to_numpy(dtype="float64", na_value=np.nan))
        adjusted = None if adjusted_close is None else np.asarray(adjusted_close, dtype="float64")
        differs = adjusted is not None and not np.allclose(adjusted, close, rtol=1e-9, equal_nan=True)
        self.traded.set_data(x, close)
        self.traded.set_color(_GREY if differs else _BLUE)
        self.adjusted.set_data(x if differs else [], adjusted if differs else [])
        both = np.concatenate([close, adjusted]) if differs else close
        low, high = float(np.nanmin(both)), float(np.nanmax(both))
        pad = (high - low) * 0.06 or abs(high) * 0.05 or 1.0
        self.price.set_ylim(low - pad, high + pad)
        key = ["grey: close as traded, blue: split-adjusted" if differs else "blue: close as traded"]
        for day, label in _limited(splits):
            at = _days([day])[0]
            self.added.append(self.price.axvline(at, color=_ORANGE, linewidth=0.9, linestyle="--"))
            self.added.append(self.price.annotate(
                label, (at, 1.0), xycoords=("data", "axes fraction"), fontsize=7, color=_ORANGE,
                ha="left", va="top", xytext=(2, -2), textcoords="offset points"))
        if splits:
            key.append(f"dashes: {len(splits)} split(s)")
        shown = _days(_limited(dividends)) if dividends else np.array([])
        self.dividends.set_data(shown, np.full(len(shown), low))
        if dividends:
            key.append(f"\u25b2 {len(dividends)} dividend(s)")
        shown = _days(_limited(quarantined)) if quarantined else np.array([])
        self.quarantined.set_data(shown, np.full(len(shown), high))
        if quarantined:
            key.append(f"\u00d7 {len(quarantined)} quarantined bar(s)")
        for start, end in _limited(missing):
            a, b = _days([start, end])
            self.added.append(self.price.axvspan(a - 0.5, b + 0.5, color=_RED, alpha=0.18, linewidth=0))
        if missing:
            key.append(f"red bands: {sum((b - a).days + 1 for a, b in missing)} missing day(s)")
        self.added.append(self.volume.fill_between(x, volume, step="mid", color="#8fa9d6", linewidth=0))
        self.volume.set_ylim(0, float(volume.max()) * 1.05 or 1.0)
        key.append(f"volume below (highest {_compact(float(volume.max()))})")
        _date_ticks(self.volume, float(x[0]), float(x[-1]))
        last = pd.Timestamp(bars["date"].iloc[-1]).date()
        self.title.set_text(f"{symbol}  {len(bars)} bars to {last}, last close {close[-1]:g}")
        self.key.set_text("; ".join(key))
        self.subtitle.set_text(subtitle)
        return _png(self.figure)


def _compact(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


_LOCK = threading.Lock()
_CANVAS: list[_SymbolCanvas] = []


def _symbol_png(symbol, bars, adjusted_close, splits, dividends, quarantined, missing, subtitle) -> bytes:
    with _LOCK:
        if not _CANVAS:
            _CANVAS.append(_SymbolCanvas())
        try:
            return _CANVAS[0].draw(symbol, bars, adjusted_close, splits, dividends, quarantined, missing, subtitle)
        except Exception:
            _CANVAS.clear()  # a half-updated canvas is never reused
            raise


def days_chart(symbol: str, bars: pd.DataFrame, days: Sequence[dt.date], what: str) -> Chart:
    """The close around the days a check names (shaded in red, at most MAX_MARKS), `bars` (date,
    close) covering them with some sessions either side; `what` says what the days are."""
    if not days:
        return Chart(None, "no days named")
    if bars is None or bars.empty:
        return Chart(None, f"{symbol} has no stored bars around the days named")
    try:
        figure = _figure()
        axis = figure.add_axes((0.085, 0.1, 0.895, 0.8))
        _style(axis)
        x = _days(bars["date"])
        axis.plot(x, bars["close"].to_numpy(dtype="float64"), color=_BLUE, linewidth=1.0, marker="." if len(x) <= 120 else None, markersize=3)
        for at in _days(_limited(sorted(days))):
            axis.axvspan(at - 0.5, at + 0.5, color=_RED, alpha=0.25, linewidth=0)
        _date_ticks(axis, float(x[0]), float(x[-1]))
        figure.text(0.085, 0.95, f"{symbol}: {what} ({len(days)} day(s), shaded)", fontsize=9, weight="bold", va="center")
        return Chart(_png(figure))
    except Exception as exc:
        return Chart(None, f"the chart could not be drawn ({type(exc).__name__}: {str(exc)[:200]})")


def stats_chart(symbols: Sequence[str], validation_rates: Sequence[float | None], sessions_behind: Sequence[int | None]) -> Chart:
    """Validation rate and sessions behind (freshness) across symbols: one bar per symbol, worst first
    (the `MAX_STATS_SYMBOLS` worst when there are more)."""
    if not symbols:
        return Chart(None, "no tracked symbols")
    try:
        return Chart(_stats_png(list(symbols), list(validation_rates), list(sessions_behind)))
    except Exception as exc:
        return Chart(None, f"the chart could not be drawn ({type(exc).__name__}: {str(exc)[:200]})")


MAX_STATS_SYMBOLS = 40


def _stats_png(symbols, rates, behind) -> bytes:
    rate = np.array([np.nan if r is None else float(r) for r in rates])
    lag = np.array([0 if b is None else int(b) for b in behind])
    order = np.lexsort((np.array(symbols), -lag, np.nan_to_num(rate, nan=-1.0)))[:MAX_STATS_SYMBOLS]
    names = [symbols[i] for i in order]
    figure = _figure()
    left = figure.add_axes((0.1, 0.12, 0.4, 0.76))
    right = figure.add_axes((0.58, 0.12, 0.4, 0.76), sharey=left)
    for axis in (left, right):
        _style(axis, 7)
        axis.yaxis.set_major_locator(__import__("matplotlib.ticker", fromlist=["FixedLocator"]).FixedLocator(range(len(names))))
    y = np.arange(len(names))
    shown = rate[order]
    left.barh(y, np.nan_to_num(shown, nan=0.0), color=[_RED if v < 0.99 else _BLUE for v in np.nan_to_num(shown, nan=0.0)], height=0.7)
    left.set_xlim(min(0.9, float(np.nanmin(shown)) - 0.01) if np.isfinite(shown).any() else 0.9, 1.0)
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_title("validation rate", fontsize=8, loc="left")
    right.barh(y, lag[order], color=[_RED if v > 0 else _GREEN for v in lag[order]], height=0.7)
    right.set_title("sessions behind (freshness)", fontsize=8, loc="left")
    right.tick_params(labelleft=False)
    right.set_xlim(0, max(1, int(lag.max())) * 1.1)
    more = f"; the {len(names)} worst of {len(symbols)}" if len(symbols) > len(names) else ""
    figure.text(0.1, 0.955, f"{len(symbols)} symbol(s), worst first{more}", fontsize=9, weight="bold", va="center")
    return _png(figure)
