"""One dynamic partition per tracked symbol."""

from dagster import DynamicPartitionsDefinition

SYMBOLS_PARTITION = "symbols"
symbols_partitions = DynamicPartitionsDefinition(name=SYMBOLS_PARTITION)

# A UI backfill (and the sensor's backfill of new symbols) puts up to this many contiguous partitions in
# one run: 1,000 symbols are 1 run, 10,000 are 10. Each run costs seconds of fixed work (a new process
# loading Dagster and the code location, its corporate-actions read, and with the polygon_api pool at 1
# a step waiting for the previous run's slot under Dagster's claim back-off of up to 15 s) and, with
# one op fetching at a time, buys no parallelism: runs of 100 made a 1,000-symbol backfill pay it 10
# times (see README, "How a backfill spans runs").
MAX_PARTITIONS_PER_RUN = 1000
