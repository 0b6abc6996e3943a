"""The project's dagster.yaml `event_log_storage` block, for instances built elsewhere (tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path

import yaml

from market_pipeline import settings


def project_event_log_storage(home: Path | str) -> dict:
    """Instance overrides: the event log storage the project's dagster.yaml configures, keeping its
    files under `home`/history/runs (as Dagster's default storage would). {} if dagster.yaml sets none."""
    config = yaml.safe_load((settings.project_dir() / "dagster.yaml").read_text()) or {}
    storage = config.get("event_log_storage")
    if not storage:
        return {}
    base_dir = str(Path(home) / "history" / "runs")
    return {"event_log_storage": {**storage, "config": {**(storage.get("config") or {}), "base_dir": base_dir}}}
