"""How a run launched from the UI, a sensor or a schedule executes its steps: in the run's own process
(Dagster's `in_process_executor`), not one process per step (the multiprocess default).

The runs of this code location have one step per batch of symbols (ohlcv_daily with its checks), or a
few steps that take the `polygon_api` pool one at a time anyway, so a step process bought no
parallelism: only its start-up (a Python interpreter importing Dagster and loading the definitions,
about 2 s before each run's first step) and its memory. Termination from the UI, run retries and
the pools behave as before: the run worker turns a termination into an interrupt inside the step,
which `defs/bars/interrupts.py` handles.
"""

import dagster as dg


@dg.definitions
def executor() -> dg.Definitions:
    return dg.Definitions(executor=dg.in_process_executor)
