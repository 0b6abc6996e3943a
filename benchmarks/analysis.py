"""The hand-written part of BENCHMARKS.md: what the profiles showed and what remains.

Written from py-spy profiles and what-if runs on 2026-11-22 (commit 2a6da2c plus the working tree of
that day); the tables above it are regenerated on every run, this text is not. Profile again after
changing the pipeline (see "Profiling" below) and update it.
"""

PROFILE_NOTES = """\
## Profile findings and what remains

Profiled with `py-spy record -r 200 -f raw -- market-pipeline run` (50 to 300 symbols x 20 years) and
`py-spy` on the floor; the effect of each proposed fix was measured by a what-if run at 1,000 x 20
with the fix applied as a patch outside the tree, one after the other, on the code of that morning
(the baseline was 20% of the floor then; the shares below are of the main job's wall time).

**Main job (24-30% of the floor).** The floor spends 50-60 ms per 5,000-bar symbol (HTTP 4, JSON
13-15, parse 7-9, upsert 28-33). The main job spends about 200 ms:

| Where the main job's time goes | Share | Fix | What-if at 1,000 x 20 |
|---|---:|---|---:|
| (baseline that morning) | | | 20% of the floor |
| Dagster's SQLite event log: every event opens a new SQLAlchemy engine and connection (`NullPool`) and closing it checkpoints the WAL: 10-50 ms per event, 5 events per symbol (materialization planned, the per-symbol log line, the materialization, two check evaluations) | 30-45% | keep one pooled engine per shard (a `SqliteEventLogStorage` subclass overriding `_connect`, wired in `dagster.yaml`), or run Dagster on PostgreSQL (`dagster.postgres.yaml`) | 37% |
| The checks re-read the bars the op has just written (15-25 ms per symbol) | 8-12% | compute both checks from the frame just upserted when it is the symbol's whole stored history (`rows_inserted == rows_stored`); `refresh_symbol` would return the frame | 42% |
| `symbol_stats` at the end re-reads and re-checks every symbol (about 30 ms per symbol) | 15-23% | have `ohlcv_daily` write each refreshed symbol's `symbol_stats` row from the stats it computed for the checks, and `symbol_stats` recompute only the rows of symbols not refreshed since | 53% |

What remains after the three: committing events still syncs the disk (about 17%; `PRAGMA synchronous=NORMAL`
on the pooled event-log connections cuts it by about a third), Dagster building the events (about 12%), start-up and
imports (about 5 s), the registry status updates and the summary query per symbol (about 5%). The 70%
target looks out of reach with Dagster's SQLite storage; on the what-if evidence, 55-60% is.

Fixed here (files of this change): `bars.parse_aggregate_results` builds the frame column by column
from the JSON dicts (16.6 -> 4.6 ms per 5,000 bars; any malformed payload takes the previous path
with the same result), which speeds the floor and the job alike.

**UI path.** The runs execute the same op, so everything above applies; on top, a fixed latency of
about 45 s: the backfill daemon's iteration (every 30 s) creates the first run, the queue and the run
worker start-up take about 7 s more, and the next iteration marks the backfill complete. The runs of
a backfill queue behind each other on the `polygon_api` pool (one op at a time).

**Sensor tick at 10,000 new symbols.** The sensor's own evaluation takes 0.15 s. The daemon then
(1) applies the returned `AddDynamicPartitionsRequest` one key at a time (`has_dynamic_partition` per
key: about 28 s for 10,000 keys), and (2) submits the 100 run requests of the backfill batches, about
2 s each (about 210 s). Proposed fix in `sensors.py`: add the new partitions in the sensor body with one
`context.instance.add_dynamic_partitions(name, to_add)` (0.08 s for 10,000 keys, measured), and request
one backfill instead of 100 runs (`RunRequest.for_asset_graph_subset`, which Dagster 1.13 marks
internal), or cap the run requests per tick (say 5) and request the rest on later ticks from the
registry's `pending` status. The steady tick (nothing to do) is 0.15-0.45 s.

**Daily refresh through `market-pipeline run`.** Each run of up to 100 partitions plans its own
grouped-daily requests, so a refresh of N symbols costs (missed sessions + re-fetch window) requests
per asset class *per run*: 3 times the target at 250 symbols, 100 times at 10,000. The schedules meet
the target (one run per asset class over the whole partition range, with `asset_classes` in the op
config). Proposed fix in `runner.py`: refresh the symbols whose history is complete the way the
schedules do (one run per asset class), and keep runs of 100 partitions for symbols that need their
whole history.

**Met.** One request per symbol for a full history (Polygon's 50,000-bar page holds about 200 years);
daily refreshes by the schedules within (missed sessions + re-fetch window) requests per asset class;
peak RSS flat at about 175 MB from 20 to 1,000 symbols.

### Profiling

```
.venv/bin/pip install py-spy        # into the venv only; not a project dependency
MARKET_PIPELINE_HOME=/tmp/h POLYGON_API_KEY=sandbox-key POLYGON_BASE_URL=http://127.0.0.1:PORT \\
  POLYGON_REQUESTS_PER_MINUTE=0 .venv/bin/py-spy record -r 200 -f speedscope -o main.json -- .venv/bin/market-pipeline run
```
(with a sandbox on PORT: `.venv/bin/market-pipeline sandbox --port PORT`, and the symbols added with a start date).
"""
