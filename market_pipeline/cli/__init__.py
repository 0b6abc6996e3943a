"""The `market-pipeline` command line."""
