"""Alembic environment for the warehouse. Run through market_pipeline.warehouse.engine.upgrade,
which passes a connection inside one transaction in `config.attributes["connection"]`; `alembic` on
the command line also works with `-x url=...`, in one transaction as well (see README)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from market_pipeline.warehouse.schema import metadata

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # one migrator at a time across processes and machines
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(8675309)"))
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    from market_pipeline.warehouse.engine import migration_transaction, repair_half_made

    engine = sa.create_engine(url)
    with migration_transaction(engine) as conn:  # one transaction, DDL included, on SQLite too
        repair_half_made(conn)
        _run(conn)
    engine.dispose()
