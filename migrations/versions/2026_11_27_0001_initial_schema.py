"""Initial schema: policies, policy versions, decisions.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from pdscaler.store.models import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("document", Json, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("deleted_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policies")),
        sa.UniqueConstraint("namespace", "name", name="uq_policies_namespace_name"),
    )
    op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("document", Json, nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_versions")),
        sa.ForeignKeyConstraint(
            ["policy_id"], ["policies.id"], name=op.f("fk_policy_versions_policy_id_policies")
        ),
        sa.UniqueConstraint("policy_id", "version", name="uq_policy_versions_policy_id_version"),
    )
    op.create_table(
        "decisions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("tick_id", sa.String(36), nullable=False),
        sa.Column("decided_at", UtcDateTime(), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("policy_namespace", sa.String(63), nullable=False),
        sa.Column("policy_name", sa.String(63), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("target_api_version", sa.String(253), nullable=False),
        sa.Column("target_kind", sa.String(63), nullable=False),
        sa.Column("target_name", sa.String(253), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("current_replicas", sa.Integer(), nullable=True),
        sa.Column("ready_replicas", sa.Integer(), nullable=True),
        sa.Column("pending_replicas", sa.Integer(), nullable=True),
        sa.Column("raw_recommendation", sa.Integer(), nullable=True),
        sa.Column("desired_replicas", sa.Integer(), nullable=True),
        sa.Column("steps", Json, nullable=False),
        sa.Column("signals", Json, nullable=False),
        sa.Column("forecast", Json, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("resource_version_read", sa.String(64), nullable=True),
        sa.Column("resource_version_written", sa.String(64), nullable=True),
        sa.Column("leader_identity", sa.String(253), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
        sa.ForeignKeyConstraint(
            ["policy_id"], ["policies.id"], name=op.f("fk_decisions_policy_id_policies")
        ),
    )
    op.create_index(
        "ix_decisions_policy_time",
        "decisions",
        ["policy_name", "decided_at", "id"],
    )
    op.create_index("ix_decisions_time", "decisions", ["decided_at", "id"])
    op.create_index("ix_decisions_status_time", "decisions", ["status", "decided_at"])
    op.create_index("ix_decisions_tick", "decisions", ["tick_id"])


def downgrade() -> None:
    op.drop_table("decisions")
    op.drop_table("policy_versions")
    op.drop_table("policies")
