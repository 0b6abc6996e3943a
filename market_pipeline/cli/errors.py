"""Exit codes and the command line's own input error, shared by the parser and the handlers."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_CHECK_FAILED = 3  # `run --fail-on-check`: a check of that severity failed
EXIT_INTERRUPTED = 130  # stopped by SIGINT or SIGTERM


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit code 2."""
