"""The hand-written part of BENCHMARKS.md: what the profiles showed and what remains.

Written from py-spy profiles and what-if runs on 2026-11-22 (commit 2a6da2c plus the working tree of
that day), updated on 2026-11-30 after the fixes listed below; the tables above it are regenerated on
every run, this text is not. Profile again after changing the pipeline (see "Profiling") and update it.
"""

PROFILE_NOTES = """\
## Profile findings and what remains

Profiled with `py-spy record -r 200 -f raw -- market-pipeline run` (50 to 300 symbols x 20 years) and
`py-spy` on the floor; the effect of each proposed fix was measured by a what-if run at 1,000 x 20
with the fix applied as a patch outside the tree (2026-11-22; the baseline was 20% of the floor then;
the shares below are of the main job's wall time).

**Main job (26-35% of the floor).** The floor spends 50-80 ms per 5,000-bar symbol (HTTP 4-5, JSON
13-18, parse 7-14, upsert 28-43, depending on the day's disk). The main job spends about 200 ms:

| Where the main job's time goes | Share | Fix | What-if at 1,000 x 20 | Status |
|---|---:|---|---:|---|
| (baseline 2026-11-22) | | | 20% of the floor | |
| Dagster's SQLite event log: every event opens a new SQLAlchemy engine and connection (`NullPool`) and closing it checkpoints the WAL: 10-50 ms per event, 5 events per symbol (materialization planned, the per-symbol log line, the materialization, two check evaluations) | 30-45% | keep one pooled engine per shard (a `SqliteEventLogStorage` subclass overriding `_connect`, wired in `dagster.yaml`); Dagster on PostgreSQL is no faster on one machine (README, Running at scale: 18.4 s against 13.9 s for 100 symbols x 5 years) | 37% | open: Dagster's storage (a pooled connection would also hold back the UI's live log: Dagster's SQLite watcher wakes on writes to the run's `.db` file, which WAL mode only touches when a connection closes or checkpoints); the per-symbol log line is gone from runs of more than 25 symbols (progress lines every 100 instead), 4 events per symbol |
| The checks re-read the bars the op has just written (15-25 ms per symbol) | 8-12% | compute both checks from the frame just upserted when it is the symbol's whole stored history | 42% | done (`SymbolResult.stored_bars`) |
| `symbol_stats` at the end re-reads and re-checks every symbol (about 30 ms per symbol) | 15-23% | have `ohlcv_daily` write each refreshed symbol's `symbol_stats` row from the stats it computed for the checks, and `symbol_stats` recompute only the rows of symbols not refreshed since | 53% | open: it would make two assets write one table |

With the two fixes that are ours the main job measured 26% at 100 x 20 and 35% at 1,000 x 20 (it was
22% and 32%); side by side on the same machine the two versions' 100 x 20 runs both spread over
24-35 s, so the difference is inside this machine's run-to-run noise, which comes from the disk syncs
of Dagster's SQLite event log. What remains: that event log (commits sync the disk; about 17% even
pooled, `PRAGMA synchronous=NORMAL` on pooled connections cuts it by a third), Dagster building the
events (about 12%), start-up and imports (about 5 s), the registry status updates and the summary
query per symbol (about 5%), `symbol_stats` at the end. The 70% target looks out of reach with
Dagster's SQLite storage; on the what-if evidence, 55-60% is.

Fixed on 2026-11-22: `bars.parse_aggregate_results` builds the frame column by column from the JSON
dicts (16.6 -> 4.6 ms per 5,000 bars), which speeds the floor and the job alike.

**UI path (10% at 100 x 20, 27% at 1,000 x 20, measured before the fixes below).** The runs execute
the same op, so everything above applies; on top, a fixed latency of about 45 s: the backfill daemon's
iteration (every 30 s) created the first run, the queue and the run worker start-up took about 8 s
more, and the next iteration marked the backfill complete. The runs of a backfill queue behind each
other on the `polygon_api` pool (one op at a time), as the pacing design wants. Fixed since (issue 12):
the daemon is `market-pipeline daemon`, whose backfill loop iterates every 2 s
(MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS; Dagster has no setting for it), the run queue dequeues
every second (`dagster.yaml`), and a backfill puts up to 1,000 partitions in a run (was 100), so a
1,000-symbol backfill pays the run worker's start-up and the pool hand-over once instead of 10 times.
At 200 x 2: launch to the first run created 28.9 -> 0.6-1.6 s, last run end to complete 7.0 -> 1.4-2.1 s.
What stays is the run worker's start-up (a new process loading Dagster and the code location, 3-7 s
here) and the runs' own per-symbol cost.

**Sensor tick at 10,000 new symbols: fixed (211 s -> 4.6 s in the daemon).** The daemon used to
(1) apply the sensor's `AddDynamicPartitionsRequest` one key at a time (`has_dynamic_partition` per
key: about 28 s for 10,000 keys) and (2) submit 100 run requests, about 2 s each. Now the sensor adds
the partitions itself with one `add_dynamic_partitions` call (0.1 s for 10,000 keys) and lets at most
two of its backfill runs wait in the queue, keeping the other new symbols in its cursor for later
ticks; each tick costs well under 10 s whatever the number of new symbols.

**Daily refresh through `market-pipeline run`: fixed.** It used to run symbols in runs of 100
partitions, each planning its own grouped-daily requests (3 times the target at 250 symbols). It now
runs each contiguous span of partitions (all active symbols: one span) as one in-process run, so the
refresh costs (missed sessions + re-fetch window) requests per market, like the schedules. Peak
memory grows by about 14 MB per 1,000 symbols in one run (the in-process result keeps the run's
events): about 320 MB at 10,000 symbols.

**Met.** One request per symbol for a full history (Polygon's 50,000-bar page holds about 200 years);
daily refreshes within (missed sessions + re-fetch window) requests per asset class on both paths;
the sensor's tick under 10 s at 10,000 new symbols; peak RSS 174-189 MB from 20 to 1,000 symbols.

### Profiling

```
.venv/bin/pip install py-spy        # into the venv only; not a project dependency
MARKET_PIPELINE_HOME=/tmp/h POLYGON_API_KEY=sandbox-key POLYGON_BASE_URL=http://127.0.0.1:PORT \\
  POLYGON_REQUESTS_PER_MINUTE=0 .venv/bin/py-spy record -r 200 -f speedscope -o main.json -- .venv/bin/market-pipeline run
```
(with a sandbox on PORT: `.venv/bin/market-pipeline sandbox --port PORT`, and the symbols added with a start date).
"""
