"""One dynamic partition per tracked symbol."""

from dagster import DynamicPartitionsDefinition

SYMBOLS_PARTITION = "symbols"
symbols_partitions = DynamicPartitionsDefinition(name=SYMBOLS_PARTITION)

# A UI backfill of 500 symbols launches 5 runs, of 1,000 symbols 10 runs.
MAX_PARTITIONS_PER_RUN = 100
