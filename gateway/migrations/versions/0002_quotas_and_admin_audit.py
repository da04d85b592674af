"""Project quotas set by the platform admin, and the audit log of admin API calls.

Revision ID: 0002
Revises: 0001
Created: 2026-11-29 (the hostile-tenant work; `create_all` added both tables)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gw_quotas",
        # the project's id, not a sequence of its own
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("gw_projects.id"), primary_key=True,
                  autoincrement=False),
        sa.Column("rpm", sa.Integer(), nullable=False),
        sa.Column("tpm", sa.Integer(), nullable=False),
        sa.Column("max_keys", sa.Integer(), nullable=False),
        sa.Column("max_in_flight", sa.Integer(), nullable=False),
    )
    op.create_table(
        "gw_admin_audit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("project", sa.String(64), nullable=True),
        sa.Column("target", sa.String(160), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("gw_admin_audit")
    op.drop_table("gw_quotas")
