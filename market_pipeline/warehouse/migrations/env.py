"""Alembic environment for the warehouse. Run through market_pipeline.warehouse.migrate, which
passes an open connection in `config.attributes["connection"]`; `alembic` on the command line also
works with `-x url=...` (see README)."""

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
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()
