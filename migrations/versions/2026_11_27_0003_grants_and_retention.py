"""The service's grant set (Postgres), and the record of retention runs.

Two group roles, created if missing (roles belong to the Postgres cluster, grants to this
database):

- ``pdscaler_service``: what the running service needs, and no more. It reads and adds
  policies and their versions (a deletion is a version and a mark, not a DELETE), adds
  decisions and records their outcomes, and keeps the forecast models table. It cannot
  DELETE or TRUNCATE a decision: the audit log only grows.
- ``pdscaler_retention``: the service's rights plus DELETE on decisions, for
  ``pdscaler db retention``, which records each run in ``retention_runs``.

Grant the one the login needs: ``GRANT pdscaler_service TO <service login>``. Schema
changes (this migration included) run as the database's owner.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pdscaler.store.models import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SERVICE, RETENTION = "pdscaler_service", "pdscaler_retention"
GRANTS = {
    "policies": "SELECT, INSERT, UPDATE",
    "policy_versions": "SELECT, INSERT",
    "decisions": "SELECT, INSERT, UPDATE",
    "forecast_models": "SELECT, INSERT, UPDATE",
    "retention_runs": "SELECT",
    "alembic_version": "SELECT",
}


def upgrade() -> None:
    op.create_table(
        "retention_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ran_at", UtcDateTime(), nullable=False),
        sa.Column("cutoff", UtcDateTime(), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_runs")),
    )
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has no roles: the embedded default is one process's own file
    for role in (SERVICE, RETENTION):
        op.execute(f"DO $$ BEGIN CREATE ROLE {role} NOLOGIN; "
                   "EXCEPTION WHEN duplicate_object THEN NULL; END $$")  # fmt: skip
    op.execute(f"GRANT {SERVICE} TO {RETENTION}")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {SERVICE}")
    for table, privileges in GRANTS.items():
        op.execute(f"GRANT {privileges} ON {table} TO {SERVICE}")
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {SERVICE}")
    op.execute(f"GRANT DELETE ON decisions TO {RETENTION}")
    op.execute(f"GRANT INSERT ON retention_runs TO {RETENTION}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for role in (SERVICE, RETENTION):
            op.execute(f"DO $$ BEGIN EXECUTE 'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "
                       f"{role}'; EXCEPTION WHEN undefined_object THEN NULL; END $$")  # fmt: skip
    op.drop_table("retention_runs")
