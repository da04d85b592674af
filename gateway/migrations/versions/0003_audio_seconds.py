"""Audio seconds of the speech route: per audit row, and a project's daily ceiling.

Revision ID: 0003
Revises: 0002
Created: 2026-12-05 (the speech route; these were the gateway's hand-written column additions)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # server defaults fill the rows already there
    with op.batch_alter_table("gw_audit") as table:
        table.add_column(sa.Column("audio_seconds", sa.Float(), nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("gw_quotas") as table:
        table.add_column(sa.Column("audio_seconds_per_day", sa.Integer(), nullable=False,
                                   server_default="36000"))


def downgrade() -> None:
    with op.batch_alter_table("gw_quotas") as table:
        table.drop_column("audio_seconds_per_day")
    with op.batch_alter_table("gw_audit") as table:
        table.drop_column("audio_seconds")
