"""Stored completions and feedback (the loop): a project's capture policy, its bounds, the kept
chats and what people said about them.

Revision ID: 0004
Revises: 0003
Created: 2026-12-07 (issue #43)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gw_projects") as table:
        table.add_column(sa.Column("capture", sa.String(8), nullable=False,
                                   server_default="off"))
        table.add_column(sa.Column("capture_scrub_pii", sa.Boolean(), nullable=False,
                                   server_default="0"))
        table.add_column(sa.Column("capture_evicted", sa.Integer(), nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("gw_quotas") as table:
        table.add_column(sa.Column("capture_rows", sa.Integer(), nullable=False,
                                   server_default="100000"))
        table.add_column(sa.Column("capture_bytes", sa.Integer(), nullable=False,
                                   server_default="200000000"))
        table.add_column(sa.Column("capture_days", sa.Integer(), nullable=False,
                                   server_default="30"))
    op.create_table(
        "gw_completions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("completion_id", sa.String(96), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("served", sa.String(256), nullable=True),
        sa.Column("replica", sa.String(256), nullable=True),
        sa.Column("messages", sa.Text(), nullable=False),
        sa.Column("choices", sa.Text(), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("session", sa.String(512), nullable=True),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_gw_completions_project_cid", "gw_completions",
                    ["project_id", "completion_id"])
    op.create_index("ix_gw_completions_project_session", "gw_completions",
                    ["project_id", "session"])
    op.create_index("ix_gw_completions_project_id", "gw_completions", ["project_id"])
    op.create_index("ix_gw_completions_ts", "gw_completions", ["ts"])
    op.create_table(
        "gw_feedback",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("completion_row", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("rating", sa.String(8), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("better_than", sa.Integer(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_gw_feedback_completion_row", "gw_feedback", ["completion_row"])
    op.create_index("ix_gw_feedback_project_id", "gw_feedback", ["project_id"])
    op.create_index("ix_gw_feedback_ts", "gw_feedback", ["ts"])
    op.create_index("ix_gw_feedback_better_than", "gw_feedback", ["better_than"])


def downgrade() -> None:
    op.drop_table("gw_feedback")
    op.drop_table("gw_completions")
    with op.batch_alter_table("gw_quotas") as table:
        for column in ("capture_days", "capture_bytes", "capture_rows"):
            table.drop_column(column)
    with op.batch_alter_table("gw_projects") as table:
        for column in ("capture_evicted", "capture_scrub_pii", "capture"):
            table.drop_column(column)
