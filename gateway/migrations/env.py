"""Alembic's entry point for the gateway's database: the connection comes from gateway/migrate.py
(online), or only the URL's dialect when rendering SQL (`--sql`, offline)."""

from __future__ import annotations

from alembic import context

from gateway.db import Base
from gateway.migrate import VERSION_TABLE, include_name

# batch operations: SQLite alters most things only by copying the table; PostgreSQL runs the
# plain ALTERs
options = {"target_metadata": Base.metadata, "version_table": VERSION_TABLE,
           "include_name": include_name, "compare_type": True, "render_as_batch": True}

if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      **options)
else:
    context.configure(connection=context.config.attributes["connection"], **options)
with context.begin_transaction():
    context.run_migrations()
