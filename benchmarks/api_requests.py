"""Scenario 4: API requests per symbol for a full history, and per daily refresh of N symbols
missing 1 and 3 sessions, read from the sandbox's own counters."""

from __future__ import annotations

import json

import sqlalchemy as sa

from benchmarks.common import CLI, clean_env, pipeline_env, python_module, register, run_measured, universe
from benchmarks.context import Bench
from benchmarks.report import Section

STOCK_CLASSES = ("stock", "etf")


def _drop_last_sessions(db_url: str, sessions: int) -> dict[str, str]:
    """Delete every symbol's bars of the last `sessions` sessions stored, per calendar (stocks/ETFs, crypto).

    Returns the first deleted date per calendar: the warehouse now misses exactly those sessions.
    """
    from market_pipeline.warehouse.engine import dispose_engine, get_engine

    engine = get_engine(db_url)
    cut = {}
    with engine.begin() as conn:
        for label, classes in (("stocks", STOCK_CLASSES), ("crypto", ("crypto",))):
            params = {f"c{i}": c for i, c in enumerate(classes)}
            members = f"SELECT symbol FROM tracked_symbols WHERE asset_class IN ({', '.join(':' + k for k in params)})"
            dates = conn.execute(
                sa.text(f"SELECT DISTINCT date FROM ohlcv_daily WHERE symbol IN ({members}) ORDER BY date DESC LIMIT :k"),
                {**params, "k": sessions},
            ).scalars().all()
            if len(dates) < sessions:
                continue
            first = dates[-1]
            conn.execute(sa.text(f"DELETE FROM ohlcv_daily WHERE date >= :d AND symbol IN ({members})"), {**params, "d": first})
            cut[label] = str(first)[:10]
    dispose_engine(db_url)
    return cut


def _refresh_paths() -> list[tuple[str, list[str], bool]]:
    """How a daily refresh runs headless: (label, command, needs partitions created first).

    The main job (`market-pipeline run`, one in-process run per contiguous span of partitions), and when the code location has
    schedules, each schedule ticked now with the run it requests executed in-process (one run per class).
    """
    paths = [("`market-pipeline run`", [CLI, "run"], False)]
    try:
        from market_pipeline.definitions import defs

        names = [s.name for s in (defs.schedules or [])]
    except Exception:
        names = []
    if names:
        paths.append((f"schedule runs ({', '.join(names)})", python_module("benchmarks.dagster_worker", "schedule-runs"), True))
    return paths


def requests_scenario(bench: Bench) -> Section:
    from market_pipeline.refresh.ingest import DEFAULT_REFETCH_SESSIONS

    n, years = bench.args.requests_symbols, bench.years
    share = bench.args.requests_crypto_share
    symbols = universe(n, share)
    n_crypto = sum(1 for _, a in symbols if a == "crypto")
    section = Section(
        "requests",
        "4. Requests to the API",
        f"Counted by the sandbox itself. Full history: the main-job runs of scenario 2 ({len(bench.symbols)} stock "
        f"symbols x {years} years from a fresh warehouse). Daily refresh: {n} symbols ({n - n_crypto} stocks, {n_crypto} "
        f"crypto pairs) backfilled {years} years, then the warehouse's last 1 (then 3) sessions of every "
        "symbol deleted per calendar, then one refresh run; the re-fetch window is "
        f"{DEFAULT_REFETCH_SESSIONS} sessions.",
        ["Case", "Path", "Stock requests", "Crypto requests", "Per symbol", "Target per asset class", "Wall seconds"],
        align="llrrrrr",
    )
    main = bench.keep.get("main_sqlite")
    if main:
        per_symbol = main["range_requests"].median / len(bench.symbols)
        section.row("Full history", "main job (range endpoint)", f"{main['range_requests'].median:.0f}", "0",
                    f"{per_symbol:.2f}", "1 per symbol", main["seconds"].fmt(1))
        section.data["full_history_per_symbol"] = per_symbol
        bench.keep["full_history_per_symbol"] = per_symbol

    bench.sandbox.add(symbols)
    bench.sandbox.warm(symbols)
    refresh = {}
    for label, argv, needs_partitions in _refresh_paths():
        home = bench.temp_home("requests")
        url = bench.warehouse_url(home)
        try:
            register(url, symbols, bench.start)
            symbols_file = home / "symbols.json"
            symbols_file.write_text(json.dumps(symbols))
            bench.log(f"requests: backfill {n} symbols (no-Dagster loop) for the refresh case")
            bench.sandbox.reset_counts()
            run_measured(python_module(
                "benchmarks.floor", "--base-url", bench.sandbox.url, "--db-url", url, "--symbols-file",
                str(symbols_file), "--start", bench.start.isoformat(), "--mode", "library",
            ), clean_env()).check()
            backfill = bench.sandbox.counts_by_class()
            if needs_partitions:
                run_measured(python_module("benchmarks.dagster_worker", "partitions"), clean_env(MARKET_PIPELINE_HOME=str(home))).check()
            if not main and not refresh:
                section.row("Full history", "ingest.refresh_symbol loop", backfill["stock"], backfill["crypto"],
                            f"{(backfill['stock'] + backfill['crypto']) / n:.2f}", "1 per symbol", "")
                bench.keep["full_history_per_symbol"] = (backfill["stock"] + backfill["crypto"]) / n
            for missing in (1, 3):
                cut = _drop_last_sessions(url, missing)
                bench.sandbox.reset_counts()
                bench.log(f"requests: refresh with {missing} missing session(s) via {label}")
                measured = run_measured(argv, pipeline_env(home, bench.sandbox.url)).check()
                counts = bench.sandbox.counts_by_class()
                stock = counts["stock"] + counts["grouped_stocks"]
                crypto = counts["crypto"] + counts["grouped_crypto"]
                limit = missing + DEFAULT_REFETCH_SESSIONS
                section.row(
                    f"Daily refresh, {missing} session(s) missed (from {cut.get('stocks', '?')} / {cut.get('crypto', '?')})",
                    label, stock, crypto, f"{(stock + crypto) / n:.2f}", f"<= {limit}", f"{measured.seconds:.1f}",
                )
                refresh[(label, missing)] = {"stock": stock, "crypto": crypto, "limit": limit, "counts": counts, "seconds": measured.seconds}
        finally:
            bench.discard(home)
    section.data["refresh"] = {f"{k[0]} / {k[1]}": v for k, v in refresh.items()}
    bench.keep["refresh"] = refresh
    if len(_refresh_paths()) == 1:
        section.notes.append("The code location has no refresh schedule: a daily refresh is the main job.")
    section.notes.append(
        "Both paths plan each run's fetches with `market_pipeline.refresh.planning` (grouped-daily requests when fewer "
        "than one range request per symbol). `market-pipeline run` runs all active symbols as one run; "
        "a schedule tick requests one run per asset class."
    )
    return section
